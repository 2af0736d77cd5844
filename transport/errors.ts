/**
 * Every failure ferry reports carries a stable code and one sentence a person can act on.
 * The codes travel in ERROR frames and in `--json` output, so never rename one.
 */
export const ErrorCodes = {
  E_BAD_PREAMBLE: 'the peer does not speak a protocol ferry knows',
  E_UNSUPPORTED_VERSION: 'the peer speaks a protocol version this ferry does not support',
  E_UNKNOWN_FRAME: 'the peer sent a frame type ferry does not know',
  E_FRAME_TOO_LARGE: 'a frame is larger than the allowed maximum',
  E_MESSAGE_TOO_LARGE: 'a message is larger than the allowed maximum',
  E_FILE_TOO_LARGE: 'a file is larger than the allowed maximum',
  E_NO_SPACE: 'there is not enough free disk space for the file',
  E_BAD_FRAME: 'a frame is malformed',
  E_BAD_UTF8: 'a message is not valid UTF-8',
  E_UNEXPECTED_FRAME: 'a frame arrived that is not allowed at this point of the conversation',
  E_BAD_NAME: 'a file name cannot be stored safely',
  E_HASH_MISMATCH: 'the received file does not match the sender\u2019s SHA-256',
  E_UPLOAD_SIZE: 'the received file does not have the announced size',
  E_STORE_FAILED: 'the server could not store the file',
  E_CONNECTION_LOST: 'the connection was lost',
  E_TIMEOUT: 'the peer did not answer in time',
  E_GAVE_UP: 'the server could not be reached',
  E_CLOSED: 'the client was closed',
  E_LOCAL_FILE: 'the local file cannot be read',
  E_LEGACY_REFUSED: 'this server does not accept the original wire format',
  E_LEGACY_NAME: 'the original wire format cannot carry this file name',
  E_LEGACY_EMPTY: 'an original server never acknowledges an empty file',
  E_OPEN_DISABLED: 'this server does not open files',
  E_NOT_MEDIA: 'the file is not an image, audio or video',
  E_APP_NOT_FOUND: 'the app that opens this kind of file is not installed',
  E_LAUNCH_FAILED: 'the app could not be started',
  E_RATE_LIMITED: 'too many files were opened in a short time',
  E_NOT_FOUND: 'there is no such file in the upload folder',
  E_AUTH_REQUIRED: 'the server requires a token',
  E_AUTH_FAILED: 'the token was not accepted',
  E_TLS: 'the TLS connection could not be established',
  E_TOO_MANY: 'the server has too many connections',
  E_INSECURE: 'the server would be reachable from the network without a token',
  E_LISTEN: 'the server could not listen on its address',
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

/** An error with a stable code. `message` is a full sentence meant for people. */
export class FerryError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? capitalise(ErrorCodes[code]) + '.', options);
    this.name = 'FerryError';
    this.code = code;
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** Raised by the codecs for any byte sequence they cannot accept; the connection ends, never the process. */
export class ProtocolError extends FerryError {
  constructor(code: ErrorCode, message?: string) {
    super(code, message);
    this.name = 'ProtocolError';
  }
}

export function isFerryError(err: unknown): err is FerryError {
  return err instanceof FerryError;
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
