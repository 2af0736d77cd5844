import { assign, emit, sendTo, setup } from 'xstate';
import { pino, type Logger } from 'pino';
import type { Transport } from '../transport/transport.js';
import { listenerFor, type Admission, type ListenerEvent } from './actors/listener.js';
import { sessionPool, type SessionPoolEvent, type SessionPoolServices } from './actors/session-pool.js';
import { detachedServices } from './session-services.js';
import type { SessionDefaults } from './session.types.js';

/** What a server is started with: plain data. Its sockets, files, logger and secrets are its services. */
export interface ServerSettings {
  host: string;
  port: number;
  /** How long a shutdown waits for transfers in flight before cutting them off. */
  graceMs: number;
  /** Connections beyond this many are closed at once. */
  maxConnections?: number;
  /** Whether the listener serves TLS (its certificate and key are services). */
  tls: boolean;
  /** What every session starts with. */
  session: SessionDefaults;
}

/** The server's handles: its logger, TLS credentials and the services its sessions share. */
export interface ServerServices extends SessionPoolServices {
  log: Logger;
  tls?: { cert: Buffer; key: Buffer };
  /** Shuts out addresses that keep failing to authenticate. */
  admission?: Admission & { failed(address: string): void };
}

/**
 * The server's context. What it was started with sits in `settings`, apart from what changes: XState
 * copies the context on every assign, and V8 gives a copy with 20 or more keys slow dictionary-mode
 * properties.
 */
export interface ServerContext {
  settings: ServerSettings;
  address: { host: string; port: number } | undefined;
  error: Error | undefined;
  /** Sessions started so far; numbers each new one. */
  started: number;
  /** Sessions still running. */
  active: number;
}

export type ServerEvent = ListenerEvent | SessionPoolEvent | { type: 'stop' };

export type ServerEmitted = { type: 'listening'; host: string; port: number } | { type: 'stopped' } | { type: 'failed'; error: Error };

type TurnedAway = Extract<ListenerEvent, { type: 'turned-away' }>;

const detachedServer: ServerServices = { ...detachedServices, log: pino({ level: 'silent' }) };

/**
 * The server: owns the listening socket, starts one session machine per accepted connection (in
 * its session pool), and on `stop` drains them (new connections refused, transfers in flight given a
 * grace period).
 */
