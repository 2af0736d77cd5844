/**
 * The heartbeat both ends of a native connection run: a PING every interval, and the connection
 * given up after two intervals in a row in which nothing arrived.
 */
export interface HeartbeatOptions {
  /** Interval between pings; the peer is given up after two silent ones. */
  everyMs: number;
  /** Sends one PING. */
  ping(): void;
  /** Called once, after two silent intervals; the heartbeat has stopped by then. */
  onSilent(silentMs: number): void;
  /**
   * Whether the interval that just ended counts: one in which this side was not reading (its own
   * backpressure) says nothing about the peer. Every interval counts by default.
   */
  counts?(): boolean;
}

export interface Heartbeat {
  /** Something arrived from the peer: it is alive. */
  heard(): void;
  stop(): void;
}

/** Starts a heartbeat; its timer never keeps the process alive. */
export function startHeartbeat(options: HeartbeatOptions): Heartbeat {
  let heard = false;
  let silent = 0;
  const timer = setInterval(() => {
    if (heard || (options.counts !== undefined && !options.counts())) {
      heard = false;
      silent = 0;
    } else if (++silent >= 2) {
      clearInterval(timer);
      options.onSilent(2 * options.everyMs);
      return;
    }
    options.ping();
  }, options.everyMs);
  timer.unref?.();
  return {
    heard: () => {
      heard = true;
    },
    stop: () => clearInterval(timer),
  };
}
