/** What a failed dial or a broken socket means, said so that a person can act on it. */
import { FerryError } from './errors.js';

/** Turns a dial or socket failure into one sentence a person can act on. */
export function describeNetworkError(err: unknown): FerryError {
  if (err instanceof FerryError) return err;
  const code = (err as NodeJS.ErrnoException)?.code;
  const message = (err as Error)?.message ?? String(err);
  switch (code) {
    case 'ECONNREFUSED':
      return new FerryError('E_CONNECTION_LOST', `Nothing is listening at ${addressOf(message)}; start the server with \`ferry serve\` or check --host and --port.`, { cause: err });
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new FerryError('E_CONNECTION_LOST', `The host name could not be resolved (${message}); check --host.`, { cause: err });
    case 'ETIMEDOUT':
      return new FerryError('E_TIMEOUT', `The server did not answer in time (${message}); check that it is running and reachable.`, { cause: err });
    case 'ECONNRESET':
    case 'EPIPE':
      return new FerryError('E_CONNECTION_LOST', 'The server closed the connection unexpectedly.', { cause: err });
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'CERT_HAS_EXPIRED':
      return new FerryError('E_TLS', `The server's certificate is not trusted (${code}); pass --tls-ca with the certificate of the authority that signed it.`, { cause: err });
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return new FerryError('E_TLS', `The server's certificate is not made out for this host name (${message}); connect with --host set to a name the certificate lists.`, { cause: err });
    case 'EPROTO':
    case 'ERR_SSL_WRONG_VERSION_NUMBER':
      return new FerryError('E_TLS', 'The server does not speak TLS; leave out --tls and --tls-ca.', { cause: err });
    default:
      return new FerryError('E_CONNECTION_LOST', `The connection failed (${message}).`, { cause: err });
  }
}

function addressOf(message: string): string {
  const match = /(\S+:\d+)\s*$/.exec(message);
  return match ? match[1]! : 'that address';
}
