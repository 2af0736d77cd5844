import { assign, emit, enqueueActions, fromPromise, sendTo, setup } from 'xstate';
import type { Logger } from 'pino';
import type { FerryError } from '../transport/errors.js';
import type { Limits, ServerToken, UploadOffer } from '../transport/frames.js';
import type { WireFormat } from '../transport/detect.js';
import type { SessionReply } from '../transport/replies.js';
import type { Transport } from '../transport/transport.js';
import type { SavedFile } from '../media/upload-store.js';
import { launchAllowed, openMedia, type OpenOutcome, type OpenSettings } from '../media/opener.js';
import { macMatches, newNonce } from '../transport/auth.js';
import { sessionConnection, type CodecFactory, type SessionConnectionEvent } from './actors/session-connection.js';
import { fileReceiver, type FileReceiverEvent, type FileSink } from './actors/file-receiver.js';

export interface SessionTimeouts {
  /** A connection that has not said hello by then is closed. */
  handshakeMs: number;
  /** Native clients silent for two of these intervals are dropped; 0 = never. */
  heartbeatMs?: number;
  /** Any connection that sends nothing for this long is closed; 0 = never. */
  idleMs?: number;
}

/** Who may still try a token: failures are counted per address. */
export interface AuthAdmission {
  admit(address: string): boolean;
  failed(address: string): void;
}

/** `1.2.3.4:5678` → `1.2.3.4`; `[::1]:5678` → `::1`. */
function hostOf(remote: string): string {
  return remote.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
}

/** The record of handled messages, so a resent one is not handled twice. */
export interface HandledMessages {
  seen(clientId: string, id: number): boolean;
  record(clientId: string, id: number): void;
  /** Writes the records made since the last flush; called once a message, or a batch, is recorded. */
  flush?(): void;
}

export interface SessionInput {
  /** `session-<n>`: unique within the server, used in logs and by the inspector. */
  id: string;
  transport: Transport;
  store: FileSink;
  log: Logger;
  limits: Limits;
  codecs: CodecFactory;
  timeouts: SessionTimeouts;
  /** Name and version the server announces. */
  agent: string;
  /** Whether and how received media may be opened on this machine. */
  media: OpenSettings;
  journal: HandledMessages;
  /** When set, clients must prove they hold this token before anything else. */
  token?: string;
  /** How long a wrong answer waits before it is refused (slows guessing). */
  authFailureDelayMs?: number;
  /**
   * Shuts out an address that keeps guessing: told about every wrong answer, and asked before an
   * answer is even compared, so connections opened in advance gain no extra guesses.
   */
  admission?: AuthAdmission;
}

/** What the media step was asked to do: open a just-saved upload, or a file stored earlier. */
export interface MediaRequest {
  /** Open at all? False for an upload whose sender did not ask. */
  wanted: boolean;
  /** The stored file, for a fresh upload; otherwise `name` is looked up in the store. */
  path?: string;
  name: string;
  settings: OpenSettings;
  rateLimited: boolean;
  store: FileSink;
}

/** The media step's result: undefined when nothing was asked. */
export interface MediaOutcome {
  outcome?: OpenOutcome;
}

/** Opens a stored file when asked, deciding its kind from its content; never fails. */
export async function dispatchMediaRequest(request: MediaRequest): Promise<MediaOutcome> {
  if (!request.wanted) return {};
  // Refuse before looking anything up: a server that does not open files says nothing about which exist.
  if (!request.settings.enabled) return { outcome: await openMedia('', request.settings, false) };
  let filePath = request.path;
  if (filePath === undefined) {
    try {
      filePath = await request.store.existing(request.name);
    } catch (err) {
      const error = err as FerryError;
      return { outcome: { opened: false, code: error.code ?? 'E_NOT_FOUND', message: error.message } };
    }
  }
  return { outcome: await openMedia(filePath, request.settings, request.rateLimited) };
}

interface CurrentUpload {
  offer: UploadOffer;
  saved?: SavedFile;
}

