import { and, assign, emit, enqueueActions, sendTo, setup } from 'xstate';
import { FerryError, type ErrorCode } from '../transport/errors.js';
import { DEFAULT_LIMITS, type ErrorInfo, type HelloInfo, type Limits, type OpenResultInfo, type UploadResultInfo } from '../transport/frames.js';
import type { Dialer } from '../transport/transport.js';
import type { ResumeBook } from '../media/resume-book.js';
import { clientLink, type ClientLinkEvent } from './actors/client-link.js';

export interface RetryPolicy {
  /** First delay before reconnecting. */
  initialMs: number;
  /** Longest delay between attempts. */
  maxMs: number;
  /** Give up after being unable to reach the server for this long; undefined = never. */
  forMs: number | undefined;
}

export interface ClientMachineInput {
  dial: Dialer;
  clientId: string;
  agent: string;
  retry: RetryPolicy;
  handshakeMs: number;
  rateLimit?: number;
  /** Messages and uploads accepted while the server is unreachable, at most. */
  maxQueued?: number;
  /** Remembers resume keys of unfinished uploads. */
  book: ResumeBook;
  /** `host:port` of the server, for the book. */
  server: string;
  /** Heartbeat interval; 0 turns heartbeats off. */
  heartbeatMs: number;
  /** The server's token, when it asks for one. */
  token?: string;
  /**
   * Offer the next queued upload as soon as the current one's bytes are all sent, instead of after
   * the server has confirmed it. Default true; off for a link whose server takes one command at a
   * time and whose answers the link makes up itself (the original format).
   */
  pipelineUploads?: boolean;
}

export type MessageJob = { kind: 'message'; id: number; text: string };
export type OpenJob = { kind: 'open'; id: number; name: string };
export type UploadJob = { kind: 'upload'; id: number; path: string; name: string; open: boolean; fresh?: boolean; resumedFrom?: number };
/** Requests are answered by id and may be pipelined; uploads go one at a time. */
export type RequestJob = MessageJob | OpenJob;
export type Job = RequestJob | UploadJob;

/** What the client was created with; it never changes. */
export interface ClientSettings {
  dial: Dialer;
  hello: HelloInfo;
  retry: RetryPolicy;
  handshakeMs: number;
  rateLimit: number | undefined;
  maxQueued: number;
  book: ResumeBook;
  server: string;
  heartbeatMs: number;
  token: string | undefined;
  pipelineUploads: boolean;
}

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
  /** The upload being sent, if any. */
  current: UploadJob | undefined;
  /** The next upload, offered while the server was still checking `current`. */
  following: UploadJob | undefined;
  /** Limits the server announced in its welcome. */
  serverLimits: Limits;
  /** Failed connection attempts in a row. */
  attempt: number;
  /** When the server became unreachable (or the first attempt began); the retry budget counts from here. */
  downSince: number;
  lastError: FerryError | undefined;
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
  | { type: 'close'; sayExit?: boolean };

export type ClientEmitted =
  | { type: 'connected'; session: string }
  | { type: 'retrying'; attempt: number; delayMs: number; error: FerryError }
  | { type: 'reply'; id: number; text: string }
  | { type: 'upload-started'; id: number; size: number }
  | { type: 'progress'; id: number; sent: number; total: number }
  | { type: 'uploaded'; id: number; result: UploadResultInfo; resumedFrom: number }
  | { type: 'opened'; id: number; result: OpenResultInfo }
  | { type: 'failed'; id: number; error: FerryError }
  | { type: 'disconnected'; error: FerryError | undefined };

