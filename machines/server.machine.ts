import { assign, emit, enqueueActions, sendTo, setup, stopChild } from 'xstate';
import type { Logger } from 'pino';
import type { Limits } from '../transport/frames.js';
import type { Transport } from '../transport/transport.js';
import { listener, type Admission, type ListenerEvent } from './actors/listener.js';
import type { CodecFactory } from './actors/session-connection.js';
import type { FileSink } from './actors/file-receiver.js';
import { sessionMachine, type HandledMessages, type SessionTimeouts } from './session.machine.js';
import type { OpenSettings } from '../media/opener.js';

export interface ServerMachineInput {
  host: string;
  port: number;
  store: FileSink;
  log: Logger;
  limits: Limits;
  codecs: CodecFactory;
  timeouts: SessionTimeouts;
  agent: string;
  /** How long a shutdown waits for transfers in flight before cutting them off. */
  graceMs: number;
  media: OpenSettings;
  journal: HandledMessages;
  tls?: { cert: Buffer; key: Buffer };
  maxConnections?: number;
  /** Clients must prove they hold this token (challenge and response). */
  token?: string;
  /** Shuts out addresses that keep failing to authenticate. */
  admission?: Admission & { failed(address: string): void };
}

/**
 * The server's context. What it was started with sits in `settings`, apart from what changes: XState
 * copies the context on every assign, and V8 gives a copy with 20 or more keys slow dictionary-mode
 * properties.
 */
export interface ServerContext {
  settings: ServerMachineInput;
  address: { host: string; port: number } | undefined;
  error: Error | undefined;
  /** Sessions started so far; numbers each new one. */
  started: number;
  /** Sessions still running. */
  active: number;
}

export type ServerEvent =
  | ListenerEvent
  | { type: 'stop' }
  | { type: 'xstate.done.actor.*'; actorId: string }
  | { type: 'xstate.error.actor.*'; actorId: string; error: unknown };

export type ServerEmitted =
  | { type: 'listening'; host: string; port: number }
  | { type: 'stopped' }
  | { type: 'failed'; error: Error };

/**
 * The server: owns the listening socket, spawns one session machine per accepted connection, and
 * on `stop` drains them (new connections refused, transfers in flight given a grace period).
 */