/** What the session was started with; it never changes. */
export interface SessionSettings {
  id: string;
  remote: string;
  transport: Transport;
  store: FileSink;
  log: Logger;
  limits: Limits;
  codecs: CodecFactory;
  timeouts: SessionTimeouts;
  agent: string;
  media: OpenSettings;
  journal: HandledMessages;
  token: string | undefined;
  authFailureDelayMs: number;
  admission: AuthAdmission | undefined;
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
  /** The challenge sent to this client, while it is being authenticated. */
  nonce: string | undefined;
  /** The client's id from its hello; messages are deduplicated per client id. */
  clientId: string | undefined;
  /** When this session last launched apps, for the per-minute limit. */
  launches: number[];
  /** Set by a server shutdown: finish what is in flight, then close. */
  draining: boolean;
}

export type SessionEvent = SessionConnectionEvent | FileReceiverEvent | { type: 'shutdown' };

export type SessionEmitted =
  | { type: 'message'; id: number; text: string }
  | { type: 'file-saved'; saved: SavedFile };

type TokenType = ServerToken['type'] | 'messages';
const conversationTokens: TokenType[] = ['hello', 'auth', 'message-header', 'message', 'messages', 'upload-offer', 'data', 'upload-end', 'open-request', 'bye'];

/** Transitions that refuse every conversation token a state does not expect. */
function refuseOthers(expected: TokenType[]) {
  const on: Partial<Record<TokenType, { target: string; actions: { type: 'refuseUnexpected' } }>> = {};
  for (const type of conversationTokens) {
    if (!expected.includes(type)) on[type] = { target: '#session.closing', actions: { type: 'refuseUnexpected' } };
  }
  return on;
}

/** Whether the upload under way is to be opened once stored. */
function uploadOpeningAsked(context: SessionContext): boolean {
  // An original client cannot ask; with opening enabled it gets the original tool's behaviour.
  return context.upload?.offer.open === true || (context.format === 'legacy' && context.settings.media.enabled);
}

/** Logs and journals the messages handled now, and logs the ones recognised as resends. */
function recordMessages(context: SessionContext, fresh: { id: number; text: string }[], resent: number[]): void {
  for (const m of fresh) {
    context.settings.log.info({ event: 'message', id: m.id, text: m.text }, 'message');
    if (context.clientId !== undefined) context.settings.journal.record(context.clientId, m.id);
  }
  // Written down before anything else happens to them (one write for a whole batch): once handled,
  // a message is known as handled, also by a server restarted after a SIGKILL.
  if (fresh.length > 0 && context.clientId !== undefined) context.settings.journal.flush?.();
  for (const id of resent) context.settings.log.debug({ event: 'duplicate-message', id }, 'message already handled; acknowledged again');
}

function errorReply(error: FerryError, id?: number): SessionReply {
  return { type: 'error', error: id === undefined ? { code: error.code, message: error.message } : { code: error.code, message: error.message, id } };
}

/**
 * One server session: a single connection from hello to close. It is fed tokens by its connection
 * actor (native and original format alike) and answers through it; uploads are streamed into the
 * store by a file receiver actor while this machine decides what is allowed when.
 */
