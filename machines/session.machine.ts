import { assign, emit, sendTo, setup } from 'xstate';
import type { FerryError } from '../transport/errors.js';
import type { UploadOffer } from '../transport/frames.js';
import type { SessionReply } from '../transport/replies.js';
import type { SavedFile } from '../media/upload-store.js';
import type { MediaOutcome, MediaRequest } from './actors/media-dispatch.js';
import type { DataReceiver } from './actors/session-connection.js';
import { detachedServices, sessionImplementations, type SessionServices } from './session-services.js';
import type { SessionContext, SessionEmitted, SessionEvent, SessionSettings } from './session.types.js';

export type { SessionContext, SessionDefaults, SessionEmitted, SessionEvent, SessionSettings, SessionTimeouts } from './session.types.js';
export type { AuthAdmission, HandledMessages, SessionLink, SessionServices } from './session-services.js';
export type { MediaOutcome, MediaRequest } from './actors/media-dispatch.js';

type TokenType = 'hello' | 'auth' | 'message-header' | 'message' | 'messages' | 'upload-offer' | 'data' | 'upload-end' | 'open-request' | 'bye';
const conversationTokens: TokenType[] = ['hello', 'auth', 'message-header', 'message', 'messages', 'upload-offer', 'data', 'upload-end', 'open-request', 'bye'];

/** Transitions that refuse every conversation token a state does not expect. */
function refuseOthers(expected: TokenType[]) {
  const on: Partial<Record<TokenType, { target: string; actions: readonly [{ type: 'logUnexpected' }, { type: 'refuseUnexpected' }] }>> = {};
  for (const type of conversationTokens) {
    if (!expected.includes(type)) on[type] = { target: '#session.closing', actions: [{ type: 'logUnexpected' }, { type: 'refuseUnexpected' }] as const };
  }
  return on;
}

/** Whether the upload under way is to be opened once stored. */
function uploadOpeningAsked(context: SessionContext): boolean {
  // An original client cannot ask; with opening enabled it gets the original tool's behaviour.
  return context.upload?.offer.open === true || (context.format === 'legacy' && context.settings.media.enabled);
}

const savedOf = ({ event }: { event: { saved: SavedFile } }) => ({ saved: event.saved });
const errorOf = ({ event }: { event: { error: FerryError } }) => ({ error: event.error });

/**
 * The file is stored (verified, or held already): open it first when that was asked, else answer at
 * once. The same whether it was found while opening or stored after verifying.
 */
const fileStored = [
  { guard: 'openingAsked', target: '#session.dispatchingMedia', actions: [{ type: 'assignSaved', params: savedOf }, 'logFileSaved', 'emitFileSaved'] },
  {
    target: '#session.awaitingHeader',
    actions: [{ type: 'assignSaved', params: savedOf }, 'logFileSaved', 'emitFileSaved', { type: 'replyUploadDone', params: {} }, 'clearUpload'],
  },
] as const;

/**
 * An upload the store refused or could not verify. The original format sends the bytes without
 * waiting for an answer, so its stream cannot continue and the connection closes; a native client is
 * told, with the upload's id, and the session goes on.
 */
const uploadRefused = [
  { guard: 'isLegacy', target: '#session.closing', actions: [{ type: 'logUploadFailed', params: errorOf }, 'closeQuietly'] },
  { target: '#session.awaitingHeader', actions: [{ type: 'logUploadFailed', params: errorOf }, { type: 'replyUploadError', params: errorOf }, 'clearUpload'] },
] as const;

function errorReply(error: FerryError, id?: number): SessionReply {
  return { type: 'error', error: id === undefined ? { code: error.code, message: error.message } : { code: error.code, message: error.message, id } };
}

const effects = sessionImplementations(detachedServices);

/**
 * One server session: a single connection from hello to close. It is fed tokens by its connection
 * actor (native and original format alike) and answers through it; uploads are streamed into the
 * store by a file receiver actor while this machine decides what is allowed when. Its context is
 * data only: the socket, logger, store, journal and token come in through `sessionLogic(services)`.
 */