/** Errors that no amount of retrying will fix. */
const FATAL: ReadonlySet<string> = new Set([
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

/** Exponential backoff with jitter: the n-th delay lies between half and all of min(max, initial·2ⁿ). */
export function backoffDelay(retry: RetryPolicy, attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(retry.maxMs, retry.initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

function serverError(info: ErrorInfo): FerryError {
  const code = (/^E_[A-Z0-9_]+$/.test(info.code) ? info.code : 'E_STORE_FAILED') as ErrorCode;
  return new FerryError(code, info.message);
}

function offerCommand(job: UploadJob) {
  return { type: 'offer-upload' as const, id: job.id, path: job.path, name: job.name, ...(job.open ? { open: true } : {}), ...(job.fresh ? { fresh: true } : {}) };
}

function messageTooLarge(text: string, limits: Limits): boolean {
  // A string's UTF-8 form is at most three bytes per UTF-16 unit: short ones need no counting.
  return text.length * 3 > limits.maxMessage && Buffer.byteLength(text, 'utf8') > limits.maxMessage;
}

function tooLargeError(limits: Limits): FerryError {
  return new FerryError('E_MESSAGE_TOO_LARGE', `The message is larger than the server's limit of ${limits.maxMessage} bytes; send a file instead.`);
}

/** The messages a `message` or `messages` event carries. */
function messagesIn(event: ClientEvent): { id: number; text: string }[] {
  if (event.type === 'message') return [{ id: event.id, text: event.text }];
  if (event.type === 'messages') return event.messages;
  return [];
}

/**
 * The client lifecycle. Everything handed to the client is kept until the server confirms it or
 * it is reported as failed: messages in flight and the upload under way go back to the front of
 * the queue when the connection drops, and are sent again once it is back.
 */
export const clientMachine = setup({
  types: {
    context: {} as ClientContext,
    events: {} as ClientEvent,
    input: {} as ClientMachineInput,
    emitted: {} as ClientEmitted,
  },
  actors: { link: clientLink },
  delays: {
    backoff: ({ context }) => context.retryDelayMs,
  },
  guards: {
    fatal: ({ event }) => event.type === 'link.down' && FATAL.has(event.error.code),
    gaveUp: ({ context }) => context.settings.retry.forMs !== undefined && Date.now() - context.downSince >= context.settings.retry.forMs,
    queueFull: ({ context }) => context.queue.length + context.inflight.length >= context.settings.maxQueued,
    tooLarge: ({ context, event }) => event.type === 'message' && messageTooLarge(event.text, context.serverLimits),
    nextIsUpload: ({ context }) => context.queue[0]?.kind === 'upload',
    /** The current upload is all on the wire and the next job is an upload: offer it now. */
    canOfferFollowing: ({ context, event }) =>
      context.settings.pipelineUploads && event.type === 'upload.sent' && event.id === context.current?.id && context.following === undefined && context.queue[0]?.kind === 'upload',
    hasFollowing: ({ context }) => context.following !== undefined,
    isFollowingUpload: ({ context, event }) =>
      context.following !== undefined && (event.type === 'upload.offered' || event.type === 'upload.unreadable') && event.id === context.following.id,
    isCurrentUpload: ({ context, event }) =>
      context.current !== undefined &&
      ((event.type === 'server.error' && event.error.id === context.current.id) ||
        ((event.type === 'upload.unreadable' || event.type === 'server.accept' || event.type === 'upload.offered') && event.id === context.current.id) ||
        (event.type === 'server.done' && event.result.id === context.current.id)),
  },
  actions: {
    enqueueJob: assign({
      queue: ({ context, event }) => {
        if (event.type === 'message') return [...context.queue, { kind: 'message' as const, id: event.id, text: event.text }];
        if (event.type === 'upload') {
          const name = event.name ?? event.path.split(/[\\/]/).pop() ?? event.path;
          return [...context.queue, { kind: 'upload' as const, id: event.id, path: event.path, name, open: event.open === true, ...(event.fresh ? { fresh: true } : {}) }];
        }
        if (event.type === 'open') return [...context.queue, { kind: 'open' as const, id: event.id, name: event.name }];
        return context.queue;
      },
    }),
    refuseQueueFull: emit(({ event, context }) => ({
      type: 'failed' as const,
      id: 'id' in event ? (event.id as number) : -1,
      error: new FerryError('E_CONNECTION_LOST', `${context.settings.maxQueued} items are already waiting for the server; wait for them before adding more.`),
    })),
    /** Queues the messages of a batch while there is room; the rest fail at once, as single ones would. */
    enqueueMessages: enqueueActions(({ context, event, enqueue }) => {
      const messages = messagesIn(event);
      const room = Math.max(0, context.settings.maxQueued - context.queue.length - context.inflight.length);
      const error = new FerryError('E_CONNECTION_LOST', `${context.settings.maxQueued} items are already waiting for the server; wait for them before adding more.`);
      for (const m of messages.slice(room)) enqueue.emit({ type: 'failed', id: m.id, error });
      if (room > 0) enqueue.assign({ queue: [...context.queue, ...messages.slice(0, room).map((m) => ({ kind: 'message' as const, id: m.id, text: m.text }))] });
    }),
    refuseTooLarge: emit(({ event, context }) => ({
      type: 'failed' as const,
      id: 'id' in event ? (event.id as number) : -1,
      error: tooLargeError(context.serverLimits),
    })),
    /** Sends every request at the head of the queue, stopping at the first upload. */
    flushMessages: enqueueActions(({ context, enqueue }) => {
      const sent: RequestJob[] = [];
      // Consecutive messages leave as one command; an open request keeps its place between them.
      let run: MessageJob[] = [];
      const endRun = () => {
        if (run.length > 0) enqueue.sendTo('link', { type: 'send-messages', messages: run.map((m) => ({ id: m.id, text: m.text })) });
        run = [];
      };
      let i = 0;
      for (; i < context.queue.length; i++) {
        const job = context.queue[i]!;
        if (job.kind === 'upload') break;
        if (job.kind === 'open') {
          endRun();
          enqueue.sendTo('link', { type: 'send-open', id: job.id, name: job.name });
          sent.push(job);
          continue;
        }
        if (messageTooLarge(job.text, context.serverLimits)) {
          enqueue.emit({ type: 'failed', id: job.id, error: tooLargeError(context.serverLimits) });
          continue;
        }
        run.push(job);
        sent.push(job);
      }
      endRun();
      if (i > 0) enqueue.assign({ queue: context.queue.slice(i), inflight: [...context.inflight, ...sent] });
    }),
    /** Sends a message, or a batch of them in one command; any too large for the server fail alone. */
    sendMessagesNow: enqueueActions(({ context, event, enqueue }) => {
      const messages = messagesIn(event);
      const sending: MessageJob[] = [];
      for (const m of messages) {
        if (messageTooLarge(m.text, context.serverLimits)) enqueue.emit({ type: 'failed', id: m.id, error: tooLargeError(context.serverLimits) });
        else sending.push({ kind: 'message', id: m.id, text: m.text });
      }
      if (sending.length === 0) return;
      enqueue.sendTo('link', { type: 'send-messages', messages: sending.map((m) => ({ id: m.id, text: m.text })) });
      enqueue.assign({ inflight: [...context.inflight, ...sending] });
    }),
    sendOpenNow: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'open') return;
      enqueue.sendTo('link', { type: 'send-open', id: event.id, name: event.name });
      enqueue.assign({ inflight: [...context.inflight, { kind: 'open', id: event.id, name: event.name }] });
    }),
    settleOpen: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'server.opened') return;
      if (!context.inflight.some((m) => m.id === event.id)) return;
      enqueue.assign({ inflight: context.inflight.filter((m) => m.id !== event.id) });
      enqueue.emit({ type: 'opened', id: event.id, result: event.result });
    }),
    /** Settles every acknowledged message that is still in flight (acks from one read come together). */
    settleMessages: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'server.ack') return;
      const waiting = new Set<number>();
      for (const job of context.inflight) if (job.kind === 'message') waiting.add(job.id);
      const settled = new Set<number>();
      for (const ack of event.acks) {
        if (!waiting.has(ack.id) || settled.has(ack.id)) continue;
        settled.add(ack.id);
        enqueue.emit({ type: 'reply', id: ack.id, text: ack.text });
      }
      if (settled.size > 0) enqueue.assign({ inflight: context.inflight.filter((m) => !settled.has(m.id)) });
    }),
    failMessage: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'server.error' || event.error.id === undefined) return;
      const id = event.error.id;
      if (!context.inflight.some((m) => m.id === id)) return;
      enqueue.assign({ inflight: context.inflight.filter((m) => m.id !== id) });
      enqueue.emit({ type: 'failed', id, error: serverError(event.error) });
    }),
    takeUpload: assign({
      current: ({ context }) => context.queue[0] as UploadJob,
      queue: ({ context }) => context.queue.slice(1),
    }),
    offerUpload: sendTo('link', ({ context }) => offerCommand(context.current!)),
    /** Offers the next upload early: the server reads the offer as soon as it has answered the current one. */
    offerFollowing: enqueueActions(({ context, enqueue }) => {
      const next = context.queue[0] as UploadJob;
      enqueue.assign({ following: next, queue: context.queue.slice(1) });
      enqueue.sendTo('link', offerCommand(next));
    }),
    /** The current upload is over; the one offered early takes its place. */
    promoteFollowing: assign({ current: ({ context }) => context.following, following: undefined }),
    failFollowing: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'upload.unreadable' || !context.following) return;
      enqueue.emit({ type: 'failed', id: context.following.id, error: event.error });
      enqueue.assign({ following: undefined });
    }),
    streamUpload: sendTo('link', ({ event }) => ({ type: 'stream-upload' as const, id: event.type === 'server.accept' ? event.id : -1, offset: event.type === 'server.accept' ? event.offset : 0 })),
    assignResumedFrom: assign({
      current: ({ context, event }) => (context.current && event.type === 'server.accept' ? { ...context.current, resumedFrom: event.offset } : context.current),
    }),
    emitUploadStarted: emit(({ event }) => ({ type: 'upload-started' as const, id: event.type === 'upload.offered' ? event.id : -1, size: event.type === 'upload.offered' ? event.size : 0 })),
    emitProgress: emit(({ event }) =>
      event.type === 'upload.progress' ? { type: 'progress' as const, id: event.id, sent: event.sent, total: event.total } : { type: 'progress' as const, id: -1, sent: 0, total: 0 },
    ),
    settleUpload: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'server.done' || !context.current) return;
      enqueue.emit({ type: 'uploaded', id: context.current.id, result: event.result, resumedFrom: context.current.resumedFrom ?? 0 });
      enqueue.assign({ current: undefined });
    }),
    failUpload: enqueueActions(({ context, event, enqueue }) => {
      if (!context.current) return;
      const error = event.type === 'server.error' ? serverError(event.error) : event.type === 'upload.unreadable' ? event.error : new FerryError('E_STORE_FAILED');
      enqueue.emit({ type: 'failed', id: context.current.id, error });
      enqueue.assign({ current: undefined });
    }),
    assignWelcome: assign({
      serverLimits: ({ context, event }) =>
        event.type === 'link.up' ? { maxFrame: event.welcome.maxFrame, maxMessage: event.welcome.maxMessage } : context.serverLimits,
    }),
    markUp: assign({ attempt: 0, lastError: undefined }),
    emitConnected: emit(({ event }) => ({ type: 'connected' as const, session: event.type === 'link.up' ? event.welcome.session : '' })),
    /** Puts what was in flight back at the front of the queue, in the order it was first sent. */
    requeue: assign({
      queue: ({ context }) => [...context.inflight, ...(context.current ? [context.current] : []), ...(context.following ? [context.following] : []), ...context.queue],
      inflight: [],
      current: undefined,
      following: undefined,
    }),
    recordFailure: assign({
      attempt: ({ context }) => context.attempt + 1,
      // The first failure after a working connection starts the retry budget afresh.
      downSince: ({ context }) => (context.attempt === 0 && context.lastError === undefined ? Date.now() : context.downSince),
      retryDelayMs: ({ context }) => backoffDelay(context.settings.retry, context.attempt),
      lastError: ({ event, context }) => (event.type === 'link.down' ? event.error : context.lastError),
    }),
    emitRetrying: emit(({ context }) => ({
      type: 'retrying' as const,
      attempt: context.attempt,
      delayMs: context.retryDelayMs,
      error: context.lastError ?? new FerryError('E_CONNECTION_LOST'),
    })),
    /** Ends the client: whatever the server has not confirmed is reported as failed, with the reason. */
    failEverything: enqueueActions(({ context, event, enqueue }, params: { reason: 'closed' | 'gave-up' | 'fatal' }) => {
      const error =
        params.reason === 'fatal' && event.type === 'link.down'
          ? event.error
          : params.reason === 'gave-up'
            ? new FerryError(
                'E_GAVE_UP',
                `The server could not be reached for ${Math.round((context.settings.retry.forMs ?? 0) / 1000)} s: ${context.lastError?.message ?? 'no answer'}`,
              )
            : new FerryError('E_CLOSED', 'The client was closed before the server confirmed this.');
      const jobs = [...context.inflight, ...(context.current ? [context.current] : []), ...(context.following ? [context.following] : []), ...context.queue];
      for (const job of jobs) enqueue.emit({ type: 'failed', id: job.id, error });
      const clean = params.reason === 'closed' && jobs.length === 0;
      enqueue.assign({ queue: [], inflight: [], current: undefined, following: undefined, lastError: clean ? undefined : error });
      enqueue.emit({ type: 'disconnected', error: clean ? undefined : error });
    }),
    refuseClosing: enqueueActions(({ event, enqueue }) => {
      const error = new FerryError('E_CLOSED', 'The client is closing; nothing more can be sent on it.');
      const ids = event.type === 'messages' ? event.messages.map((m) => m.id) : ['id' in event ? (event.id as number) : -1];
      for (const id of ids) enqueue.emit({ type: 'failed', id, error });
    }),
    closeLink: sendTo('link', ({ event }) => ({ type: 'close' as const, sayExit: event.type === 'close' && event.sayExit === true })),
  },
}).createMachine({
  id: 'client',
  context: ({ input }) => ({
    settings: {
      dial: input.dial,
      hello: { version: 1, agent: input.agent, clientId: input.clientId },
      retry: input.retry,
      handshakeMs: input.handshakeMs,
      rateLimit: input.rateLimit,
      maxQueued: input.maxQueued ?? 10_000,
      book: input.book,
      server: input.server,
      heartbeatMs: input.heartbeatMs,
      token: input.token,
      pipelineUploads: input.pipelineUploads ?? true,
    },
    queue: [],
    inflight: [],
    current: undefined,
    following: undefined,
    serverLimits: DEFAULT_LIMITS,
    attempt: 0,
    downSince: Date.now(),
    lastError: undefined,
    retryDelayMs: 0,
  }),
  initial: 'online',
  states: {
    online: {
      description: 'A connection exists or is being made.',
      invoke: {
        id: 'link',
        src: 'link',
        input: ({ context }) => ({
          dial: context.settings.dial,
          hello: context.settings.hello,
          limits: DEFAULT_LIMITS,
          handshakeMs: context.settings.handshakeMs,
          book: context.settings.book,
          server: context.settings.server,
          heartbeatMs: context.settings.heartbeatMs,
          ...(context.settings.token !== undefined ? { token: context.settings.token } : {}),
          ...(context.settings.rateLimit ? { rateLimit: context.settings.rateLimit } : {}),
        }),
      },
      on: {
        'link.down': [
          { guard: 'fatal', target: 'disconnected', actions: { type: 'failEverything', params: { reason: 'fatal' } } },
          { target: 'retrying', actions: ['requeue', 'recordFailure'] },
        ],
      },
      initial: 'connecting',
      states: {
        connecting: {
          description: 'Dialling the server and exchanging hello and welcome.',
          on: {
            'link.up': { target: 'connected', actions: ['assignWelcome', 'markUp', 'emitConnected'] },
            message: [{ guard: 'queueFull', actions: 'refuseQueueFull' }, { actions: 'enqueueJob' }],
            messages: { actions: 'enqueueMessages' },
            upload: [{ guard: 'queueFull', actions: 'refuseQueueFull' }, { actions: 'enqueueJob' }],
            open: [{ guard: 'queueFull', actions: 'refuseQueueFull' }, { actions: 'enqueueJob' }],
            close: { target: '#client.disconnected', actions: { type: 'failEverything', params: { reason: 'closed' } } },
          },
        },
        connected: {
          description: 'Talking to the server: messages go out at once; uploads go in order, each next one offered while the server checks the last.',
          initial: 'idle',
          on: {
            'server.ack': { actions: 'settleMessages' },
            'server.opened': { actions: 'settleOpen' },
            'server.error': { actions: 'failMessage' },
            close: { target: 'closing' },
          },
          states: {
            idle: {
              description: 'Nothing is being uploaded.',
              entry: 'flushMessages',
              always: { guard: 'nextIsUpload', target: 'uploading', actions: 'takeUpload' },
              on: {
                message: [{ guard: 'tooLarge', actions: 'refuseTooLarge' }, { actions: 'sendMessagesNow' }],
                messages: { actions: 'sendMessagesNow' },
                open: { actions: 'sendOpenNow' },
                upload: { target: 'idle', reenter: true, actions: 'enqueueJob' },
              },
            },
            uploading: {
              description: 'Offering a file, then streaming it, then waiting for the server to confirm it.',
              entry: 'offerUpload',
              on: {
                message: [{ guard: 'queueFull', actions: 'refuseQueueFull' }, { actions: 'enqueueJob' }],
                messages: { actions: 'enqueueMessages' },
                upload: [{ guard: 'queueFull', actions: 'refuseQueueFull' }, { actions: 'enqueueJob' }],
                open: [{ guard: 'queueFull', actions: 'refuseQueueFull' }, { actions: 'enqueueJob' }],
                'upload.offered': [
                  { guard: 'isCurrentUpload', actions: 'emitUploadStarted' },
                  { guard: 'isFollowingUpload', actions: 'emitUploadStarted' },
                ],
                'server.accept': { guard: 'isCurrentUpload', actions: ['assignResumedFrom', 'streamUpload'] },
                'upload.progress': { actions: 'emitProgress' },
                'upload.sent': { guard: 'canOfferFollowing', actions: 'offerFollowing' },
                // When the current upload is over, one offered early carries on without a new offer.
                'server.done': [
                  { guard: and(['isCurrentUpload', 'hasFollowing']), actions: ['settleUpload', 'promoteFollowing'] },
                  { guard: 'isCurrentUpload', target: 'idle', actions: 'settleUpload' },
                ],
                'server.error': [
                  { guard: and(['isCurrentUpload', 'hasFollowing']), actions: ['failUpload', 'promoteFollowing'] },
                  { guard: 'isCurrentUpload', target: 'idle', actions: 'failUpload' },
                  { actions: 'failMessage' },
                ],
                'upload.unreadable': [
                  { guard: and(['isCurrentUpload', 'hasFollowing']), actions: ['failUpload', 'promoteFollowing'] },
                  { guard: 'isCurrentUpload', target: 'idle', actions: 'failUpload' },
                  { guard: 'isFollowingUpload', actions: 'failFollowing' },
                ],
              },
            },
          },
        },
        closing: {
          description: 'Saying goodbye and waiting for the server to close the connection.',
          entry: 'closeLink',
          on: {
            message: { actions: 'refuseClosing' },
            messages: { actions: 'refuseClosing' },
            upload: { actions: 'refuseClosing' },
            open: { actions: 'refuseClosing' },
            'server.ack': { actions: 'settleMessages' },
            'server.opened': { actions: 'settleOpen' },
            'server.error': { actions: 'failMessage' },
            'link.down': { target: '#client.disconnected', actions: { type: 'failEverything', params: { reason: 'closed' } } },
          },
        },
      },
    },
    retrying: {
      description: 'The server is unreachable: waiting a growing, jittered delay before the next attempt.',
      entry: 'emitRetrying',
      always: { guard: 'gaveUp', target: 'disconnected', actions: { type: 'failEverything', params: { reason: 'gave-up' } } },
      after: { backoff: { target: 'online' } },
      on: {
        message: [{ guard: 'queueFull', actions: 'refuseQueueFull' }, { actions: 'enqueueJob' }],
        messages: { actions: 'enqueueMessages' },
        upload: [{ guard: 'queueFull', actions: 'refuseQueueFull' }, { actions: 'enqueueJob' }],
        open: [{ guard: 'queueFull', actions: 'refuseQueueFull' }, { actions: 'enqueueJob' }],
        close: { target: 'disconnected', actions: { type: 'failEverything', params: { reason: 'closed' } } },
      },
    },
    disconnected: {
      description: 'The client is finished: closed by its user, or it gave up.',
      type: 'final',
    },
  },
});

export type ClientMachine = typeof clientMachine;
