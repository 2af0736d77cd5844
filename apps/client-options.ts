import { Option, type Command } from 'commander';
import { createClient, DEFAULT_HOST, DEFAULT_PORT, type FerryClient } from '../index.js';
import { parseDuration, parsePort } from './units.js';

export interface CommonClientOptions {
  host: string;
  port: number;
  json?: boolean;
  retryInitial: number;
  retryMax: number;
  retryFor?: number;
  legacy?: boolean;
}

/** The flags every client command shares. */
export function addClientOptions(command: Command, retryForDefault: string | undefined): Command {
  command
    .addOption(new Option('--host <address>', 'server address').env('FERRY_HOST').default(DEFAULT_HOST))
    .addOption(new Option('--port <port>', 'server port').env('FERRY_PORT').argParser(parsePort).default(DEFAULT_PORT))
    .option('--json', 'print one JSON object per result instead of text')
    .option('--legacy', 'speak the original tool\u2019s format to an original server')
    .addOption(new Option('--retry-initial <duration>', 'first delay before reconnecting').argParser(parseDuration).default(250, '250ms'))
    .addOption(new Option('--retry-max <duration>', 'longest delay between attempts').argParser(parseDuration).default(5_000, '5s'));
  const retryFor = new Option('--retry-for <duration>', 'give up when the server has been unreachable this long').argParser(parseDuration);
  command.addOption(retryForDefault === undefined ? retryFor.default(undefined, 'forever') : retryFor.default(parseDuration(retryForDefault), retryForDefault));
  return command;
}

/** Builds a library client from the shared flags; says once on stderr when it waits for the server. */
export function clientFromOptions(options: CommonClientOptions, extra: { rateLimit?: number; quietWaiting?: boolean } = {}): FerryClient {
  const client = createClient({
    host: options.host,
    port: options.port,
    retryInitialMs: options.retryInitial,
    retryMaxMs: options.retryMax,
    ...(options.retryFor !== undefined ? { retryForMs: options.retryFor } : {}),
    ...(extra.rateLimit ? { rateLimit: extra.rateLimit } : {}),
    ...(options.legacy ? { legacy: true } : {}),
  });
  if (!extra.quietWaiting) {
    let told = false;
    client.actor.on('retrying', (e) => {
      if (told) return;
      told = true;
      const limit = options.retryFor === undefined ? '' : ` (giving up after ${Math.round(options.retryFor / 1000)} s)`;
      process.stderr.write(`ferry: waiting for the server at ${options.host}:${options.port}: ${e.error.message}${limit}\n`);
    });
  }
  return client;
}