export const sessionMachine = setup({
  types: {
    context: {} as SessionContext,
    events: {} as SessionEvent,
    input: {} as SessionSettings,
    emitted: {} as SessionEmitted,
  },
  actors: effects.actors,
  delays: {
    authFailureDelay: ({ context }) => context.settings.authFailureDelayMs,
  },
  guards: {
    // Asked of the world, implemented by sessionImplementations().
    shutOut: () => false,
    answerMatches: (_, _params: { mac: string }) => false,
    handled: (_, _params: { id: number }) => false,
    isLegacy: ({ context }) => context.format === 'legacy',
    needsToken: ({ context }, params: { format: SessionContext['format'] }) => context.settings.authRequired && params.format !== 'legacy',
    isDraining: ({ context }) => context.draining,
    isUpload: ({ context }) => context.upload?.saved !== undefined,
    openingAsked: ({ context }) => context.upload !== undefined && uploadOpeningAsked(context),
  },
  actions: {
    // Side effects, declared here and implemented over a server's services by sessionImplementations().
    recordMessages: (_, _params: { messages: readonly { id: number; text: string }[] }) => {},
    logHello: (_, _params: { agent: string; format: SessionContext['format'] }) => {},
    logAuthFailed: () => {},
    reportAuthFailure: () => {},
    logMediaOutcome: (_, _params: MediaOutcome) => {},
    logUploadStarted: (_, _params: { name: string }) => {},
    logFileSaved: () => {},
    logUploadFailed: (_, _params: { error: FerryError }) => {},
    logProtocolError: (_, _params: { error: FerryError }) => {},
    logUnexpected: () => {},
    logHandshakeTimeout: () => {},
    logPeerEnded: (_, _params: { clean: boolean }) => {},
    logClosed: () => {},
    answerMessages: () => {},
    pauseReading: sendTo('connection', { type: 'pause' }),
    resumeReading: sendTo('connection', { type: 'resume' }),
    /** What the hello says: who the client is (messages are deduplicated per client id), and how it talks. */
    assignHello: assign((_, params: { clientId: string | undefined; format: SessionContext['format'] }) => params),
    markDraining: assign({ draining: true }),
    replyWelcome: sendTo('connection', ({ context }) => ({
      type: 'reply' as const,
      reply: {
        type: 'welcome' as const,
        info: { version: 1, agent: context.settings.agent, session: context.settings.id, maxMessage: context.settings.limits.maxMessage, maxFrame: context.settings.limits.maxFrame },
      },
    })),
    replyChallenge: sendTo('connection', ({ context }) => ({ type: 'reply' as const, reply: { type: 'challenge' as const, nonce: context.settings.nonce ?? '' } })),
    refuseToken: sendTo('connection', {
      type: 'close',
      reply: { type: 'error', error: { code: 'E_AUTH_FAILED', message: 'The token was not accepted; check --token or FERRY_TOKEN.' } },
    }),
    replyMessageAck: sendTo('connection', (_, params: { id: number; text: string; raw?: Buffer }) => ({
      type: 'reply' as const,
      reply: { type: 'message-ack' as const, ...params },
    })),
    emitMessage: emit((_, params: { id: number; text: string }) => ({ type: 'messages' as const, messages: [params] })),
    replyPong: sendTo('connection', (_, params: { payload: Buffer }) => ({ type: 'reply' as const, reply: { type: 'pong' as const, payload: params.payload } })),
    assignUpload: assign({ upload: (_, params: { offer: UploadOffer }) => ({ offer: params.offer }) }),
    clearUpload: assign({ upload: undefined }),
    assignOpenRequest: assign({ openRequest: (_, params: { id: number; name: string }) => params }),
    clearOpenRequest: assign({ openRequest: undefined }),
    /** Counts a launch against the per-minute budget, at the time the media step reported. */
    assignLaunch: assign({ launches: ({ context }, params: MediaOutcome) => (params.at === undefined ? context.launches : [...context.launches.filter((t) => params.at! - t < 60_000), params.at]) }),
    replyOpenResult: sendTo('connection', ({ context }, params: MediaOutcome) => ({
      type: 'reply' as const,
      reply: { type: 'open-result' as const, id: context.openRequest?.id ?? 0, result: params.outcome ?? { opened: false as const, code: 'E_LAUNCH_FAILED' as const, message: 'The file could not be opened.' } },
    })),
    replyUploadAccept: sendTo('connection', ({ context }, params: { offset: number }) => ({
      type: 'reply' as const,
      reply: { type: 'upload-accept' as const, id: context.upload?.offer.id ?? 0, offset: params.offset },
    })),
    forwardChunk: sendTo('receiver', (_, params: { chunk: Buffer }) => ({ type: 'data' as const, chunk: params.chunk })),
    /** From here the connection hands upload bytes to the receiver itself, as `forwardChunk` would. */
    routeData: sendTo('connection', (_, params: { to: DataReceiver | undefined }) => (params.to ? { type: 'route-data' as const, to: params.to } : { type: 'route-data' as const })),
    unrouteData: sendTo('connection', { type: 'route-data' }),
    finishFile: sendTo('receiver', (_, params: { sha256: string | undefined }) => (params.sha256 !== undefined ? { type: 'finish' as const, sha256: params.sha256 } : { type: 'finish' as const })),
    assignSaved: assign({ upload: ({ context }, params: { saved: SavedFile }) => (context.upload ? { ...context.upload, saved: params.saved } : context.upload) }),
    /** Tells the world of the file just stored (`assignSaved` put it in the context). */
    emitFileSaved: emit(({ context }) => ({ type: 'file-saved' as const, saved: context.upload!.saved! })),
    replyUploadDone: sendTo('connection', ({ context }, params: MediaOutcome) => {
      const saved = context.upload!.saved!;
      return {
        type: 'reply' as const,
        reply: {
          type: 'upload-done' as const,
          result: {
            id: context.upload!.offer.id,
            savedAs: saved.savedAs,
            bytes: saved.bytes,
            sha256: saved.sha256,
            ...(saved.skipped ? { skipped: true } : {}),
            ...(params.outcome ? { opened: params.outcome } : {}),
          },
        },
      };
    }),
    replyUploadError: sendTo('connection', ({ context }, params: { error: FerryError }) => ({ type: 'reply' as const, reply: errorReply(params.error, context.upload?.offer.id) })),
    /** A protocol error is the connection's, not the upload's: its reply never carries the upload id. */
    closeWithError: sendTo('connection', ({ context }, params: { error: FerryError; upload: boolean }) => ({
      type: 'close' as const,
      reply: errorReply(params.error, params.upload ? context.upload?.offer.id : undefined),
    })),
    refuseUnexpected: sendTo('connection', ({ event }) => ({
      type: 'close' as const,
      reply: { type: 'error' as const, error: { code: 'E_UNEXPECTED_FRAME', message: `A ${event.type} frame is not allowed at this point; the client is broken or out of date.` } },
    })),
    closeGracefully: sendTo('connection', { type: 'close', reply: { type: 'bye' } }),
    closeQuietly: sendTo('connection', { type: 'close' }),
  },
}).createMachine({
  id: 'session',
  context: ({ input }) => ({
    settings: input,
    format: undefined,
    upload: undefined,
    openRequest: undefined,
    clientId: undefined,
    launches: [],
    draining: false,
  }),
  invoke: {
    id: 'connection',
    src: 'connection',
    input: ({ context }) => ({
      id: context.settings.id,
      limits: context.settings.limits,
      // The connection times the handshake: it reports `handshake.expired` unless a welcome went out first.
      handshakeMs: context.settings.timeouts.handshakeMs,
      ...(context.settings.timeouts.heartbeatMs ? { heartbeatMs: context.settings.timeouts.heartbeatMs } : {}),
      ...(context.settings.timeouts.idleMs ? { idleMs: context.settings.timeouts.idleMs } : {}),
    }),
  },
  on: {
    ping: { actions: { type: 'replyPong', params: ({ event }) => ({ payload: event.payload }) } },
    pong: {},
    shutdown: { actions: 'markDraining' },
    'protocol-error': {
      target: '.closing',
      actions: [
        { type: 'logProtocolError', params: ({ event }) => ({ error: event.error }) },
        { type: 'closeWithError', params: ({ event }) => ({ error: event.error, upload: false }) },
      ],
    },
    'peer-ended': { target: '.closing', actions: [{ type: 'logPeerEnded', params: ({ event }) => ({ clean: event.clean }) }, 'closeQuietly'] },
    'peer-gone': { target: '.closed' },
  },
  initial: 'handshaking',
  states: {
    handshaking: {
      description: 'Waiting for the client to say which protocol it speaks.',
      on: {
        'handshake.expired': { target: 'closing', actions: ['logHandshakeTimeout', 'closeQuietly'] },
        hello: [
          {
            guard: { type: 'needsToken', params: ({ event }) => ({ format: event.format ?? 'native' }) },
            target: 'authenticating',
            actions: [
              { type: 'assignHello', params: ({ event }) => ({ clientId: event.info.clientId, format: event.format ?? 'native' }) },
              { type: 'logHello', params: ({ event }) => ({ agent: event.info.agent, format: event.format ?? 'native' }) },
              'replyChallenge',
            ],
          },
          {
            target: 'awaitingHeader',
            actions: [
              { type: 'assignHello', params: ({ event }) => ({ clientId: event.info.clientId, format: event.format ?? 'native' }) },
              { type: 'logHello', params: ({ event }) => ({ agent: event.info.agent, format: event.format ?? 'native' }) },
              'replyWelcome',
            ],
          },
        ],
        shutdown: { target: 'closing', actions: 'closeQuietly' },
        ...refuseOthers(['hello']),
      },
    },
    authenticating: {
      description: 'The server wants its token: a challenge went out, waiting for the answer.',
      on: {
        'handshake.expired': { target: 'closing', actions: ['logHandshakeTimeout', 'closeQuietly'] },
        auth: [
          { guard: 'shutOut', target: 'refusing' },
          { guard: { type: 'answerMatches', params: ({ event }) => ({ mac: event.mac }) }, target: 'awaitingHeader', actions: 'replyWelcome' },
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
        // answerMessages first: it reads the journal that recordMessages writes. Its acknowledgements
        // still leave after the journal is flushed, since replies are sent once the step is done.
        messages: { actions: ['answerMessages', { type: 'recordMessages', params: ({ event }) => ({ messages: event.messages }) }] },
        'upload-offer': { target: 'receivingFile', actions: { type: 'assignUpload', params: ({ event }) => ({ offer: event.offer }) } },
        'open-request': { target: 'dispatchingMedia', actions: { type: 'assignOpenRequest', params: ({ event }) => ({ id: event.id, name: event.name }) } },
        bye: { target: 'closing', actions: 'closeGracefully' },
        shutdown: { target: 'closing', actions: ['markDraining', 'closeGracefully'] },
        ...refuseOthers(['message-header', 'messages', 'upload-offer', 'open-request', 'bye']),
      },
    },
    receivingBody: {
      description: 'A message has begun; waiting for the rest of its text.',
      on: {
        message: [
          {
            guard: { type: 'handled', params: ({ event }) => ({ id: event.id }) },
            target: 'awaitingHeader',
            actions: [
              { type: 'recordMessages', params: ({ event }) => ({ messages: [event] }) },
              { type: 'replyMessageAck', params: ({ event }) => ({ id: event.id, text: event.text, raw: event.raw }) },
            ],
          },
          {
            target: 'awaitingHeader',
            actions: [
              { type: 'recordMessages', params: ({ event }) => ({ messages: [event] }) },
              { type: 'replyMessageAck', params: ({ event }) => ({ id: event.id, text: event.text, raw: event.raw }) },
              { type: 'emitMessage', params: ({ event }) => ({ id: event.id, text: event.text }) },
            ],
          },
        ],
        ...refuseOthers(['message']),
      },
    },
    receivingFile: {
      description: 'An upload is under way: open the partial file, stream chunks into it, verify it.',
      invoke: {
        id: 'receiver',
        src: 'fileReceiver',
        // Native offers may name a relative path with folders; the original format keeps base names.
        input: ({ context }) => ({ offer: context.upload!.offer, folders: context.format === 'native' }),
      },
      initial: 'opening',
      states: {
        opening: {
          description: 'Checking the name, size and free space, and opening the partial file.',
          entry: 'pauseReading',
          on: {
            'file.ready': {
              target: 'streaming',
              actions: [
                { type: 'logUploadStarted', params: ({ event }) => ({ name: event.name }) },
                // The connection hands the chunks to the receiver while `streaming` lasts.
                { type: 'routeData', params: ({ event }) => ({ to: event.receiver }) },
                { type: 'replyUploadAccept', params: ({ event }) => ({ offset: event.offset }) },
              ],
            },
            // The store holds this very file already (the offer named its SHA-256): done without any bytes.
            'file.saved': fileStored,
            'file.refused': uploadRefused,
          },
        },
        streaming: {
          description: 'Writing each chunk to the partial file as it arrives, hashing it on the way.',
          entry: 'resumeReading',
          exit: 'unrouteData',
          on: {
            data: { actions: { type: 'forwardChunk', params: ({ event }) => ({ chunk: event.chunk }) } },
            'file.busy': { actions: 'pauseReading' },
            'file.writable': { actions: 'resumeReading' },
            'upload-end': { target: 'verifying', actions: { type: 'finishFile', params: ({ event }) => ({ sha256: event.sha256 }) } },
            'file.failed': {
              target: '#session.closing',
              actions: [
                { type: 'logUploadFailed', params: ({ event }) => ({ error: event.error }) },
                { type: 'closeWithError', params: ({ event }) => ({ error: event.error, upload: true }) },
              ],
            },
            ...refuseOthers(['data', 'upload-end']),
          },
        },
        verifying: {
          description: 'All bytes are in: checking size and SHA-256, then moving the file to its final name.',
          entry: 'pauseReading',
          on: {
            'file.saved': fileStored,
            'file.failed': uploadRefused,
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
          return {
            wanted: saved ? uploadOpeningAsked(context) : true,
            ...(saved ? { path: saved.path } : {}),
            name: saved?.savedAs ?? context.openRequest?.name ?? '',
            settings: context.settings.media,
            launches: context.launches,
          };
        },
        onDone: [
          {
            guard: 'isUpload',
            target: 'awaitingHeader',
            actions: [
              { type: 'logMediaOutcome', params: ({ event }) => event.output },
              { type: 'assignLaunch', params: ({ event }) => event.output },
              { type: 'replyUploadDone', params: ({ event }) => event.output },
              'clearUpload',
            ],
          },
          {
            target: 'awaitingHeader',
            actions: [
              { type: 'logMediaOutcome', params: ({ event }) => event.output },
              { type: 'assignLaunch', params: ({ event }) => event.output },
              { type: 'replyOpenResult', params: ({ event }) => event.output },
              'clearOpenRequest',
            ],
          },
        ],
        onError: [
          { guard: 'isUpload', target: 'awaitingHeader', actions: [{ type: 'replyUploadDone', params: {} }, 'clearUpload'] },
          { target: 'awaitingHeader', actions: [{ type: 'replyOpenResult', params: {} }, 'clearOpenRequest'] },
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

/** The session machine bound to a server's services: made once per server, shared by all its sessions. */
export function sessionLogic(services: SessionServices): SessionMachine {
  return sessionMachine.provide(sessionImplementations(services));
}
