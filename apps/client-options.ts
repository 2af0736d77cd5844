import { Option, type Command } from 'commander';
import { createClient, type FerryClient } from '../client.js';
import type { FerryError } from '../transport/errors.js';
import { DEFAULT_HOST, DEFAULT_PORT } from '../transport/frames.js';
import { parseDuration, parseDurationOrZero, parsePort } from './units.js';
import { defaultStateDir } from '../media/resume-book.js';
import fs from 'node:fs';
import { parseSwitch, UsageError } from './settings.js';

export interface CommonClientOptions {
  host: string;
  port: number;
  json?: boolean;
  retryInitial: number;
  retryMax: number;
  retryFor?: number;
  legacy?: boolean;
  inspect?: string | true;
  heartbeat: number;
  stateDir: string;
  token?: string;
  tls?: boolean;
  tlsCa?: string;
}

/** The flags every client command shares. */
export function addClientOptions(command: Command, retryForDefault: string | undefined): Command {
  command
    .addOption(new Option('--host <address>', 'server address').env('FERRY_HOST').default(DEFAULT_HOST))
    .addOption(new Option('--port <port>', 'server port').env('FERRY_PORT').argParser(parsePort).default(DEFAULT_PORT))
    .option('--json', 'print one JSON object per result instead of text')
    .option('--legacy', 'speak the original tool\u2019s format to an original server')
    .addOption(new Option('--heartbeat <duration>', 'ping the server this often; reconnect after two silent intervals (0 = never)').env('FERRY_HEARTBEAT').argParser(parseDurationOrZero).default(10_000, '10s'))
    .addOption(new Option('--state-dir <dir>', 'where unfinished uploads are remembered, so a new run resumes them').env('FERRY_STATE_DIR').default(defaultStateDir()))
    .addOption(new Option('--token <token>', 'the server\u2019s token (answered to its challenge; never sent)').env('FERRY_TOKEN'))
    .addOption(new Option('--tls', 'connect with TLS, trusting the system\u2019s certificate authorities (or FERRY_TLS=1)'))
    .addOption(new Option('--tls-ca <file>', 'connect with TLS, trusting this PEM certificate authority').env('FERRY_TLS_CA'))
    .option('--inspect [url]', 'stream the client\u2019s state machines to a ws:// inspector, or start a local inspector page')
    .addOption(new Option('--retry-initial <duration>', 'first delay before reconnecting').argParser(parseDuration).default(250, '250ms'))
    .addOption(new Option('--retry-max <duration>', 'longest delay between attempts').argParser(parseDuration).default(5_000, '5s'));
  const retryFor = new Option('--retry-for <duration>', `give up when the server has been unreachable this long${retryForDefault === undefined ? ' (default: forever)' : ''}`).argParser(parseDuration);
  command.addOption(retryForDefault === undefined ? retryFor : retryFor.default(parseDuration(retryForDefault), retryForDefault));
  return command;
}

/** A library client built from the shared flags, and the way to finish with it. */
export interface OpenedClient {
  client: FerryClient;
  /** Closes the client (see FerryClient.close) and stops inspection. */
  finish(closeOptions?: { sayExit?: boolean }): Promise<void>;
}

/**
 * Builds a library client from the shared flags. While the server cannot be reached it says so at
 * once, one line per outage rather than per attempt, and says again when it gets through.
 */
export async function openClient(
  options: CommonClientOptions,
  extra: { rateLimit?: number; notify?: (text: string) => void; announceFirst?: boolean } = {},
): Promise<OpenedClient> {
  // Loaded only when asked for: it brings a WebSocket stack that every other run can do without.
  const inspection = options.inspect === undefined ? undefined : await (await import('./inspect/start.js')).startInspection(options.inspect, options.token ? [options.token] : []);
  let ca: Buffer | undefined;
  if (options.tlsCa) {
    try {
      ca = fs.readFileSync(options.tlsCa);
    } catch (err) {
      throw new UsageError(`--tls-ca ${options.tlsCa} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}).`);
    }
  }
  if (inspection) process.stderr.write(`${inspection.description}\n`);
  const client = createClient({
    host: options.host,
    port: options.port,
    retryInitialMs: options.retryInitial,
    retryMaxMs: options.retryMax,
    ...(options.retryFor !== undefined ? { retryForMs: options.retryFor } : {}),
    ...(extra.rateLimit ? { rateLimit: extra.rateLimit } : {}),
    ...(options.legacy ? { legacy: true } : {}),
    heartbeatMs: options.heartbeat,
    stateDir: options.stateDir,
    ...(options.token ? { token: options.token } : {}),
    ...(ca ? { tls: { ca } } : options.tls || (process.env.FERRY_TLS !== undefined && parseSwitch('FERRY_TLS', process.env.FERRY_TLS)) ? { tls: true } : {}),
    ...(inspection ? { inspect: inspection.inspect } : {}),
  });
  watchConnection(client, `${options.host}:${options.port}`, extra.notify ?? ((text) => process.stderr.write(`ferry: ${text}\n`)), extra.announceFirst === true);
  return {
    client,
    async finish(closeOptions) {
      await client.close(closeOptions);
      await inspection?.stop();
    },
  };
}

/**
 * Tells `notify` when the server is out of reach (once per outage) and when it is reached again;
 * with `announceFirst`, also when it is first reached.
 */
export function watchConnection(client: FerryClient, where: string, notify: (text: string) => void, announceFirst = false): void {
  let waiting = false;
  let wasConnected = false;
  client.actor.on('retrying', (e) => {
    if (waiting) return;
    waiting = true;
    notify(retryNotice(where, e.error, wasConnected));
  });
  client.actor.on('connected', () => {
    if (waiting || (announceFirst && !wasConnected)) notify(`connected to ${where}`);
    waiting = false;
    wasConnected = true;
  });
}

/** "nothing listening on HOST:PORT, retrying (Ctrl-C to stop)", or the reason it cannot get through. */
export function retryNotice(where: string, error: FerryError, wasConnected: boolean): string {
  const cause = (error.cause as NodeJS.ErrnoException | undefined)?.code;
  if (cause === 'ECONNREFUSED') return `nothing listening on ${where}, retrying (Ctrl-C to stop)`;
  const reason = error.message.replace(/\.$/, '');
  const lowered = reason.charAt(0).toLowerCase() + reason.slice(1);
  return `${wasConnected ? 'lost the connection to' : 'cannot reach'} ${where}: ${lowered}; retrying (Ctrl-C to stop)`;
}
