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
 * Runs the server's sessions: one root actor (a session machine) per connection, watched by the
 * same inspector as the server. They are not children held in the server machine's snapshot: XState
 * copies that map on every spawn and stop, which made opening n sessions cost n². Here each start
 * and end costs the same, however many run. The pool tells the server when a session ends or fails;
 * the server machine does the counting.
 */
export function sessionPool(services: SessionPoolServices) {
  return fromCallback<SessionPoolCommand, SessionPoolInput, SessionPoolEvent>(({ input, sendBack, receive }) => {
    const running = new Map<string, Running>();
    const logic = sessionLogic({ ...services, linkOf: (id) => running.get(id)?.link });

    const open = (id: string, transport: Transport) => {
      const log: Logger = services.log.child({ session: id, peer: transport.remote });
      log.info({ event: 'connected' }, 'client connected');
      const settings: SessionSettings = {
        ...input.defaults,
        id,
        remote: transport.remote,
        ...(input.defaults.authRequired && services.newNonce ? { nonce: services.newNonce() } : {}),
      };
      // Readable in the inspector and in done events: which session, and who is on the other end.
      const actor = createActor(logic, { id: `${id} ${transport.remote}`, input: settings, ...(services.inspect ? { inspect: services.inspect } : {}) });
      running.set(id, { actor, link: { transport, log } });
      actor.subscribe({ complete: () => settle(id), error: (error) => settle(id, error ?? new Error('session failed')) });
      actor.start();
    };

    /** Forgets a session; `drop` also stops it and closes its socket. */
    const forget = (id: string, drop: boolean): Running | undefined => {
      const session = running.get(id);
      if (!session) return undefined;
      running.delete(id);
      if (drop) {
        session.actor.stop();
        session.link.transport.destroy();
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

    receive((event) => {
      if (event.type === 'open') open(event.id, event.transport);
      else if (event.type === 'shutdown') for (const { actor } of running.values()) actor.send({ type: 'shutdown' });
      else for (const id of [...running.keys()]) forget(id, true);
    });

    return () => {
      for (const id of [...running.keys()]) forget(id, true);
    };
  });
}
