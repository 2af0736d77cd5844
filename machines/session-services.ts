/**
 * What a session machine needs from the world, and the implementations of its side effects built
 * over it. The machine itself holds only data; a server provides these once, for all its sessions
 * (`sessionLogic(services)`), so no socket, logger, store or secret ever sits in a session's context.
 */
import { enqueueActions, fromCallback } from 'xstate';
import { pino, type Logger } from 'pino';
import type { FerryError } from '../transport/errors.js';
import type { Transport } from '../transport/transport.js';
import { runSessionConnection, nativeOnly, type CodecFactory, type SessionConnectionCommand, type SessionConnectionEvent, type Timers } from './actors/session-connection.js';
import { fileReceiverFor, type FileSink } from './actors/file-receiver.js';
import { mediaDispatcher, type MediaOutcome } from './actors/media-dispatch.js';
import type { SessionContext, SessionEmitted, SessionEvent } from './session.types.js';

/** The record of handled messages, so a resent one is not handled twice. */
export interface HandledMessages {
  seen(clientId: string, id: number): boolean;
  record(clientId: string, id: number): void;
  /** Writes the records made since the last flush; called once a message, or a batch, is recorded. */
  flush?(): void;
}

/** Who may still try a token: failures are counted per address. */
export interface AuthAdmission {
  admit(address: string): boolean;
  failed(address: string): void;
}

/** One accepted connection's own handles: its socket and its logger. */
export interface SessionLink {
  transport: Transport;
  log: Logger;
}

/** Everything a server's sessions share, and how each finds its own connection. */
export interface SessionServices {
  store: FileSink;
  journal: HandledMessages;
  codecs: CodecFactory;
  /** Logs what happens outside any one session. */
  log: Logger;
  /** The socket and logger of session `id`, while it runs. */
  linkOf(id: string): SessionLink | undefined;
  /** Checks an answer to a challenge; closes over the token, which never enters a machine. */
  answerMatches?(nonce: string, mac: string): boolean;
  /** Shuts out addresses that keep guessing the token. */
  admission?: AuthAdmission;
  now(): number;
  /** Times each connection's handshake (default: the global timers); tests pass a `SimulatedClock`. */
  clock?: Timers;
}

/** Services that connect nothing: the bare machine (diagrams, inspection of the definition) runs on these. */
export const detachedServices: SessionServices = {
  store: {
    begin: () => Promise.reject(new Error('no store')),
    existing: () => Promise.reject(new Error('no store')),
  },
  journal: { seen: () => false, record: () => undefined },
  codecs: nativeOnly,
  log: pino({ level: 'silent' }),
  linkOf: () => undefined,
  now: () => Date.now(),
};

/** `1.2.3.4:5678` → `1.2.3.4`; `[::1]:5678` → `::1`. */
export function hostOf(remote: string): string {
  return remote.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
}

interface Message {
  id: number;
  text: string;
}

/**
 * Splits messages into the ones to handle now and the ids of resends: a message is a resend when
 * `seen` says so, or when its id is at or below one handled before it in the same run (the
 * journal's own rule).
 */
export function splitResends(messages: readonly Message[], seen: (id: number) => boolean): { fresh: Message[]; resent: number[] } {
  const fresh: Message[] = [];
  const resent: number[] = [];
  let highest = -Infinity;
  for (const m of messages) {
    if (m.id <= highest || seen(m.id)) resent.push(m.id);
    else {
      fresh.push({ id: m.id, text: m.text });
      highest = Math.max(highest, m.id);
    }
  }
  return { fresh, resent };
}

interface Args {
  context: SessionContext;
  event: SessionEvent;
}

