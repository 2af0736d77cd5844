/**
 * XState inspection events made safe for @statelyai/inspect: the payloads go through a sanitiser,
 * and actor refs are replaced by a shadow holding only what the library reads from them.
 */
import type { AnyActorRef, InspectionEvent } from 'xstate';

/**
 * The inspection event with its payloads sanitised, still in the shape @statelyai/inspect converts.
 * Only actor registrations, events and snapshots are passed on: the library drops the others.
 */
export function sanitizeInspectionEvent(event: InspectionEvent, clean: (value: unknown) => unknown): InspectionEvent | undefined {
  switch (event.type) {
    case '@xstate.event':
      return { ...event, event: asEventObject(clean(event.event)) };
    case '@xstate.snapshot':
      return { ...event, event: asEventObject(clean(event.event)), snapshot: clean(event.snapshot) as typeof event.snapshot };
    case '@xstate.actor':
      return { ...event, actorRef: shadowActorRef(event.actorRef, clean) as typeof event.actorRef };
    default:
      return undefined;
  }
}

function asEventObject(value: unknown): { type: string } {
  return value && typeof value === 'object' && typeof (value as { type?: unknown }).type === 'string' ? (value as { type: string }) : { type: 'unknown' };
}

/**
 * What the library reads from an actor ref (its id, session id, parent, machine config, snapshot),
 * with the snapshot sanitised. The snapshot is read when the library gets to the event, as it
 * would read it from the real ref: at registration time it does not exist yet.
 */
function shadowActorRef(actorRef: object, clean: (value: unknown) => unknown): unknown {
  const ref = actorRef as AnyActorRef & { _parent?: AnyActorRef; logic?: { config?: unknown } };
  const shadow = {
    id: ref.id,
    sessionId: ref.sessionId,
    _parent: ref._parent ? { sessionId: ref._parent.sessionId } : undefined,
    logic: { config: ref.logic?.config },
    getSnapshot: () => {
      try {
        return clean(ref.getSnapshot());
      } catch {
        return { status: 'active' };
      }
    },
  };
  return shadow;
}
