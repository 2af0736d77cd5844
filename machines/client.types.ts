/**
 * The client machine's types and the small pure helpers its actions use: what it is created with,
 * what it holds, the events it takes and emits, and how it words the failures it reports.
 */
import { FerryError, type ErrorCode } from '../transport/errors.js';
import type { ErrorInfo, Limits, OpenResultInfo, UploadResultInfo } from '../transport/frames.js';
import type { ClientLinkEvent, ClientLinkInput } from './actors/client-link.js';

export interface RetryPolicy {
  /** First delay before reconnecting. */
  initialMs: number;
  /** Longest delay between attempts. */
  maxMs: number;
  /** Give up after being unable to reach the server for this long; undefined = never. */
  forMs: number | undefined;
}

/**
 * What the client is created with, as plain data: the machine's input, kept as is in
 * `context.settings`, and never changed. The dialler, the resume book and the token are not here:
 * the link closes over them (see `clientLink()` and `createClient()`).
 */
export interface ClientSettings {
  /** What every connection is opened with: the link's input. */
  link: ClientLinkInput;
  retry: RetryPolicy;
  /** Messages and uploads accepted while the server is unreachable, at most. */
  maxQueued: number;
  /**
   * Offer the next queued upload as soon as the current one's bytes are all sent, instead of after
   * the server has confirmed it. Off for a link whose server takes one command at a time and whose
   * answers the link makes up itself (the original format).
   */
  pipelineUploads: boolean;
}

export const DEFAULT_MAX_QUEUED = 10_000;

export type MessageJob = { kind: 'message'; id: number; text: string };
export type OpenJob = { kind: 'open'; id: number; name: string };
export type UploadJob = { kind: 'upload'; id: number; path: string; name: string; open: boolean; fresh?: boolean; resumedFrom?: number };
/** Requests are answered by id and may be pipelined; uploads go one at a time. */
export type RequestJob = MessageJob | OpenJob;
export type Job = RequestJob | UploadJob;

/**
 * The machine's context. Settings sit in one object of their own: XState copies the context on
 * every assign (`Object.assign({}, context, update)`), and V8 gives such a copy with 20 or more
 * keys slow dictionary-mode properties, which made every later read and copy several times slower.
 */
export interface ClientContext {
  settings: ClientSettings;
  /** Waiting to be sent, in the order they were handed over. */
  queue: Job[];
  /** Sent and not yet answered; sent again, in order, after a reconnect. */
  inflight: RequestJob[];
  /**
   * Uploads offered on this connection and not yet answered: the current one first, then the next
   * one when it was offered early. Which phase they are in is the state `uploading` is in.
   */
  uploads: UploadJob[];
  /** Limits the server announced in its welcome. */
  serverLimits: Limits;
  /** Failed connection attempts in a row. */
  attempt: number;
  lastError: FerryError | undefined;
  /** The retry budget (`retry.forMs`, counted from the first failure in a row) has run out. */
  retryExpired: boolean;
  /** The delay chosen for the current wait in `retrying`. */
  retryDelayMs: number;
}

export type ClientEvent =
  | ClientLinkEvent
  | { type: 'message'; id: number; text: string }
  /** Several messages handed over together (the library groups those made in one tick). */
  | { type: 'messages'; messages: { id: number; text: string }[] }
  | { type: 'upload'; id: number; path: string; name?: string; open?: boolean; fresh?: boolean }
  | { type: 'open'; id: number; name: string }
  | { type: 'close'; sayExit?: boolean }
  /** Raised `retry.forMs` after the first failure in a row, unless a connection worked meanwhile. */
  | { type: 'retry.expired' };

export type ClientEmitted =
  | { type: 'connected'; session: string }
  | { type: 'retrying'; attempt: number; delayMs: number; error: FerryError }
  /** The acknowledgements of one read from the server, in order: one event per batch, not per message. */
  | { type: 'replies'; replies: { id: number; text: string }[] }
  | { type: 'upload-started'; id: number; size: number }
  | { type: 'progress'; id: number; sent: number; total: number }
  | { type: 'uploaded'; id: number; result: UploadResultInfo; resumedFrom: number }
  | { type: 'opened'; id: number; result: OpenResultInfo }
  | { type: 'failed'; id: number; error: FerryError }
  | { type: 'disconnected'; error: FerryError | undefined };

/** Errors that no amount of retrying will fix. */
export const FATAL: ReadonlySet<string> = new Set([
  'E_AUTH_REQUIRED',
  'E_AUTH_FAILED',
  'E_TLS',
  'E_BAD_PREAMBLE',
  'E_UNSUPPORTED_VERSION',
  'E_UNKNOWN_FRAME',
  'E_BAD_FRAME',
  'E_UNEXPECTED_FRAME',
  'E_FRAME_TOO_LARGE',
  'E_MESSAGE_TOO_LARGE',
  'E_LEGACY_REFUSED',
]);

/** The id of the delayed `retry.expired` event, so that a working connection can cancel it. */
export const RETRY_BUDGET = 'retryBudget';

/** Exponential backoff with jitter: the n-th delay lies between half and all of min(max, initial·2ⁿ). */
export function backoffDelay(retry: RetryPolicy, attempt: number, random: () => number): number {
  const ceiling = Math.min(retry.maxMs, retry.initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

export function serverError(info: ErrorInfo): FerryError {
  const code = (/^E_[A-Z0-9_]+$/.test(info.code) ? info.code : 'E_STORE_FAILED') as ErrorCode;
  return new FerryError(code, info.message);
}

export function messageTooLarge(text: string, limits: Limits): boolean {
  // A string's UTF-8 form is at most three bytes per UTF-16 unit: short ones need no counting.
  return text.length * 3 > limits.maxMessage && Buffer.byteLength(text, 'utf8') > limits.maxMessage;
}

export function tooLargeError(limits: Limits): FerryError {
  return new FerryError('E_MESSAGE_TOO_LARGE', `The message is larger than the server's limit of ${limits.maxMessage} bytes; send a file instead.`);
}

export function queueFullError(maxQueued: number): FerryError {
  return new FerryError('E_CONNECTION_LOST', `${maxQueued} items are already waiting for the server; wait for them before adding more.`);
}

export function uploadJob(event: Extract<ClientEvent, { type: 'upload' }>): UploadJob {
  const name = event.name ?? event.path.split(/[\\/]/).pop() ?? event.path;
  return { kind: 'upload', id: event.id, path: event.path, name, open: event.open === true, ...(event.fresh ? { fresh: true } : {}) };
}

export type Messages = { messages: { id: number; text: string }[] };
export type Ending = { reason: 'closed' } | { reason: 'gave-up' } | { reason: 'fatal'; error: FerryError };

