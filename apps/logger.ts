import { pino, type Logger } from 'pino';
import { createRequire } from 'node:module';
import type PinoPretty from 'pino-pretty';

const require = createRequire(import.meta.url);

/**
 * The server's logger: JSON lines when stdout is not a terminal (for machines), pretty when it is
 * (for people). Errors carry stack traces only at debug level.
 */
export function createLogger(level: string, destination: NodeJS.WritableStream & { isTTY?: boolean } = process.stdout): Logger {
  const debugging = level === 'debug' || level === 'trace';
  const options = {
    level,
    // Nothing secret belongs in a log line; should a token ever be attached to one, it is blanked.
    redact: { paths: ['token', '*.token', 'options.token', 'mac'], censor: '[redacted]' },
    serializers: {
      err: (err: Error & { code?: string }) => (debugging ? pino.stdSerializers.err(err) : { type: err.name, code: err.code, message: err.message }),
    },
  };
  if (destination.isTTY) {
    // Loaded only for a terminal: JSON lines need none of it.
    const pretty = require('pino-pretty') as typeof PinoPretty;
    return pino(options, pretty({ colorize: true, sync: true, translateTime: 'SYS:HH:MM:ss', ignore: 'pid,hostname', destination: 1 }));
  }
  return pino(options, destination === process.stdout ? pino.destination({ dest: 1, sync: true }) : destination);
}
