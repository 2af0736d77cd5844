/** Waiting for events on a Transport. */
import type { Transport, TransportEvent, TransportEventMap } from '../../transport/transport.js';

/** Resolves with the arguments of the next `event` on `t`. */
export function next<E extends TransportEvent>(t: Transport, event: E): Promise<TransportEventMap[E]> {
  return new Promise((resolve) => {
    const listener = (...args: TransportEventMap[E]): void => {
      t.off(event, listener);
      resolve(args);
    };
    t.on(event, listener);
  });
}
