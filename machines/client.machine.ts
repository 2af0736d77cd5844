import { assign, cancel, emit, enqueueActions, fromCallback, sendTo, setup } from 'xstate';
import { FerryError } from '../transport/errors.js';
import { DEFAULT_LIMITS, type ErrorInfo, type OpenResultInfo, type UploadResultInfo, type WelcomeInfo } from '../transport/frames.js';
import type { ClientLinkCommand, ClientLinkEvent, ClientLinkInput } from './actors/client-link.js';
import {
  backoffDelay,
  FATAL,
  messageTooLarge,
  queueFullError,
  RETRY_BUDGET,
  serverError,
  tooLargeError,
  uploadJob,
  type ClientContext,
  type ClientEmitted,
  type ClientEvent,
  type ClientSettings,
  type Ending,
  type Job,
  type MessageJob,
  type Messages,
  type OpenJob,
  type RequestJob,
} from './client.types.js';

export * from './client.types.js';

/**
 * Stands in for the link until one is provided: the machine cannot dial by itself. `createClient()`
 * provides `clientLink(...)` (or `legacyLink(...)`) over its dialler, resume book and token.
 */
const unprovidedLink = fromCallback<ClientLinkCommand, ClientLinkInput, ClientLinkEvent>(() => {
  throw new Error('The client machine has no link: provide one with clientMachine.provide({ actors: { link: clientLink({ dial, book, server }) } }).');
});

/**
 * The client lifecycle. Everything handed to the client is kept until the server confirms it or
 * it is reported as failed: messages in flight and the uploads under way go back to the front of
 * the queue when the connection drops, and are sent again once it is back.
 */
