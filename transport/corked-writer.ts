/**
 * Writes made in one go leave in one piece: the first write corks the stream, and it is uncorked
 * once the current piece of work is over, so a burst of small frames costs one system call instead
 * of one each.
 *
 * @example
 * ```ts
 * const hold = corkUntilLater(transport);
 * hold();
 * transport.write(frameA);
 * hold(); // already corked: nothing more to do
 * transport.write(frameB); // A and B leave together once the tick ends
 * ```
 */

/** What can be corked: a `net.Socket`, a TLS socket, any `Writable`, a ferry `Transport`. */
export interface Corkable {
  cork(): void;
  uncork(): void;
}

/** Runs `callback` later, once: `process.nextTick`, `setImmediate`, `queueMicrotask`… */
export type Later = (callback: () => void) => void;

/** The default {@link Later}: the end of the current tick (looked up at each call, so fake timers apply). */
const nextTick: Later = (callback) => process.nextTick(callback);

/**
 * Returns `hold`: each call makes sure `target` is corked and that it will be uncorked once, when
 * `later` runs. Calls before then do nothing more, so the target is corked at most once at a time
 * and every cork is matched by exactly one uncork. With the default, writes of one tick are
 * batched; pass `setImmediate` to batch all the callbacks of one turn of the event loop (such as
 * several timers firing together).
 */
export function corkUntilLater(target: Corkable, later: Later = nextTick): () => void {
  let corked = false;
  const release = () => {
    corked = false;
    target.uncork();
  };
  return () => {
    if (corked) return;
    corked = true;
    target.cork();
    later(release);
  };
}
