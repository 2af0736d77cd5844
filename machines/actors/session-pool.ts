import { createActor, fromCallback, type Actor, type InspectionEvent, type Observer } from 'xstate';
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
  /** Watches every session, as the server's own `inspect` watches the server. */
  inspect?: Observer<InspectionEvent> | ((event: InspectionEvent) => void);
}

interface Running {
  actor: Actor<SessionMachine>;
  link: SessionLink;
}

/**
 * Runs the server's sessions: one actor (a session machine) per connection, watched by the same
 * inspector as the server. They are not children held in the server machine's snapshot: XState copies
 * that map on every spawn and stop, which made opening n sessions cost n². Here each start and end
 * costs the same, however many run. Nor is each a root actor: a root brings an XState system of its
 * own (its maps, scheduler and closures: a sixth of a session's memory), and the unique key of its
 * first delayed event gave each system's scheduler a new hidden class. They are the children of one
 * `session-pool` actor that does nothing but be their parent, so they share its system; it outlives
 * them, so their done events always find it running. The pool tells the server when a session ends
 * or fails; the server machine does the counting.
 */
export function sessionPool(services: SessionPoolServices) {
  return fromCallback<SessionPoolCommand, SessionPoolInput, SessionPoolEvent>(({ input, sendBack, receive }) => {
    const running = new Map<string, Running>();
    // Every session's parent. It ignores what it is sent: `subscribe` in `open` deals with a session's end.
    const home = createActor(
      fromCallback(() => undefined),
      { id: 'session-pool', ...(services.inspect ? { inspect: services.inspect } : {}) },
    );
    home.start();
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
      const actor = createActor(logic, { id: `${id} ${transport.remote}`, input: settings, parent: home });
      running.set(id, { actor, link: { transport, log } });
      actor.subscribe({ complete: () => settle(id), error: (error) => settle(id, error ?? new Error('session failed')) });
      actor.start();
    };

    /**
     * Forgets a session; `drop` also ends it and closes its socket at once. XState stops a child only
     * through its parent's own machinery, so a running session is told its connection is gone and ends
     * as for any lost peer. The socket is destroyed either way: a session already closing would give its
     * peer a few seconds more, and a failed one does not stop its connection at all.
     */
    const forget = (id: string, drop: boolean): Running | undefined => {
      const session = running.get(id);
      if (!session) return undefined;
      running.delete(id);
      if (drop) {
        if (session.actor.getSnapshot().status === 'active') session.actor.send({ type: 'peer-gone' });
        session.link.transport.destroy();
      }
      return session;
    };

    const settle = (id: string, error?: unknown) => {
      // A failed actor does not stop its own children, so its connection would keep the socket
      // open: `forget` closes it, so the client sees the session end. (What the session left
      // half-written is swept up with the expired partials.)
      if (!forget(id, error !== undefined)) return;
      sendBack(error === undefined ? { type: 'session.ended', id } : { type: 'session.failed', id, error });
    };

    receive((event) => {
      if (event.type === 'open') open(event.id, event.transport);
      else if (event.type === 'shutdown') for (const { actor } of running.values()) actor.send({ type: 'shutdown' });
      else for (const id of [...running.keys()]) forget(id, true);
    });

    return () => {
      // `home` is left running: it holds nothing, and the last session's done event may reach it after this.
      for (const id of [...running.keys()]) forget(id, true);
    };
  });
}