export const sessionMachine = setup({
  types: {
    context: {} as SessionContext,
    events: {} as SessionEvent,
    input: {} as SessionInput,
    emitted: {} as SessionEmitted,
  },
  actors: {
    connection: sessionConnection,
    fileReceiver,
    /** Opens received media when asked; a pass-through until media opening exists. */
    dispatchMedia: fromPromise<MediaOutcome, MediaRequest>(({ input }) => dispatchMediaRequest(input)),
  },
  delays: {
    handshakeTimeout: ({ context }) => context.settings.timeouts.handshakeMs,
    authFailureDelay: ({ context }) => context.settings.authFailureDelayMs,
  },
  guards: {
    isLegacy: ({ context }) => context.format === 'legacy',
    shutOut: ({ context }) => context.settings.admission !== undefined && !context.settings.admission.admit(hostOf(context.settings.remote)),
    needsToken: ({ context }) => context.settings.token !== undefined && context.format !== 'legacy',
    answerMatches: ({ context, event }) =>
      event.type === 'auth' && context.settings.token !== undefined && context.nonce !== undefined && macMatches(context.settings.token, context.nonce, event.mac),
    isDraining: ({ context }) => context.draining,
    isUpload: ({ context }) => context.upload?.saved !== undefined,
    openingAsked: ({ context }) => context.upload !== undefined && uploadOpeningAsked(context),
    alreadyHandled: ({ context, event }) => event.type === 'message' && context.clientId !== undefined && context.settings.journal.seen(context.clientId, event.id),
    endedCleanly: ({ event }) => event.type === 'peer-ended' && event.clean,
  },
  actions: {
    pauseReading: sendTo('connection', { type: 'pause' }),
    resumeReading: sendTo('connection', { type: 'resume' }),
    assignFormat: assign({ format: ({ event }) => (event.type === 'format' ? event.format : undefined) }),
    markDraining: assign({ draining: true }),
    replyWelcome: sendTo('connection', ({ context }) => ({
      type: 'reply' as const,
      reply: {
        type: 'welcome' as const,
        info: { version: 1, agent: context.settings.agent, session: context.settings.id, maxMessage: context.settings.limits.maxMessage, maxFrame: context.settings.limits.maxFrame },
      },
    })),
    logHello: ({ context, event }) => {
      if (event.type !== 'hello') return;
      context.settings.log.info({ event: 'hello', format: context.format, agent: event.info.agent }, 'client said hello');
    },
    handleMessage: ({ context, event }) => {
      if (event.type === 'message') recordMessages(context, [{ id: event.id, text: event.text }], []);
    },
    /** A run of whole messages from one read: each is handled (or recognised as a resend) and acknowledged, in order. */
    handleMessages: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'messages') return;
      const fresh: { id: number; text: string }[] = [];
      const resent: number[] = [];
      let highest = -Infinity;
      for (const m of event.messages) {
        // The same rule as the journal's: an id at or below one already handled is a resend.
        if (context.clientId !== undefined && (m.id <= highest || context.settings.journal.seen(context.clientId, m.id))) resent.push(m.id);
        else {
          fresh.push({ id: m.id, text: m.text });
          highest = Math.max(highest, m.id);
        }
      }
      // Logged and journalled when the actions run, not while the transition is worked out.
      enqueue(() => recordMessages(context, fresh, resent));
      enqueue.sendTo('connection', {
        type: 'replies',
        replies: event.messages.map((m) => ({ type: 'message-ack' as const, id: m.id, text: m.text, raw: m.raw })),
      });
      for (const m of fresh) enqueue.emit({ type: 'message', id: m.id, text: m.text });
    }),
    logDuplicate: ({ context, event }) => {
      if (event.type === 'message') recordMessages(context, [], [event.id]);
    },
    sendChallenge: enqueueActions(({ enqueue }) => {
      const nonce = newNonce();
      enqueue.assign({ nonce });
      enqueue.sendTo('connection', { type: 'reply', reply: { type: 'challenge', nonce } });
    }),
    logAuthFailed: ({ context }) => {
      context.settings.log.warn({ event: 'auth-failed' }, 'a client answered the challenge with the wrong token');
    },
    reportAuthFailure: ({ context }) => context.settings.admission?.failed(hostOf(context.settings.remote)),
    refuseToken: sendTo('connection', {
      type: 'close',
      reply: { type: 'error', error: { code: 'E_AUTH_FAILED', message: 'The token was not accepted; check --token or FERRY_TOKEN.' } },
    }),
    assignClientId: assign({ clientId: ({ event }) => (event.type === 'hello' ? event.info.clientId : undefined) }),
    replyMessageAck: sendTo('connection', ({ event }) =>
      event.type === 'message'
        ? { type: 'reply' as const, reply: { type: 'message-ack' as const, id: event.id, text: event.text, raw: event.raw } }
        : { type: 'resume' as const },
    ),
    emitMessage: emit(({ event }) => (event.type === 'message' ? { type: 'message' as const, id: event.id, text: event.text } : { type: 'message' as const, id: -1, text: '' })),
    replyPong: sendTo('connection', ({ event }) => ({
      type: 'reply' as const,
      reply: { type: 'pong' as const, payload: event.type === 'ping' ? event.payload : Buffer.alloc(0) },
    })),
    assignUpload: assign({ upload: ({ event }) => (event.type === 'upload-offer' ? { offer: event.offer } : undefined) }),
    clearUpload: assign({ upload: undefined }),
    assignOpenRequest: assign({ openRequest: ({ event }) => (event.type === 'open-request' ? { id: event.id, name: event.name } : undefined) }),
    clearOpenRequest: assign({ openRequest: undefined }),
    recordMediaOutcome: enqueueActions(({ context, event, enqueue }) => {
      const outcome = (event as { output?: MediaOutcome }).output?.outcome;
      if (!outcome) return;
      const subject = context.upload?.saved?.savedAs ?? context.openRequest?.name;
      if (outcome.opened) {
        const now = Date.now();
        enqueue.assign({ launches: [...context.launches.filter((t) => now - t < 60_000), now] });
        context.settings.log.info({ event: 'media-opened', file: subject, kind: outcome.kind, mime: outcome.mime, app: outcome.app, pid: outcome.pid }, `opened ${subject} with ${outcome.app}`);
      } else {
        context.settings.log.info({ event: 'media-refused', file: subject, code: outcome.code, kind: outcome.kind, mime: outcome.mime }, outcome.message);
      }
    }),
    replyOpenResult: sendTo('connection', ({ context, event }) => {
      const outcome = (event as { output?: MediaOutcome }).output?.outcome ?? { opened: false, code: 'E_LAUNCH_FAILED', message: 'The file could not be opened.' };
      return { type: 'reply' as const, reply: { type: 'open-result' as const, id: context.openRequest?.id ?? 0, result: outcome } };
    }),
    replyUploadAccept: sendTo('connection', ({ context, event }) => ({
      type: 'reply' as const,
      reply: { type: 'upload-accept' as const, id: context.upload?.offer.id ?? 0, offset: event.type === 'file.ready' ? event.offset : 0 },
    })),
    logUploadStarted: ({ context, event }) => {
      if (event.type !== 'file.ready' || !context.upload) return;
      context.settings.log.info({ event: 'upload-started', id: context.upload.offer.id, name: event.name, size: context.upload.offer.size }, 'upload started');
    },
    forwardChunk: sendTo('receiver', ({ event }) => (event.type === 'data' ? event : { type: 'finish' as const })),
    finishFile: sendTo('receiver', ({ event }) =>
      event.type === 'upload-end' && event.sha256 !== undefined ? { type: 'finish' as const, sha256: event.sha256 } : { type: 'finish' as const },
    ),
    assignSaved: assign({
      upload: ({ context, event }) => (context.upload && event.type === 'file.saved' ? { ...context.upload, saved: event.saved } : context.upload),
    }),
    logFileSaved: ({ context, event }) => {
      if (event.type !== 'file.saved') return;
      const { savedAs, bytes, sha256, skipped } = event.saved;
      context.settings.log.info(
        { event: 'file-saved', id: context.upload?.offer.id, name: context.upload?.offer.name, savedAs, bytes, sha256, ...(skipped ? { skipped: true } : {}) },
        skipped ? 'file already stored, skipped' : 'file saved',
      );
    },
    emitFileSaved: emit(({ event }) => ({ type: 'file-saved' as const, saved: event.type === 'file.saved' ? event.saved : { savedAs: '', path: '', bytes: 0, sha256: '' } })),
    replyUploadDone: sendTo('connection', ({ context, event }) => {
      const saved = context.upload?.saved;
      const outcome = (event as { output?: MediaOutcome }).output?.outcome;
      return {
        type: 'reply' as const,
        reply: {
          type: 'upload-done' as const,
          result: {
            id: context.upload?.offer.id ?? 0,
            savedAs: saved?.savedAs ?? '',
            bytes: saved?.bytes ?? 0,
            sha256: saved?.sha256 ?? '',
            ...(saved?.skipped ? { skipped: true } : {}),
            ...(outcome ? { opened: outcome } : {}),
          },
        },
      };
    }),
    replyUploadError: sendTo('connection', ({ context, event }) => ({
      type: 'reply' as const,
      reply: errorReply((event as { error: FerryError }).error, context.upload?.offer.id),
    })),
    logUploadFailed: ({ context, event }) => {
      const error = (event as { error?: FerryError }).error;
      context.settings.log.warn({ event: 'upload-failed', id: context.upload?.offer.id, name: context.upload?.offer.name, code: error?.code }, error?.message ?? 'upload failed');
    },
    closeWithError: sendTo('connection', ({ context, event }) => ({
      type: 'close' as const,
      // A protocol error is the connection's, not the upload's: the client must not take it for a refused file.
      reply: errorReply((event as { error: FerryError }).error, event.type === 'protocol-error' ? undefined : context.upload?.offer.id),
    })),
    logProtocolError: ({ context, event }) => {
      if (event.type !== 'protocol-error') return;
      context.settings.log.warn({ event: 'protocol-error', code: event.error.code }, event.error.message);
    },
    refuseUnexpected: sendTo('connection', ({ context, event }) => {
      context.settings.log.warn({ event: 'protocol-error', code: 'E_UNEXPECTED_FRAME', frame: event.type }, `unexpected ${event.type} frame`);
      return {
        type: 'close' as const,
        reply: { type: 'error' as const, error: { code: 'E_UNEXPECTED_FRAME', message: `A ${event.type} frame is not allowed at this point; the client is broken or out of date.` } },
      };
    }),
    closeGracefully: sendTo('connection', { type: 'close', reply: { type: 'bye' } }),
    closeQuietly: sendTo('connection', { type: 'close' }),
    logHandshakeTimeout: ({ context }) => {
      context.settings.log.warn({ event: 'handshake-timeout', ms: context.settings.timeouts.handshakeMs }, 'no handshake in time; closing');
    },
    logPeerEnded: ({ context, event }) => {
      if (event.type !== 'peer-ended') return;
      if (event.clean) context.settings.log.debug({ event: 'peer-ended' }, 'client finished sending');
      else context.settings.log.warn({ event: 'peer-ended', clean: false, upload: context.upload?.offer.name }, 'client stopped in the middle of a frame');
    },
    logClosed: ({ context, event }) => {
      const error = event.type === 'peer-gone' ? event.error : undefined;
      context.settings.log.info({ event: 'disconnected', ...(error ? { reason: (error as NodeJS.ErrnoException).code ?? error.message } : {}) }, 'connection closed');
    },
  },
}).createMachine({
  id: 'session',
  context: ({ input }) => ({
    settings: {
      id: input.id,
      remote: input.transport.remote,
      transport: input.transport,
      store: input.store,
      log: input.log,
      limits: input.limits,
      codecs: input.codecs,
      timeouts: input.timeouts,
      agent: input.agent,
      media: input.media,
      journal: input.journal,
      token: input.token,
      authFailureDelayMs: input.authFailureDelayMs ?? 1_000,
      admission: input.admission,
    },
    format: undefined,
    upload: undefined,
    openRequest: undefined,
    nonce: undefined,
    clientId: undefined,
    launches: [],
    draining: false,
  }),
  invoke: {
    id: 'connection',
    src: 'connection',
    input: ({ context }) => ({
      transport: context.settings.transport,
      limits: context.settings.limits,
      codecs: context.settings.codecs,
      ...(context.settings.timeouts.heartbeatMs ? { heartbeatMs: context.settings.timeouts.heartbeatMs } : {}),
      ...(context.settings.timeouts.idleMs ? { idleMs: context.settings.timeouts.idleMs } : {}),
    }),
  },
  on: {
    format: { actions: 'assignFormat' },
    ping: { actions: 'replyPong' },
    pong: {},
    shutdown: { actions: 'markDraining' },
    'protocol-error': { target: '.closing', actions: ['logProtocolError', 'closeWithError'] },
    'peer-ended': { target: '.closing', actions: ['logPeerEnded', 'closeQuietly'] },
    'peer-gone': { target: '.closed' },
  },
  initial: 'handshaking',
  states: {
    handshaking: {
      description: 'Waiting for the client to say which protocol it speaks.',
      after: { handshakeTimeout: { target: 'closing', actions: ['logHandshakeTimeout', 'closeQuietly'] } },
      on: {
        hello: [
          { guard: 'needsToken', target: 'authenticating', actions: ['assignClientId', 'logHello', 'sendChallenge'] },
          { target: 'awaitingHeader', actions: ['assignClientId', 'logHello', 'replyWelcome'] },
        ],
        shutdown: { target: 'closing', actions: 'closeQuietly' },
        ...refuseOthers(['hello']),
      },
    },
    authenticating: {
      description: 'The server wants its token: a challenge went out, waiting for the answer.',
      after: { handshakeTimeout: { target: 'closing', actions: ['logHandshakeTimeout', 'closeQuietly'] } },
      on: {
        auth: [
          { guard: 'shutOut', target: 'refusing' },
          { guard: 'answerMatches', target: 'awaitingHeader', actions: 'replyWelcome' },
          { target: 'refusing', actions: ['logAuthFailed', 'reportAuthFailure'] },
        ],
        shutdown: { target: 'closing', actions: 'closeQuietly' },
        ...refuseOthers(['auth']),
      },
    },
    refusing: {
      description: 'The token was wrong: waiting a moment before saying so, to slow down guessing.',
      entry: 'pauseReading',
      after: { authFailureDelay: { target: 'closing', actions: 'refuseToken' } },
    },
    awaitingHeader: {
      description: 'Between commands: waiting for the next message or upload to begin.',
      entry: 'resumeReading',
      always: { guard: 'isDraining', target: 'closing', actions: 'closeGracefully' },
      on: {
        'message-header': { target: 'receivingBody' },
        messages: { actions: 'handleMessages' },
        'upload-offer': { target: 'receivingFile', actions: 'assignUpload' },
        'open-request': { target: 'dispatchingMedia', actions: 'assignOpenRequest' },
        bye: { target: 'closing', actions: 'closeGracefully' },
        shutdown: { target: 'closing', actions: ['markDraining', 'closeGracefully'] },
        ...refuseOthers(['message-header', 'messages', 'upload-offer', 'open-request', 'bye']),
      },
    },
    receivingBody: {
      description: 'A message has begun; waiting for the rest of its text.',
      on: {
        message: [
          { guard: 'alreadyHandled', target: 'awaitingHeader', actions: ['logDuplicate', 'replyMessageAck'] },
          { target: 'awaitingHeader', actions: ['handleMessage', 'replyMessageAck', 'emitMessage'] },
        ],
        ...refuseOthers(['message']),
      },
    },
    receivingFile: {
      description: 'An upload is under way: open the partial file, stream chunks into it, verify it.',
      invoke: {
        id: 'receiver',
        src: 'fileReceiver',
        input: ({ context }) => ({ store: context.settings.store, offer: context.upload!.offer, folders: context.format === 'native' }),
      },
      initial: 'opening',
      states: {
        opening: {
          description: 'Checking the name, size and free space, and opening the partial file.',
          entry: 'pauseReading',
          on: {
            'file.ready': { target: 'streaming', actions: ['logUploadStarted', 'replyUploadAccept'] },
            // The store holds this very file already (the offer named its SHA-256): done without any bytes.
            'file.saved': [
              { guard: 'openingAsked', target: '#session.dispatchingMedia', actions: ['assignSaved', 'logFileSaved', 'emitFileSaved'] },
              { target: '#session.awaitingHeader', actions: ['assignSaved', 'logFileSaved', 'emitFileSaved', 'replyUploadDone', 'clearUpload'] },
            ],
            'file.refused': [
              // The original format sends the bytes without waiting for an answer: the stream cannot continue.
              { guard: 'isLegacy', target: '#session.closing', actions: ['logUploadFailed', 'closeQuietly'] },
              { target: '#session.awaitingHeader', actions: ['logUploadFailed', 'replyUploadError', 'clearUpload'] },
            ],
          },
        },
        streaming: {
          description: 'Writing each chunk to the partial file as it arrives, hashing it on the way.',
          entry: 'resumeReading',
          on: {
            data: { actions: 'forwardChunk' },
            'file.busy': { actions: 'pauseReading' },
            'file.writable': { actions: 'resumeReading' },
            'upload-end': { target: 'verifying', actions: 'finishFile' },
            'file.failed': { target: '#session.closing', actions: ['logUploadFailed', 'closeWithError'] },
            ...refuseOthers(['data', 'upload-end']),
          },
        },
        verifying: {
          description: 'All bytes are in: checking size and SHA-256, then moving the file to its final name.',
          entry: 'pauseReading',
          on: {
            'file.saved': [
              { guard: 'openingAsked', target: '#session.dispatchingMedia', actions: ['assignSaved', 'logFileSaved', 'emitFileSaved'] },
              // Nothing to open: answer at once.
              { target: '#session.awaitingHeader', actions: ['assignSaved', 'logFileSaved', 'emitFileSaved', 'replyUploadDone', 'clearUpload'] },
            ],
            'file.failed': [
              { guard: 'isLegacy', target: '#session.closing', actions: ['logUploadFailed', 'closeQuietly'] },
              { target: '#session.awaitingHeader', actions: ['logUploadFailed', 'replyUploadError', 'clearUpload'] },
            ],
          },
        },
      },
    },
    dispatchingMedia: {
      description: 'Opening a stored file in an app when the client asked for that (or refusing, and saying why), then answering.',
      entry: 'pauseReading',
      invoke: {
        src: 'dispatchMedia',
        input: ({ context }): MediaRequest => {
          const saved = context.upload?.saved;
          const wanted = saved ? uploadOpeningAsked(context) : true;
          return {
            wanted,
            ...(saved ? { path: saved.path } : {}),
            name: saved?.savedAs ?? context.openRequest?.name ?? '',
            settings: context.settings.media,
            rateLimited: !launchAllowed(context.launches, Date.now(), context.settings.media.perMinute),
            store: context.settings.store,
          };
        },
        onDone: [
          { guard: 'isUpload', target: 'awaitingHeader', actions: ['recordMediaOutcome', 'replyUploadDone', 'clearUpload'] },
          { target: 'awaitingHeader', actions: ['recordMediaOutcome', 'replyOpenResult', 'clearOpenRequest'] },
        ],
        onError: [
          { guard: 'isUpload', target: 'awaitingHeader', actions: ['replyUploadDone', 'clearUpload'] },
          { target: 'awaitingHeader', actions: ['replyOpenResult', 'clearOpenRequest'] },
        ],
      },
    },
    closing: {
      description: 'Flushing the last reply and waiting for the socket to close.',
      on: {
        'peer-ended': {},
        'protocol-error': {},
        shutdown: {},
      },
    },
    closed: {
      description: 'The connection is gone; the session is over.',
      type: 'final',
      entry: 'logClosed',
    },
  },
});

export type SessionMachine = typeof sessionMachine;
