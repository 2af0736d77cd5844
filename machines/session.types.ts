import type { Limits, UploadOffer } from '../transport/frames.js';
import type { WireFormat } from '../transport/detect.js';
import type { SavedFile } from '../media/upload-store.js';
import type { OpenSettings } from '../media/opener.js';
import type { SessionConnectionEvent } from './actors/session-connection.js';
import type { FileReceiverEvent } from './actors/file-receiver.js';

export interface SessionTimeouts {
  /** A connection that has not said hello by then is closed. */
  handshakeMs: number;
  /** Native clients silent for two of these intervals are dropped; 0 = never. */
  heartbeatMs?: number;
  /** Any connection that sends nothing for this long is closed; 0 = never. */
  idleMs?: number;
}

/** What every session of a server is started with: plain data, the same for all of them. */
export interface SessionDefaults {
  limits: Limits;
  timeouts: SessionTimeouts;
  /** Name and version the server announces. */
  agent: string;
  /** Whether and how received media may be opened on this machine. */
  media: OpenSettings;
  /** Native clients must answer a challenge with the server's token before anything else. */
  authRequired: boolean;
  /** How long a wrong answer waits before it is refused (slows guessing). */
  authFailureDelayMs: number;
}

/** A session's input and settings: the server's defaults plus who this session is. It never changes. */
export interface SessionSettings extends SessionDefaults {
  /** `session-<n>`: unique within the server, used in logs and by the inspector. */
  id: string;
  /** The peer's address, `host:port`. */
  remote: string;
  /** The challenge this client is to answer, when `authRequired`; made when the connection was accepted. */
  nonce?: string;
}

interface CurrentUpload {
  offer: UploadOffer;
  saved?: SavedFile;
}

/**
 * The session's context. Settings sit in one object of their own: XState copies the context on
 * every assign, and V8 gives a copy with 20 or more keys slow dictionary-mode properties.
 */
export interface SessionContext {
  settings: SessionSettings;
  format: WireFormat | undefined;
  upload: CurrentUpload | undefined;
  /** A request to open a file stored earlier, while it is being handled. */
  openRequest: { id: number; name: string } | undefined;
  /** The client's id from its hello; messages are deduplicated per client id. */
  clientId: string | undefined;
  /** When this session last launched apps, for the per-minute limit. */
  launches: number[];
  /** Set by a server shutdown: finish what is in flight, then close. */
  draining: boolean;
}

export type SessionEvent = SessionConnectionEvent | FileReceiverEvent | { type: 'shutdown' };

/** `messages`: the new messages one step handled (a read's worth, or a single one), in order. */
export type SessionEmitted = { type: 'messages'; messages: { id: number; text: string }[] } | { type: 'file-saved'; saved: SavedFile };
