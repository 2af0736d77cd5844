import { pino, type Logger } from 'pino';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import type PinoPretty from 'pino-pretty';
import type { LogFormat } from './settings.js';

const require = createRequire(import.meta.url);

/** Fields shown in the pretty line's own words (or not at all), so they are not repeated after it. */
const SHOWN = ['pid', 'hostname', 'event', 'session', 'peer', 'name'];

/**
 * The server's logger: JSON lines for machines (when stdout is not a terminal, or with `json`),
 * one readable line per event for people (on a terminal, or with `pretty`). Errors carry stack
 * traces only at debug level.
 */
export function createLogger(
  level: string,
  destination: NodeJS.WritableStream & { isTTY?: boolean } = process.stdout,
  format: LogFormat = 'auto',
): Logger {
  const debugging = level === 'debug' || level === 'trace';
  const options = {
    level,
    // Nothing secret belongs in a log line; should a token ever be attached to one, it is blanked.
    // Exact paths only: a wildcard (`*.token`) doubles what each line and each session's child logger cost.
    redact: { paths: ['token', 'options.token', 'err.token', 'mac'], censor: '[redacted]' },
    serializers: {
      err: (err: Error & { code?: string }) => (debugging ? pino.stdSerializers.err(err) : { type: err.name, code: err.code, message: err.message }),
    },
  };
  if (format === 'pretty' || (format === 'auto' && destination.isTTY)) {
    // Loaded only for people: JSON lines need none of it.
    const pretty = require('pino-pretty') as typeof PinoPretty;
    const stream = pretty({
      colorize: destination.isTTY === true,
      sync: true,
      translateTime: 'SYS:HH:MM:ss',
      // One line per event: the time, the level, who it is about, the sentence, then any other fields.
      singleLine: true,
      messageFormat: '{if session}{session} {peer}: {end}{msg}{if name} {name}{end}',
      ignore: SHOWN.join(','),
      ...(destination === process.stdout ? { destination: 1 } : { destination }),
    });
    return pino(options, stream);
  }
  return pino(options, destination === process.stdout ? new TurnLines(1) : destination);
}

/** Sleeps the thread for `ms` (a full pipe: the reader needs a moment). */
const pause = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * Log lines to a file descriptor, written once per turn of the event loop: what the callbacks of one
 * turn log leaves in one write system call, when the turn is over, instead of one call per line (a
 * server opening thousands of connections logs two lines for each). `flush()` writes what is held at
 * once. pino's `logger.flush()` calls it: a session does so before it acknowledges a message, so a
 * message's line is never behind its acknowledgement. What is left is written when the process exits.
 * A line can only be lost when the process is killed outright in the same turn that logged it.
 */
export class TurnLines {
  #held: string[] = [];
  #scheduled = false;
  readonly #fd: number;

  constructor(fd: number) {
    this.#fd = fd;
    process.on('exit', () => this.flush());
  }

  write(line: string): boolean {
    this.#held.push(line);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.flush());
    }
    return true;
  }

  flush(done?: (error?: Error) => void): void {
    this.#scheduled = false;
    if (this.#held.length > 0) {
      const text = Buffer.from(this.#held.length === 1 ? this.#held[0]! : this.#held.join(''), 'utf8');
      this.#held = [];
      let at = 0;
      while (at < text.length) {
        try {
          at += fs.writeSync(this.#fd, text, at);
        } catch (err) {
          // A non-blocking pipe that is full: wait for its reader. Anything else (a closed pipe) drops the lines.
          if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') break;
          pause(1);
        }
      }
    }
    done?.();
  }
}
