/**
 * The heartbeat both ends of a native connection share: a ping each interval, the peer given up
 * after two intervals in a row with nothing from it, and intervals that do not count skipped.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { startHeartbeat } from '../transport/heartbeat.js';

const EVERY = 1_000;

function watch(counts?: () => boolean) {
  const pings: number[] = [];
  const silent: number[] = [];
  const beat = startHeartbeat({ everyMs: EVERY, ping: () => pings.push(Date.now()), onSilent: (ms) => silent.push(ms), ...(counts ? { counts } : {}) });
  return { beat, pings, silent };
}

describe('startHeartbeat', () => {
  beforeEach(() => void vi.useFakeTimers());
  afterEach(() => void vi.useRealTimers());

  it('pings every interval and gives up after two silent ones, once, reporting how long it waited', () => {
    const { pings, silent } = watch();
    vi.advanceTimersByTime(EVERY);
    expect(pings).toHaveLength(1);
    expect(silent).toEqual([]);
    vi.advanceTimersByTime(EVERY);
    expect(silent).toEqual([2 * EVERY]);
    // Stopped by then: no more pings, no second report.
    vi.advanceTimersByTime(10 * EVERY);
    expect(pings).toHaveLength(1);
    expect(silent).toEqual([2 * EVERY]);
  });

  it('keeps going while the peer is heard from in every interval', () => {
    const { beat, pings, silent } = watch();
    for (let i = 0; i < 10; i++) {
      beat.heard();
      vi.advanceTimersByTime(EVERY);
    }
    expect(pings).toHaveLength(10);
    expect(silent).toEqual([]);
    beat.stop();
  });

  it('one silent interval between two heard ones is not enough', () => {
    const { beat, silent } = watch();
    vi.advanceTimersByTime(EVERY); // silent
    beat.heard();
    vi.advanceTimersByTime(EVERY); // heard: the count starts again
    vi.advanceTimersByTime(EVERY); // silent
    expect(silent).toEqual([]);
    vi.advanceTimersByTime(EVERY); // silent again: two in a row
    expect(silent).toEqual([2 * EVERY]);
  });

  it('intervals that do not count (this side was not reading) never lead to giving up', () => {
    let reading = false;
    const { silent, pings } = watch(() => reading);
    vi.advanceTimersByTime(5 * EVERY);
    expect(silent).toEqual([]);
    expect(pings).toHaveLength(5);
    reading = true;
    vi.advanceTimersByTime(2 * EVERY);
    expect(silent).toEqual([2 * EVERY]);
  });

  it('stop() ends it: no pings, no giving up', () => {
    const { beat, pings, silent } = watch();
    beat.stop();
    vi.advanceTimersByTime(10 * EVERY);
    expect(pings).toEqual([]);
    expect(silent).toEqual([]);
  });
});
