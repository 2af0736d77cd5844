import { createActor, fromCallback, type Actor } from 'xstate';
import type { Logger } from 'pino';
import type { Transport } from '../../transport/transport.js';
import { sessionLogic, type SessionMachine } from '../session.machine.js';
import type { SessionLink, SessionServices } from '../session-services.js';
import type { SessionDefaults, SessionSettings } from '../session.types.js';

export interface SessionPoolInput {
  /** What every session starts with. */
  defaults: SessionDefaults;
}

export type SessionPoolCommand =
  /** Start a session for an accepted connection. */
  | { type: 'open'; id: string; transport: Transport }
  /** Ask every session to finish what it is doing and close. */
  | { type: 'shutdown' }
  /** Stop every session now, dropping its connection. */
  | { type: 'stop-all' };

export type SessionPoolEvent = { type: 'session.ended'; id: string } | { type: 'session.failed'; id: string; error: unknown };

/** What the pool needs besides its sessions' own services: how to make a challenge. */
export interface SessionPoolServices extends Omit<SessionServices, 'linkOf'> {
  /** A fresh challenge for a connection, when clients must prove they hold the token. */
  newNonce?: () => string;
}

interface Running {
  actor: Actor<SessionMachine>;
  link: SessionLink;
}

/**
 * Runs the server's sessions: one actor (a session machine) per connection, whose parent is the pool.
 * They are not children held in the server machine's snapshot: XState copies that map on every spawn
 * and stop, which made opening n sessions cost n². Here each start and end costs the same, however
 * many run. They are not root actors either: a root actor brings an XState system of its own (its
 * maps, scheduler and closures: a sixth of a session's memory), and the unique key of its first
 * delayed event gave each system's scheduler a new hidden class. As the pool's children they share
 * the server's system, so the server's inspector sees them as the pool's. The pool tells the server
 * when a session ends or fails; the server machine does the counting.
 */
export function sessionPool(services: SessionPoolServices) {
  return fromCallback<SessionPoolCommand, SessionPoolInput, SessionPoolEvent>(({ input, sendBack, receive, self }) => {
    const running = new Map<string, Running>();
    const logic = sessionLogic({ ...services, linkOf: (id) => running.get(id)?.link });

    const open = (id: string, transport: Transport) => {
      const log: Logger = services.log.child({ session: id, peer: transport.remote });
      log.info({ event: 'connected' }, 'client connected');
      // Own keys first, then the defaults: in V8 11 (Node 20) a literal that starts with a spread
      // gets a hidden class of its own every time, and every read of it misses the inline caches.
      const settings: SessionSettings = {
        id,
        remote: transport.remote,
        ...input.defaults,
        ...(input.defaults.authRequired && services.newNonce ? { nonce: services.newNonce() } : {}),
      };
      // Readable in the inspector and in done events: which session, and who is on the other end.
      const actor = createActor(logic, { id: `${id} ${transport.remote}`, input: settings, parent: self });
      running.set(id, { actor, link: { transport, log } });
      actor.subscribe({ complete: () => settle(id), error: (error) => settle(id, error ?? new Error('session failed')) });
      actor.start();
    };

    /**
     * Forgets a session; `drop` also closes its socket and, if the session still runs, tells it that
     * its connection is gone, so it ends there and then. (XState stops a child only through its parent's
     * own machinery, and the pool is a callback actor: the session ends itself, as for any lost peer.)
     */
    const forget = (id: string, drop: boolean): Running | undefined => {
      const session = running.get(id);
      if (!session) return undefined;
      running.delete(id);
      if (drop) {
        session.link.transport.destroy();
        if (session.actor.getSnapshot().status === 'active') session.actor.send({ type: 'peer-gone' });
      }
      return session;
    };

    const settle = (id: string, error?: unknown) => {
      // A failed actor does not stop its own children, so its connection would keep the socket
      // open: close it here, so the client sees the session end. (What the session left
      // half-written is swept up with the expired partials.)
      if (!forget(id, error !== undefined)) return;
      sendBack(error === undefined ? { type: 'session.ended', id } : { type: 'session.failed', id, error });
    };

    // Besides these commands the pool is sent its sessions' own done and error events (it is their
    // parent); `subscribe` in `open` has already dealt with those.
    receive((event) => {
      if (event.type === 'open') open(event.id, event.transport);
      else if (event.type === 'shutdown') for (const { actor } of running.values()) actor.send({ type: 'shutdown' });
      else if (event.type === 'stop-all') for (const id of [...running.keys()]) forget(id, true);
    });

    return () => {
      for (const id of [...running.keys()]) forget(id, true);
    };
  });
}