export const clientMachine = setup({
  types: {
    context: {} as ClientContext,
    events: {} as ClientEvent,
    input: {} as ClientSettings,
    emitted: {} as ClientEmitted,
  },
  actors: { link: unprovidedLink },
  delays: {
    backoff: ({ context }) => context.retryDelayMs,
  },
  guards: {
    fatal: (_, { error }: { error: FerryError }) => FATAL.has(error.code),
    retryExpired: ({ context }) => context.retryExpired,
    queueFull: ({ context }) => context.queue.length + context.inflight.length >= context.settings.maxQueued,
    nextIsUpload: ({ context }) => context.queue[0]?.kind === 'upload',
    /** The current upload is all on the wire and the next job is an upload: offer it now. */
    canOfferNext: ({ context }) => context.settings.pipelineUploads && context.queue[0]?.kind === 'upload',
    /** The server's answer is about the current upload (and not, say, about a message). */
    isCurrentUpload: ({ context }, { id }: { id: number | undefined }) => context.uploads[0]?.id === id,
  },
  actions: {
    enqueueJob: assign({ queue: ({ context }, { job }: { job: Job }) => [...context.queue, job] }),
    refuseQueueFull: emit(({ context }, { id }: { id: number }) => ({ type: 'failed' as const, id, error: queueFullError(context.settings.maxQueued) })),
    /** Queues the messages of a batch while there is room; the rest fail at once, as single ones would. */
    enqueueMessages: enqueueActions(({ context, enqueue }, { messages }: Messages) => {
      const room = Math.max(0, context.settings.maxQueued - context.queue.length - context.inflight.length);
      const error = queueFullError(context.settings.maxQueued);
      for (const m of messages.slice(room)) enqueue.emit({ type: 'failed', id: m.id, error });
      if (room > 0) enqueue.assign({ queue: [...context.queue, ...messages.slice(0, room).map((m) => ({ kind: 'message' as const, id: m.id, text: m.text }))] });
    }),
    /** Sends every request at the head of the queue, stopping at the first upload. */
    flushMessages: enqueueActions(({ context, enqueue }) => {
      const sent: RequestJob[] = [];
      // Consecutive messages leave as one command; an open request keeps its place between them.
      let run: MessageJob[] = [];
      const endRun = () => {
        if (run.length > 0) enqueue.sendTo('link', { type: 'send-messages', messages: run });
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
    sendMessagesNow: enqueueActions(({ context, enqueue }, { messages }: Messages) => {
      const sending: MessageJob[] = [];
      for (const m of messages) {
        if (messageTooLarge(m.text, context.serverLimits)) enqueue.emit({ type: 'failed', id: m.id, error: tooLargeError(context.serverLimits) });
        else sending.push({ kind: 'message', id: m.id, text: m.text });
      }
      if (sending.length === 0) return;
      enqueue.sendTo('link', { type: 'send-messages', messages: sending });
      enqueue.assign({ inflight: [...context.inflight, ...sending] });
    }),
    sendOpenNow: enqueueActions(({ context, enqueue }, job: OpenJob) => {
      enqueue.sendTo('link', { type: 'send-open', id: job.id, name: job.name });
      enqueue.assign({ inflight: [...context.inflight, job] });
    }),
    settleOpen: enqueueActions(({ context, enqueue }, { id, result }: { id: number; result: OpenResultInfo }) => {
      if (!context.inflight.some((m) => m.id === id)) return;
      enqueue.assign({ inflight: context.inflight.filter((m) => m.id !== id) });
      enqueue.emit({ type: 'opened', id, result });
    }),
    /** Settles every acknowledged message that is still in flight (acks from one read come together). */
    settleMessages: enqueueActions(({ context, enqueue }, { acks }: { acks: { id: number; text: string }[] }) => {
      const waiting = new Set<number>();
      for (const job of context.inflight) if (job.kind === 'message') waiting.add(job.id);
      // An ack settles a message once; one for a message not in flight (or settled already) is ignored.
      const replies = acks.filter((ack) => waiting.delete(ack.id));
      if (replies.length === 0) return;
      enqueue.assign({ inflight: context.inflight.filter((m) => m.kind !== 'message' || waiting.has(m.id)) });
      enqueue.emit({ type: 'replies', replies });
    }),
    failMessage: enqueueActions(({ context, enqueue }, { error }: { error: ErrorInfo }) => {
      const id = error.id;
      if (id === undefined || !context.inflight.some((m) => m.id === id)) return;
      enqueue.assign({ inflight: context.inflight.filter((m) => m.id !== id) });
      enqueue.emit({ type: 'failed', id, error: serverError(error) });
    }),
    /** Offers the upload at the head of the queue: the first of a run, or the next one early. */
    offerUpload: enqueueActions(({ context, enqueue }) => {
      const job = context.queue[0];
      if (job?.kind !== 'upload') return;
      enqueue.assign({ uploads: [...context.uploads, job], queue: context.queue.slice(1) });
      enqueue.sendTo('link', { type: 'offer-upload', id: job.id, path: job.path, name: job.name, ...(job.open ? { open: true } : {}), ...(job.fresh ? { fresh: true } : {}) });
    }),
    emitUploadStarted: emit((_, { id, size }: { id: number; size: number }) => ({ type: 'upload-started' as const, id, size })),
    /** The server accepted the current upload: send it from the offset it named. */
    streamUpload: enqueueActions(({ context, enqueue }, { id, offset }: { id: number; offset: number }) => {
      const [current, ...rest] = context.uploads;
      if (current) enqueue.assign({ uploads: [{ ...current, resumedFrom: offset }, ...rest] });
      enqueue.sendTo('link', { type: 'stream-upload', id, offset });
    }),
    emitProgress: emit((_, progress: { id: number; sent: number; total: number }) => ({ type: 'progress' as const, ...progress })),
    /** The current upload is stored; the one offered early, if any, becomes the current one. */
    settleUpload: enqueueActions(({ context, enqueue }, { result }: { result: UploadResultInfo }) => {
      const [current, ...rest] = context.uploads;
      if (!current) return;
      enqueue.emit({ type: 'uploaded', id: current.id, result, resumedFrom: current.resumedFrom ?? 0 });
      enqueue.assign({ uploads: rest });
    }),
    /** The current upload failed; the one offered early, if any, becomes the current one. */
    failUpload: enqueueActions(({ context, enqueue }, { error }: { error: FerryError }) => {
      const [current, ...rest] = context.uploads;
      if (!current) return;
      enqueue.emit({ type: 'failed', id: current.id, error });
      enqueue.assign({ uploads: rest });
    }),
    /** The upload offered early cannot be read: it fails, and the current one carries on alone. */
    failNextUpload: enqueueActions(({ context, enqueue }, { error }: { error: FerryError }) => {
      const [current, next] = context.uploads;
      if (!current || !next) return;
      enqueue.emit({ type: 'failed', id: next.id, error });
      enqueue.assign({ uploads: [current] });
    }),
    markUp: assign((_, { welcome }: { welcome: WelcomeInfo }) => ({
      serverLimits: { maxFrame: welcome.maxFrame, maxMessage: welcome.maxMessage },
      attempt: 0,
      lastError: undefined,
      retryExpired: false,
    })),
    /** A connection worked: the budget starts afresh at the next failure. */
    stopRetryBudget: cancel(RETRY_BUDGET),
    emitConnected: emit((_, { session }: { session: string }) => ({ type: 'connected' as const, session })),
    /** Puts what was in flight back at the front of the queue, in the order it was first sent. */
    requeue: assign({
      queue: ({ context }) => [...context.inflight, ...context.uploads, ...context.queue],
      inflight: [],
      uploads: [],
    }),
    /** Counts the failure and picks the next delay; the first failure in a row starts the retry budget. */
    recordFailure: enqueueActions(({ context, enqueue }, { error, jitter }: { error: FerryError; jitter: number }) => {
      const { retry } = context.settings;
      if (context.attempt === 0 && retry.forMs !== undefined) enqueue.raise({ type: 'retry.expired' }, { id: RETRY_BUDGET, delay: retry.forMs });
      enqueue.assign({ attempt: context.attempt + 1, retryDelayMs: backoffDelay(retry, context.attempt, () => jitter), lastError: error });
    }),
    markRetryExpired: assign({ retryExpired: true }),
    emitRetrying: emit(({ context }, { error }: { error: FerryError }) => ({ type: 'retrying' as const, attempt: context.attempt, delayMs: context.retryDelayMs, error })),
    /** Ends the client: whatever the server has not confirmed is reported as failed, with the reason. */
    failEverything: enqueueActions(({ context, enqueue }, ending: Ending) => {
      const error =
        ending.reason === 'fatal'
          ? ending.error
          : ending.reason === 'gave-up'
            ? new FerryError(
                'E_GAVE_UP',
                `The server could not be reached for ${Math.round((context.settings.retry.forMs ?? 0) / 1000)} s: ${context.lastError?.message ?? 'no answer'}`,
              )
            : new FerryError('E_CLOSED', 'The client was closed before the server confirmed this.');
      const jobs = [...context.inflight, ...context.uploads, ...context.queue];
      for (const job of jobs) enqueue.emit({ type: 'failed', id: job.id, error });
      const clean = ending.reason === 'closed' && jobs.length === 0;
      enqueue.assign({ queue: [], inflight: [], uploads: [], lastError: clean ? undefined : error });
      enqueue.emit({ type: 'disconnected', error: clean ? undefined : error });
    }),
    refuseClosing: enqueueActions(({ enqueue }, { ids }: { ids: number[] }) => {
      const error = new FerryError('E_CLOSED', 'The client is closing; nothing more can be sent on it.');
      for (const id of ids) enqueue.emit({ type: 'failed', id, error });
    }),
    closeLink: sendTo('link', (_, { sayExit }: { sayExit: boolean }) => ({ type: 'close' as const, sayExit })),
  },
}).createMachine({
  id: 'client',
  context: ({ input }) => ({
    settings: input,
    queue: [],
    inflight: [],
    uploads: [],
    serverLimits: DEFAULT_LIMITS,
    attempt: 0,
    lastError: undefined,
    retryExpired: false,
    retryDelayMs: 0,
  }),
  initial: 'online',
  // Work handed over is queued, as far as `maxQueued` allows, in every state that cannot send it
  // at once (connecting, uploading, retrying); `idle` sends it and `closing` refuses it.
  on: {
    message: [
      { guard: 'queueFull', actions: { type: 'refuseQueueFull', params: ({ event }) => ({ id: event.id }) } },
      { actions: { type: 'enqueueJob', params: ({ event }) => ({ job: { kind: 'message', id: event.id, text: event.text } }) } },
    ],
    messages: { actions: { type: 'enqueueMessages', params: ({ event }) => ({ messages: event.messages }) } },
    upload: [
      { guard: 'queueFull', actions: { type: 'refuseQueueFull', params: ({ event }) => ({ id: event.id }) } },
      { actions: { type: 'enqueueJob', params: ({ event }) => ({ job: uploadJob(event) }) } },
    ],
    open: [
      { guard: 'queueFull', actions: { type: 'refuseQueueFull', params: ({ event }) => ({ id: event.id }) } },
      { actions: { type: 'enqueueJob', params: ({ event }) => ({ job: { kind: 'open', id: event.id, name: event.name } }) } },
    ],
    'retry.expired': { actions: 'markRetryExpired' },
  },
  states: {
    online: {
      description: 'A connection exists or is being made.',
      invoke: {
        id: 'link',
        src: 'link',
        input: ({ context }) => context.settings.link,
      },
      on: {
        // Answers to requests: the server gives them while connected, and still while closing.
        'server.ack': { actions: { type: 'settleMessages', params: ({ event }) => ({ acks: event.acks }) } },
        'server.opened': { actions: { type: 'settleOpen', params: ({ event }) => ({ id: event.id, result: event.result }) } },
        'server.error': { actions: { type: 'failMessage', params: ({ event }) => ({ error: event.error }) } },
        'link.down': [
          {
            guard: { type: 'fatal', params: ({ event }) => ({ error: event.error }) },
            target: 'disconnected',
            actions: { type: 'failEverything', params: ({ event }) => ({ reason: 'fatal', error: event.error }) },
          },
          {
            target: 'retrying',
            actions: [
              'requeue',
              { type: 'recordFailure', params: ({ event }) => ({ error: event.error, jitter: event.jitter }) },
              { type: 'emitRetrying', params: ({ event }) => ({ error: event.error }) },
            ],
          },
        ],
      },
      initial: 'connecting',
      states: {
        connecting: {
          description: 'Dialling the server and exchanging hello and welcome.',
          on: {
            'link.up': {
              target: 'connected',
              actions: [
                { type: 'markUp', params: ({ event }) => ({ welcome: event.welcome }) },
                'stopRetryBudget',
                { type: 'emitConnected', params: ({ event }) => ({ session: event.welcome.session }) },
              ],
            },
            close: { target: '#client.disconnected', actions: { type: 'failEverything', params: { reason: 'closed' } } },
          },
        },
        connected: {
          description: 'Talking to the server: messages go out at once; uploads go in order, each next one offered while the server checks the last.',
          initial: 'idle',
          on: {
            close: { target: 'closing', actions: { type: 'closeLink', params: ({ event }) => ({ sayExit: event.sayExit === true }) } },
          },
          states: {
            idle: {
              description: 'Nothing is being uploaded.',
              entry: 'flushMessages',
              always: { guard: 'nextIsUpload', target: 'uploading', actions: 'offerUpload' },
              on: {
                message: { actions: { type: 'sendMessagesNow', params: ({ event }) => ({ messages: [{ id: event.id, text: event.text }] }) } },
                messages: { actions: { type: 'sendMessagesNow', params: ({ event }) => ({ messages: event.messages }) } },
                open: { actions: { type: 'sendOpenNow', params: ({ event }) => ({ kind: 'open', id: event.id, name: event.name }) } },
                upload: { target: 'idle', reenter: true, actions: { type: 'enqueueJob', params: ({ event }) => ({ job: uploadJob(event) }) } },
              },
            },
            uploading: {
              description: 'Sending the current upload, phase by phase; new work waits behind it.',
              initial: 'offering',
              on: {
                // In any phase, the server may refuse the current upload and the file may fail to read.
                'server.error': {
                  guard: { type: 'isCurrentUpload', params: ({ event }) => ({ id: event.error.id }) },
                  target: 'idle',
                  actions: { type: 'failUpload', params: ({ event }) => ({ error: serverError(event.error) }) },
                },
                'upload.unreadable': { target: 'idle', actions: { type: 'failUpload', params: ({ event }) => ({ error: event.error }) } },
              },
              states: {
                offering: {
                  description: 'The file is checked and offered; waiting for the server to accept it, and say from which offset.',
                  on: {
                    'upload.offered': { actions: { type: 'emitUploadStarted', params: ({ event }) => ({ id: event.id, size: event.size }) } },
                    'server.accept': {
                      guard: { type: 'isCurrentUpload', params: ({ event }) => ({ id: event.id }) },
                      target: 'streaming',
                      actions: { type: 'streamUpload', params: ({ event }) => ({ id: event.id, offset: event.offset }) },
                    },
                    // The server holds this very file already (the offer named its SHA-256): done, nothing to send.
                    'server.done': {
                      guard: { type: 'isCurrentUpload', params: ({ event }) => ({ id: event.result.id }) },
                      target: '#client.online.connected.idle',
                      actions: { type: 'settleUpload', params: ({ event }) => ({ result: event.result }) },
                    },
                  },
                },
                streaming: {
                  description: "Sending the file's bytes from the accepted offset.",
                  on: {
                    'upload.progress': { actions: { type: 'emitProgress', params: ({ event }) => ({ id: event.id, sent: event.sent, total: event.total }) } },
                    'upload.sent': [{ guard: 'canOfferNext', target: 'confirming.withNext', actions: 'offerUpload' }, { target: 'confirming' }],
                  },
                },
                confirming: {
                  description: 'All bytes are sent; waiting for the server to verify and store the file.',
                  initial: 'alone',
                  states: {
                    alone: {
                      description: 'Nothing else is offered meanwhile.',
                      on: {
                        'server.done': {
                          guard: { type: 'isCurrentUpload', params: ({ event }) => ({ id: event.result.id }) },
                          target: '#client.online.connected.idle',
                          actions: { type: 'settleUpload', params: ({ event }) => ({ result: event.result }) },
                        },
                      },
                    },
                    withNext: {
                      description: "The next upload is offered already; the server reads its offer once it has answered this one, and it carries on from there.",
                      on: {
                        'upload.offered': { actions: { type: 'emitUploadStarted', params: ({ event }) => ({ id: event.id, size: event.size }) } },
                        'upload.unreadable': { target: 'alone', actions: { type: 'failNextUpload', params: ({ event }) => ({ error: event.error }) } },
                        'server.done': {
                          guard: { type: 'isCurrentUpload', params: ({ event }) => ({ id: event.result.id }) },
                          target: '#client.online.connected.uploading.offering',
                          actions: { type: 'settleUpload', params: ({ event }) => ({ result: event.result }) },
                        },
                        'server.error': {
                          guard: { type: 'isCurrentUpload', params: ({ event }) => ({ id: event.error.id }) },
                          target: '#client.online.connected.uploading.offering',
                          actions: { type: 'failUpload', params: ({ event }) => ({ error: serverError(event.error) }) },
                        },
                      },
                    },
                  },
                },
              },
            },
          },
        },
        closing: {
          description: 'Saying goodbye and waiting for the server to close the connection.',
          on: {
            message: { actions: { type: 'refuseClosing', params: ({ event }) => ({ ids: [event.id] }) } },
            messages: { actions: { type: 'refuseClosing', params: ({ event }) => ({ ids: event.messages.map((m) => m.id) }) } },
            upload: { actions: { type: 'refuseClosing', params: ({ event }) => ({ ids: [event.id] }) } },
            open: { actions: { type: 'refuseClosing', params: ({ event }) => ({ ids: [event.id] }) } },
            'link.down': { target: '#client.disconnected', actions: { type: 'failEverything', params: { reason: 'closed' } } },
          },
        },
      },
    },
    retrying: {
      description: 'The server is unreachable: waiting a growing, jittered delay before the next attempt; giving up once the retry budget is spent.',
      always: { guard: 'retryExpired', target: 'disconnected', actions: { type: 'failEverything', params: { reason: 'gave-up' } } },
      after: { backoff: { target: 'online' } },
      on: {
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
