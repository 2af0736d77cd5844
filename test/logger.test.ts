import { EventEmitter } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { reportDrops } from '../apps/logger.js';

describe('lines the log drops while stdout is behind', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('are counted per burst and reported once, a second after the first', () => {
    const stream = new EventEmitter();
    const reports: string[] = [];
    reportDrops(stream, (text) => reports.push(text));
    stream.emit('drop', 'a');
    stream.emit('drop', 'b');
    vi.advanceTimersByTime(999);
    stream.emit('drop', 'c');
    expect(reports).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(reports).toEqual(['ferry: 3 log lines were dropped because stdout did not keep up; send the log to a file or raise --log-level.\n']);
    stream.emit('drop', 'd');
    vi.advanceTimersByTime(1000);
    expect(reports[1]).toBe('ferry: 1 log line was dropped because stdout did not keep up; send the log to a file or raise --log-level.\n');
    vi.advanceTimersByTime(5000);
    expect(reports).toHaveLength(2);
  });
});
