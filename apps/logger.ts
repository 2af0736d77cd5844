import { pino, type Logger } from 'pino';
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
  return pino(options, destination === process.stdout ? pino.destination({ dest: 1, sync: true }) : destination);
}
