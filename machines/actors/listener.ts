import net from 'node:net';
import tls from 'node:tls';
import { fromCallback } from 'xstate';
import { NetTransport } from '../../transport/net-transport.js';
import type { Transport } from '../../transport/transport.js';

/** Who may connect: the server shuts out addresses that keep failing to authenticate. */
export interface Admission {
  admit(address: string): boolean;
}

export interface ListenerInput {
  host: string;
  port: number;
  /** Connections beyond this many are closed at once; the ones already open keep working. */
  maxConnections?: number;
  /** A TLS handshake not finished by then is abandoned. */
  handshakeMs?: number;
}

/** The listener's handles: TLS credentials and who is shut out. */
export interface ListenerServices {
  /** Serve TLS with this certificate chain and key (PEM). */
  tls?: { cert: Buffer; key: Buffer };
  admission?: Admission;
}

export type ListenerEvent =
  | { type: 'listening'; host: string; port: number }
  | { type: 'listen-failed'; error: Error }
  | { type: 'connection'; transport: Transport }
  | { type: 'turned-away'; remote: string; reason: 'too-many' | 'shut-out' | 'tls-failed'; detail?: string };

export type ListenerCommand = { type: 'stop-accepting' };

/**
 * Owns the listening socket (plain TCP or TLS): reports each accepted connection as a Transport,
 * and closes at once the ones beyond the connection limit or from an address that is shut out.
 */
export function listenerFor(services: ListenerServices) {
  return fromCallback<ListenerCommand, ListenerInput, ListenerEvent>(({ input, sendBack, receive }) => {
    const server: net.Server = services.tls
      ? tls.createServer({ cert: services.tls.cert, key: services.tls.key, allowHalfOpen: true, handshakeTimeout: input.handshakeMs ?? 10_000 })
      : net.createServer({ noDelay: true, allowHalfOpen: true });
    let open = true;
    let connections = 0;

    // Every TCP connection counts from the moment it is accepted, TLS handshake or not, so sockets
    // stuck in a handshake cannot crowd out the limit.
    const admit = (socket: net.Socket): boolean => {
      const remote = `${socket.remoteAddress}:${socket.remotePort}`;
      if (input.maxConnections !== undefined && connections >= input.maxConnections) {
        socket.destroy();
        sendBack({ type: 'turned-away', remote, reason: 'too-many' });
        return false;
      }
      if (services.admission && !services.admission.admit(socket.remoteAddress ?? '')) {
        socket.destroy();
        sendBack({ type: 'turned-away', remote, reason: 'shut-out' });
        return false;
      }
      connections++;
      socket.once('close', () => connections--);
      return true;
    };
    const start = (socket: net.Socket) => sendBack({ type: 'connection', transport: new NetTransport(socket) });

    if (services.tls) {
      server.on('connection', admit);
      server.on('secureConnection', start);
      // A client that fails the TLS handshake (a plain client, an untrusted certificate) never gets a session.
      server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
        socket.destroy();
        sendBack({ type: 'turned-away', remote: `${socket.remoteAddress}:${socket.remotePort}`, reason: 'tls-failed', detail: err.code ?? err.message });
      });
    } else {
      server.on('connection', (socket: net.Socket) => {
        if (admit(socket)) start(socket);
      });
    }
    server.on('error', (error) => {
      sendBack({ type: 'listen-failed', error });
    });
    server.listen({ host: input.host, port: input.port }, () => {
      const address = server.address() as net.AddressInfo;
      sendBack({ type: 'listening', host: address.address, port: address.port });
    });

    const stop = () => {
      if (!open) return;
      open = false;
      server.close();
    };
    receive((command) => {
      if (command.type === 'stop-accepting') stop();
    });
    return stop;
  });
}
