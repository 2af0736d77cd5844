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
    redact: { paths: ['token', '*.token', 'options.token', 'mac'], censor: '[redacted]' },
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

/** Destinations holding lines not yet written, for the exit handler. */
const holding = new Set<TurnLines>();
let exitHandlerAdded = false;

/**
 * Log lines to a file descriptor, written once per turn of the event loop: what the callbacks of one
 * turn log leaves in one write system call, when the turn is over, instead of one call per line (a
 * server opening thousands of connections logs two lines for each). `flush()` writes what is held at
 * once. pino's `logger.flush()` calls it: a session does so before it acknowledges a message, so a
 * message's line is never behind its acknowledgement. What is held when the process exits (also on
 * an uncaught exception or `process.exit()`) is written then; only a process killed outright loses
 * the lines of its last turn.
 *
 * A reader that went away (EPIPE) ends the writing: later lines are dropped, as with any closed
 * stdout. Any other failure (a full disk, say) is said once on stderr, and writing is tried again with
 * the next turn's lines.
 */
export class TurnLines {
  #held: string[] = [];
  #scheduled = false;
  #closed = false;
  #reported = new Set<string>();
  readonly #fd: number;
  readonly #writeOut = () => {
    this.#scheduled = false;
    this.flush();
  };

  constructor(fd: number) {
    this.#fd = fd;
    if (!exitHandlerAdded) {
      exitHandlerAdded = true;
      process.on('exit', () => {
        for (const lines of holding) lines.flush();
      });
    }
  }

  write(line: string): boolean {
    if (this.#closed) return true;
    if (this.#held.length === 0) holding.add(this);
    this.#held.push(line);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#writeOut);
    }
    return true;
  }

  flush(done?: (error?: Error) => void): void {
    let failure: Error | undefined;
    if (this.#held.length > 0) {
      const text = Buffer.from(this.#held.length === 1 ? this.#held[0]! : this.#held.join(''), 'utf8');
      this.#held = [];
      holding.delete(this);
      failure = this.#writeAll(text);
    }
    done?.(failure);
  }

  #writeAll(text: Buffer): Error | undefined {
    for (let at = 0; at < text.length; ) {
      try {
        at += fs.writeSync(this.#fd, text, at);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'error';
        // A non-blocking pipe that is full: wait for its reader.
        if (code === 'EAGAIN') {
          pause(1);
          continue;
        }
        if (code === 'EPIPE') this.#closed = true;
        else if (!this.#reported.has(code)) {
          this.#reported.add(code);
          process.stderr.write(`ferry: log lines could not be written (${(err as Error).message}); they are dropped until writing works again.\n`);
        }
        return err as Error;
      }
    }
    return undefined;
  }
}