/** The session's actors, guards and effectful actions, bound to `services`. */
export function sessionImplementations(services: SessionServices) {
  const logOf = (context: SessionContext): Logger => services.linkOf(context.settings.id)?.log ?? services.log;
  const record = (context: SessionContext, fresh: readonly { id: number; text: string }[], resent: readonly number[]) => {
    const log = logOf(context);
    for (const m of fresh) {
      log.info({ event: 'message', id: m.id, text: m.text }, 'message');
      if (context.clientId !== undefined) services.journal.record(context.clientId, m.id);
    }
    // Written down before anything else happens to them (one write for a whole batch): once handled,
    // a message is known as handled, also by a server restarted after a SIGKILL.
    if (fresh.length > 0 && context.clientId !== undefined) services.journal.flush?.();
    for (const id of resent) log.debug({ event: 'duplicate-message', id }, 'message already handled; acknowledged again');
    // A logger that holds lines back (the CLI's writes once per turn of the event loop) writes them
    // now: the acknowledgements leave after this step, and a message's line must not trail its ack.
    log.flush();
  };

  return {
    actors: {
      connection: fromCallback<
        SessionConnectionCommand,
        { id: string; limits: SessionContext['settings']['limits']; handshakeMs: number; heartbeatMs?: number; idleMs?: number },
        SessionConnectionEvent
      >(
        ({ input, sendBack, receive }) => {
          const link = services.linkOf(input.id);
          if (!link) {
            sendBack({ type: 'peer-gone' });
            return;
          }
          return runSessionConnection({
            input: {
              transport: link.transport,
              codecs: services.codecs,
              limits: input.limits,
              handshakeMs: input.handshakeMs,
              heartbeatMs: input.heartbeatMs,
              idleMs: input.idleMs,
              ...(services.clock ? { clock: services.clock } : {}),
            },
            sendBack,
            receive,
          });
        },
      ),
      fileReceiver: fileReceiverFor(services.store),
      dispatchMedia: mediaDispatcher({ store: services.store, now: () => services.now() }),
    },
    guards: {
      shutOut: ({ context }: Args) => services.admission !== undefined && !services.admission.admit(hostOf(context.settings.remote)),
      answerMatches: ({ context }: Args, params: { mac: string }) =>
        services.answerMatches !== undefined && context.settings.nonce !== undefined && services.answerMatches(context.settings.nonce, params.mac),
      handled: ({ context }: Args, params: { id: number }) => context.clientId !== undefined && services.journal.seen(context.clientId, params.id),
    },
    actions: {
      /** Journals and logs the messages handled now, and logs the resends. */
      recordMessages: ({ context }: Args, params: { messages: readonly Message[] }) => {
        const clientId = context.clientId;
        const { fresh, resent } = clientId === undefined ? { fresh: params.messages, resent: [] } : splitResends(params.messages, (id) => services.journal.seen(clientId, id));
        record(context, fresh, resent);
      },
      /**
       * Acknowledges a run of whole messages from one read, in order, and tells the world of the new
       * ones. The journal is only read here; `recordMessages`, listed after it, writes it.
       */
      answerMessages: enqueueActions<SessionContext, SessionEvent, unknown, SessionEvent, never, never, never, never, SessionEmitted>(({ context, event, enqueue }) => {
        if (event.type !== 'messages') return;
        const clientId = context.clientId;
        const fresh = clientId === undefined ? event.messages : splitResends(event.messages, (id) => services.journal.seen(clientId, id)).fresh;
        enqueue.sendTo('connection', { type: 'replies', replies: event.messages.map((m) => ({ type: 'message-ack' as const, id: m.id, text: m.text, raw: m.raw })) });
        if (fresh.length > 0) enqueue.emit({ type: 'messages', messages: fresh.map((m) => ({ id: m.id, text: m.text })) });
      }),
      logHello: ({ context }: Args, params: { agent: string; format: SessionContext['format'] }) => {
        logOf(context).info({ event: 'hello', format: params.format, agent: params.agent }, 'client said hello');
      },
      logAuthFailed: ({ context }: Args) => {
        logOf(context).warn({ event: 'auth-failed' }, 'a client answered the challenge with the wrong token');
      },
      reportAuthFailure: ({ context }: Args) => services.admission?.failed(hostOf(context.settings.remote)),
      logMediaOutcome: ({ context }: Args, params: MediaOutcome) => {
        const outcome = params.outcome;
        if (!outcome) return;
        const subject = context.upload?.saved?.savedAs ?? context.openRequest?.name;
        if (outcome.opened) {
          logOf(context).info({ event: 'media-opened', file: subject, kind: outcome.kind, mime: outcome.mime, app: outcome.app, pid: outcome.pid }, `opened ${subject} with ${outcome.app}`);
        } else {
          logOf(context).info({ event: 'media-refused', file: subject, code: outcome.code, kind: outcome.kind, mime: outcome.mime }, outcome.message);
        }
      },
      logUploadStarted: ({ context }: Args, params: { name: string }) => {
        logOf(context).info({ event: 'upload-started', id: context.upload?.offer.id, name: params.name, size: context.upload?.offer.size }, 'upload started');
      },
      /** Logs the file `assignSaved` just put in the context. */
      logFileSaved: ({ context }: Args) => {
        const saved = context.upload?.saved;
        if (!saved) return;
        const { savedAs, bytes, sha256, skipped } = saved;
        logOf(context).info(
          { event: 'file-saved', id: context.upload?.offer.id, name: context.upload?.offer.name, savedAs, bytes, sha256, ...(skipped ? { skipped: true } : {}) },
          skipped ? 'file already stored, skipped' : 'file saved',
        );
      },
      logUploadFailed: ({ context }: Args, params: { error: FerryError }) => {
        logOf(context).warn({ event: 'upload-failed', id: context.upload?.offer.id, name: context.upload?.offer.name, code: params.error.code }, params.error.message);
      },
      logProtocolError: ({ context }: Args, params: { error: FerryError }) => {
        logOf(context).warn({ event: 'protocol-error', code: params.error.code }, params.error.message);
      },
      logUnexpected: ({ context, event }: Args) => {
        logOf(context).warn({ event: 'protocol-error', code: 'E_UNEXPECTED_FRAME', frame: event.type }, `unexpected ${event.type} frame`);
      },
      logHandshakeTimeout: ({ context }: Args) => {
        logOf(context).warn({ event: 'handshake-timeout', ms: context.settings.timeouts.handshakeMs }, 'no handshake in time; closing');
      },
      logPeerEnded: ({ context }: Args, params: { clean: boolean }) => {
        if (params.clean) logOf(context).debug({ event: 'peer-ended' }, 'client finished sending');
        else logOf(context).warn({ event: 'peer-ended', clean: false, upload: context.upload?.offer.name }, 'client stopped in the middle of a frame');
      },
      logClosed: ({ context, event }: Args) => {
        const error = event.type === 'peer-gone' ? event.error : undefined;
        logOf(context).info({ event: 'disconnected', ...(error ? { reason: (error as NodeJS.ErrnoException).code ?? error.message } : {}) }, 'connection closed');
      },
    },
  };
}