export const serverMachine = setup({
  types: {
    context: {} as ServerContext,
    events: {} as ServerEvent,
    input: {} as ServerSettings,
    emitted: {} as ServerEmitted,
  },
  actors: { listener: listenerFor(detachedServer), sessions: sessionPool(detachedServer) },
  delays: { grace: ({ context }) => context.settings.graceMs },
  guards: {
    noSessions: ({ context }) => context.active === 0,
  },
  actions: {
    assignAddress: assign({ address: (_, params: { host: string; port: number }) => params }),
    emitListening: emit(({ context }) => ({ type: 'listening' as const, host: context.address!.host, port: context.address!.port })),
    assignError: assign({ error: (_, params: { error: Error }) => params.error }),
    emitFailed: emit(({ context }) => ({ type: 'failed' as const, error: context.error ?? new Error('listen failed') })),
    /** Numbers the connection and hands it to the pool, which starts its session. */
    startSession: sendTo('sessions', ({ context }, params: { transport: Transport }) => ({
      type: 'open' as const,
      id: `session-${context.started + 1}`,
      transport: params.transport,
    })),
    countStarted: assign({ started: ({ context }) => context.started + 1, active: ({ context }) => context.active + 1 }),
    countEnded: assign({ active: ({ context }) => Math.max(0, context.active - 1) }),
    refuseConnection: (_, params: { transport: { destroy(): void } }) => params.transport.destroy(),
    stopAccepting: sendTo('listener', { type: 'stop-accepting' }),
    shutdownSessions: sendTo('sessions', { type: 'shutdown' }),
    stopSessions: sendTo('sessions', { type: 'stop-all' }),
    emitStopped: emit({ type: 'stopped' as const }),
    // Side effects, declared here and implemented over the server's logger by serverLogic().
    logListening: () => {},
    logTurnedAway: (_, _params: TurnedAway) => {},
    logSessionFailed: (_, _params: { id: string; error: unknown }) => {},
    logStopping: () => {},
    logForced: () => {},
    logStopped: () => {},
  },
}).createMachine({
  id: 'server',
  context: ({ input }) => ({ settings: input, address: undefined, error: undefined, started: 0, active: 0 }),
  invoke: [
    {
      id: 'listener',
      src: 'listener',
      input: ({ context }) => ({
        host: context.settings.host,
        port: context.settings.port,
        ...(context.settings.maxConnections !== undefined ? { maxConnections: context.settings.maxConnections } : {}),
        handshakeMs: context.settings.session.timeouts.handshakeMs,
      }),
    },
    { id: 'sessions', src: 'sessions', input: ({ context }) => ({ defaults: context.settings.session }) },
  ],
  initial: 'starting',
  states: {
    starting: {
      description: 'Binding the listening socket.',
      on: {
        listening: {
          target: 'listening',
          actions: [{ type: 'assignAddress', params: ({ event }) => ({ host: event.host, port: event.port }) }, 'logListening', 'emitListening'],
        },
        'listen-failed': { target: 'failed', actions: [{ type: 'assignError', params: ({ event }) => ({ error: event.error }) }, 'emitFailed'] },
        stop: { target: 'stopped' },
      },
    },
    listening: {
      description: 'Accepting connections; each one runs in its own session.',
      on: {
        connection: { actions: [{ type: 'startSession', params: ({ event }) => ({ transport: event.transport }) }, 'countStarted'] },
        'turned-away': { actions: { type: 'logTurnedAway', params: ({ event }) => event } },
        'session.ended': { actions: 'countEnded' },
        // A session that fails (a bug, a disk error in a side effect) ends alone, never the server.
        'session.failed': { actions: [{ type: 'logSessionFailed', params: ({ event }) => event }, 'countEnded'] },
        'listen-failed': { actions: { type: 'assignError', params: ({ event }) => ({ error: event.error }) } },
        stop: { target: 'draining' },
      },
    },
    draining: {
      description: 'Stopping: no new connections; waiting for sessions to finish what they are doing.',
      entry: ['logStopping', 'stopAccepting', 'shutdownSessions'],
      always: { guard: 'noSessions', target: 'stopped' },
      after: { grace: { target: 'stopped', actions: ['logForced', 'stopSessions'] } },
      on: {
        connection: { actions: { type: 'refuseConnection', params: ({ event }) => ({ transport: event.transport }) } },
        'session.ended': { actions: 'countEnded' },
        'session.failed': { actions: [{ type: 'logSessionFailed', params: ({ event }) => event }, 'countEnded'] },
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

function turnedAwayReason(event: TurnedAway, settings: ServerSettings): string {
  if (event.reason === 'too-many') return `already ${settings.maxConnections} connections`;
  if (event.reason === 'shut-out') return 'too many failed authentications from this address';
  return `TLS handshake failed (${event.detail ?? 'unknown'})`;
}

/** The server machine bound to its services: its listener, its sessions and its logger. */
export function serverLogic(services: ServerServices): ServerMachine {
  const { log } = services;
  return serverMachine.provide({
    actors: { listener: listenerFor(services), sessions: sessionPool(services) },
    actions: {
      logListening: ({ context }) => {
        log.info({ event: 'listening', host: context.address?.host, port: context.address?.port }, `listening on ${context.address?.host}:${context.address?.port}`);
      },
      logTurnedAway: ({ context }, event: TurnedAway) => {
        log.warn(
          { event: 'turned-away', peer: event.remote, reason: event.reason, ...(event.detail ? { detail: event.detail } : {}) },
          `connection refused: ${turnedAwayReason(event, context.settings)}`,
        );
      },
      logSessionFailed: (_, params: { id: string; error: unknown }) => {
        const error = params.error as Error | undefined;
        log.error({ event: 'session-failed', session: params.id, err: error }, `a session failed: ${error?.message ?? String(error)}`);
      },
      logStopping: ({ context }) => {
        log.info({ event: 'stopping', sessions: context.active }, 'stopping: no new connections');
      },
      logForced: ({ context }) => {
        log.warn({ event: 'grace-expired', sessions: context.active }, 'grace period over; closing the remaining connections');
      },
      logStopped: () => {
        log.info({ event: 'stopped' }, 'server stopped');
      },
    },
  });
}
