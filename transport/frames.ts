/**
 * The native protocol's vocabulary: frame types and the tokens the decoders produce.
 * Byte layouts are documented in docs/protocol.md; keep the two in step.
 */

/** First bytes of a native connection: 0xF0 can never begin the original format (a digit, `file` or `exit`). */
export const PREAMBLE_MAGIC = Buffer.from([0xf0, 0x46, 0x45, 0x52, 0x52, 0x59]); // 0xF0 "FERRY"
export const PROTOCOL_VERSION = 1;
/** The version this package announces in its handshake. */
export const AGENT = 'ferry/0.1.0';
export const DEFAULT_PORT = 9098;
export const DEFAULT_HOST = '127.0.0.1';
/** Magic (6) + version (1) + reserved flags (1). */
export const PREAMBLE_LENGTH = 8;
/** Type (1) + payload length (4, big-endian). */
export const FRAME_HEADER_LENGTH = 5;

export const FrameType = {
  HELLO: 0x01,
  WELCOME: 0x02,
  BYE: 0x03,
  ERROR: 0x04,
  PING: 0x05,
  PONG: 0x06,
  CHALLENGE: 0x07,
  AUTH: 0x08,
  MESSAGE: 0x10,
  MESSAGE_ACK: 0x11,
  UPLOAD_OFFER: 0x20,
  UPLOAD_ACCEPT: 0x21,
  DATA: 0x22,
  UPLOAD_END: 0x23,
  UPLOAD_DONE: 0x24,
  OPEN: 0x30,
  OPEN_RESULT: 0x31,
} as const;
export type FrameTypeName = keyof typeof FrameType;

export interface Limits {
  /** Largest control frame payload (JSON frames). */
  maxFrame: number;
  /** Largest message text, in bytes. */
  maxMessage: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxFrame: 64 * 1024,
  maxMessage: 1024 * 1024,
};

export interface HelloInfo {
  version: number;
  agent: string;
  clientId?: string;
}

export interface WelcomeInfo {
  version: number;
  agent: string;
  session: string;
  maxMessage: number;
  maxFrame: number;
}

export interface UploadOffer {
  id: number;
  name: string;
  size: number;
  /** Ask the server to open the file once it is stored. */
  open?: boolean;
  /** Makes the upload resumable: 32 hex digits, the same for every attempt at the same file. */
  key?: string;
  /**
   * The file's SHA-256 (64 lower-case hex digits), when the sender knows it already: a server that
   * holds exactly this file under this name answers UPLOAD_DONE with `skipped` at once.
   */
  sha256?: string;
}

/** Whether a file was opened on the server, and if not, why. */
export interface OpenResultInfo {
  opened: boolean;
  /** When not opened: a stable error code and a sentence. */
  code?: string;
  message?: string;
  /** What the content turned out to be. */
  kind?: string;
  mime?: string;
  /** When opened: the program started and its process id. */
  app?: string;
  pid?: number;
}

export interface UploadResultInfo {
  id: number;
  savedAs: string;
  bytes: number;
  sha256: string;
  /** True when the server already held this file and stored nothing new (no DATA was sent). */
  skipped?: boolean;
  /** Present when the offer asked for the file to be opened. */
  opened?: OpenResultInfo;
}

export interface ErrorInfo {
  code: string;
  message: string;
  /** The message or upload id the error belongs to, when it belongs to one. */
  id?: number;
}

/**
 * What a server-side decoder yields, whatever the wire format. The session machine is fed these,
 * so one machine serves the native and the original format alike.
 */
export type ServerToken =
  | { type: 'hello'; info: HelloInfo }
  | { type: 'message-header'; length: number }
  | { type: 'message'; id: number; text: string; raw: Buffer }
  | { type: 'upload-offer'; offer: UploadOffer }
  | { type: 'data'; chunk: Buffer }
  | { type: 'upload-end'; id: number; sha256?: string }
  | { type: 'open-request'; id: number; name: string }
  | { type: 'auth'; mac: string }
  | { type: 'ping'; payload: Buffer }
  | { type: 'pong'; payload: Buffer }
  | { type: 'bye' };

/** What the client-side decoder yields. */
export type ClientToken =
  | { type: 'welcome'; info: WelcomeInfo }
  | { type: 'message-ack'; id: number; text: string }
  | { type: 'upload-accept'; id: number; offset: number }
  | { type: 'upload-done'; result: UploadResultInfo }
  | { type: 'open-result'; id: number; result: OpenResultInfo }
  | { type: 'challenge'; nonce: string }
  | { type: 'error'; error: ErrorInfo }
  | { type: 'ping'; payload: Buffer }
  | { type: 'pong'; payload: Buffer }
  | { type: 'bye' };