export const serverMachine = setup({
  types: {
    context: {} as ServerContext,
    events: {} as ServerEvent,
    input: {} as ServerMachineInput,
    emitted: {} as ServerEmitted,
  },
  actors: { listener, session: sessionMachine },
  delays: { grace: ({ context }) => context.settings.graceMs },
  guards: {
    noSessions: ({ context }) => context.active === 0,
  },
  actions: {
    assignAddress: assign({ address: ({ event }) => (event.type === 'listening' ? { host: event.host, port: event.port } : undefined) }),
    emitListening: emit(({ context }) => ({ type: 'listening' as const, host: context.address!.host, port: context.address!.port })),
    logListening: ({ context }) => {
      context.settings.log.info({ event: 'listening', host: context.address?.host, port: context.address?.port }, `listening on ${context.address?.host}:${context.address?.port}`);
    },
    assignError: assign({ error: ({ event }) => (event.type === 'listen-failed' ? event.error : undefined) }),
    emitFailed: emit(({ context }) => ({ type: 'failed' as const, error: context.error ?? new Error('listen failed') })),
    startSession: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'connection') return;
      const n = context.started + 1;
      const id = `session-${n}`;
      const transport: Transport = event.transport;
      const log = context.settings.log.child({ session: id, peer: transport.remote });
      log.info({ event: 'connected' }, 'client connected');
      enqueue.assign({ started: n, active: context.active + 1 });
      enqueue.spawnChild('session', {
        // Readable in the inspector and in done events: which session, and who is on the other end.
        id: `${id} ${transport.remote}`,
        input: {
          id,
          transport,
          store: context.settings.store,
          log,
          limits: context.settings.limits,
          codecs: context.settings.codecs,
          timeouts: context.settings.timeouts,
          agent: context.settings.agent,
          media: context.settings.media,
          journal: context.settings.journal,
          ...(context.settings.token !== undefined ? { token: context.settings.token } : {}),
          ...(context.settings.admission ? { admission: context.settings.admission } : {}),
        },
      });
    }),
    logSessionFailed: ({ context, event }) => {
      if (event.type !== 'xstate.error.actor.*' && !('error' in event)) return;
      const error = (event as { error: unknown }).error as Error;
      context.settings.log.error({ event: 'session-failed', session: (event as { actorId?: string }).actorId, err: error }, `a session failed: ${error?.message ?? String(error)}`);
    },
    /**
     * A failed actor does not stop its own children, so the session's connection would keep its
     * socket open: close the socket here, so the client sees the session end. (What the session
     * left half-written is swept up with the expired partials.)
     */
    stopOrphans: ({ event, self }) => {
      const session = self.getSnapshot().children[(event as { actorId: string }).actorId];
      const context = (session?.getSnapshot() as { context?: { settings?: { transport?: Transport } } } | undefined)?.context;
      context?.settings?.transport?.destroy();
    },
    logTurnedAway: ({ context, event }) => {
      if (event.type !== 'turned-away') return;
      const why =
        event.reason === 'too-many'
          ? `already ${context.settings.maxConnections} connections`
          : event.reason === 'shut-out'
            ? 'too many failed authentications from this address'
            : `TLS handshake failed (${event.detail ?? 'unknown'})`;
      context.settings.log.warn({ event: 'turned-away', peer: event.remote, reason: event.reason, ...(event.detail ? { detail: event.detail } : {}) }, `connection refused: ${why}`);
    },
    refuseConnection: ({ event }) => {
      if (event.type === 'connection') event.transport.destroy();
    },
    forgetSession: enqueueActions(({ context, event, enqueue }) => {
      if (!('actorId' in event)) return;
      enqueue(stopChild(event.actorId));
      enqueue.assign({ active: Math.max(0, context.active - 1) });
    }),
    stopAccepting: sendTo('listener', { type: 'stop-accepting' }),
    shutdownSessions: enqueueActions(({ self, enqueue }) => {
      for (const child of Object.values(self.getSnapshot().children)) {
        if (child && child.id !== 'listener') enqueue.sendTo(child, { type: 'shutdown' });
      }
    }),
    stopSessions: enqueueActions(({ self, enqueue }) => {
      for (const child of Object.values(self.getSnapshot().children)) {
        if (child && child.id !== 'listener') enqueue(stopChild(child));
      }
    }),
    logStopping: ({ context }) => {
      context.settings.log.info({ event: 'stopping', sessions: context.active }, 'stopping: no new connections');
    },
    logForced: ({ context }) => {
      context.settings.log.warn({ event: 'grace-expired', sessions: context.active }, 'grace period over; closing the remaining connections');
    },
    logStopped: ({ context }) => {
      context.settings.log.info({ event: 'stopped' }, 'server stopped');
    },
    emitStopped: emit({ type: 'stopped' as const }),
  },
}).createMachine({
  id: 'server',
  context: ({ input }) => ({ settings: input, address: undefined, error: undefined, started: 0, active: 0 }),
  invoke: {
    id: 'listener',
    src: 'listener',
    input: ({ context }) => ({
      host: context.settings.host,
      port: context.settings.port,
      ...(context.settings.tls ? { tls: context.settings.tls } : {}),
      ...(context.settings.maxConnections !== undefined ? { maxConnections: context.settings.maxConnections } : {}),
      handshakeMs: context.settings.timeouts.handshakeMs,
      ...(context.settings.admission ? { admission: context.settings.admission } : {}),
    }),
  },
  initial: 'starting',
  states: {
    starting: {
      description: 'Binding the listening socket.',
      on: {
        listening: { target: 'listening', actions: ['assignAddress', 'logListening', 'emitListening'] },
        'listen-failed': { target: 'failed', actions: ['assignError', 'emitFailed'] },
        stop: { target: 'stopped' },
      },
    },
    listening: {
      description: 'Accepting connections; each one runs in its own session.',
      on: {
        connection: { actions: 'startSession' },
        'turned-away': { actions: 'logTurnedAway' },
        'xstate.done.actor.*': { actions: 'forgetSession' },
        // A session that fails (a bug, a disk error in a side effect) ends alone, never the server.
        'xstate.error.actor.*': { actions: ['logSessionFailed', 'stopOrphans', 'forgetSession'] },
        'listen-failed': { actions: 'assignError' },
        stop: { target: 'draining' },
      },
    },
    draining: {
      description: 'Stopping: no new connections; waiting for sessions to finish what they are doing.',
      entry: ['logStopping', 'stopAccepting', 'shutdownSessions'],
      always: { guard: 'noSessions', target: 'stopped' },
      after: { grace: { target: 'stopped', actions: ['logForced', 'stopSessions'] } },
      on: {
        connection: { actions: 'refuseConnection' },
        'xstate.done.actor.*': { actions: 'forgetSession' },
        // A session that fails (a bug, a disk error in a side effect) ends alone, never the server.
        'xstate.error.actor.*': { actions: ['logSessionFailed', 'stopOrphans', 'forgetSession'] },
      },
    },
    stopped: {
      description: 'The server is closed.',
      type: 'final',
      entry: ['logStopped', 'emitStopped'],
    },
    failed: {
      description: 'The server could not listen (address in use, permission denied).',
      type: 'final',
    },
  },
});

export type ServerMachine = typeof serverMachine;
