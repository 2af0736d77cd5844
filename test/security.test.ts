/**
 * Security: token authentication (library and CLI), secrecy of the token (logs, client output,
 * inspection, the wire), the shut-out after repeated failures, TLS both ways with its error
 * sentences and host name checks, the refusal to listen beyond loopback without a token, original
 * clients under a token, the connection limit, and hostile file names that must stay inside the
 * upload folder. Real sockets over loopback and real `ferry` processes; everything synchronises on
 * socket events, process exits and log lines, never on sleeps.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { InspectionEvent } from 'xstate';
import { createClient, createServer, type FerryClient, type FerryServer, type ServerOptions } from '../index.js';
import { createLogger } from '../apps/logger.js';
import { REDACTED, sanitize } from '../apps/inspect/sanitize.js';
import { authMac } from '../transport/auth.js';
import { ClientDecoder, ServerDecoder, encode, preamble } from '../transport/native-codec.js';
import { DEFAULT_LIMITS, type ClientToken, type ServerToken } from '../transport/frames.js';
import { encodeLegacyFileHeader, LEGACY_EXIT_COMMAND, LEGACY_FILE_COMMAND } from '../transport/legacy-codec.js';
import { AsyncQueue, finalFiles, partialFiles, removeTempDirs, sha256, tempDir, within } from './helpers/async.js';
import { buildCliOnce, isEvent, jsonLines, killAll, runCli, serveInto, type Proc } from './helpers/processes.js';
import { ws } from './helpers/ws.js';

const TOKEN = `tok-${randomBytes(12).toString('hex')}`;
/** A wrong token that shares nothing with the right one. */
const WRONG = `guess-${randomBytes(12).toString('hex')}`;

beforeAll(buildCliOnce, 120_000);

const cleanups: (() => unknown)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await killAll();
});

afterAll(() => {
  removeTempDirs();
});

// --- Helpers ----------------------------------------------------------------------------------

/** Log lines of an in-process server, awaitable. */
class LogCapture {
  readonly text: string[] = [];
  readonly records = new AsyncQueue<Record<string, unknown>>();
  readonly stream = new Writable({
    write: (chunk: Buffer, _encoding, callback) => {
      const text = chunk.toString('utf8');
      this.text.push(text);
      for (const line of text.split('\n')) if (line.startsWith('{')) this.records.push(JSON.parse(line) as Record<string, unknown>);
      callback();
    },
  });

  /** The first line (past or future) with this event that matches `pred`. */
  event(event: string, pred: (record: Record<string, unknown>) => boolean = () => true): Promise<Record<string, unknown>> {
    const found = this.records.all.find((r) => r.event === event && pred(r));
    if (found) return Promise.resolve(found);
    return this.records.next((r) => r.event === event && pred(r), `a log line with event ${event}`, 5_000);
  }

  all(event: string): Record<string, unknown>[] {
    return this.records.all.filter((r) => r.event === event);
  }
}

async function startServer(options: ServerOptions = {}): Promise<{ server: FerryServer; port: number; uploadDir: string; logs: LogCapture }> {
  const logs = new LogCapture();
  const uploadDir = path.join(tempDir('ferry-sec-'), 'upload');
  const server = createServer({ port: 0, uploadDir, logger: createLogger('debug', logs.stream), heartbeatMs: 0, ...options });
  cleanups.push(() => server.close());
  const { port } = await server.listen();
  return { server, port, uploadDir, logs };
}

function client(port: number, options: Parameters<typeof createClient>[0] = {}): FerryClient {
  const c = createClient({ port, retryInitialMs: 20, retryMaxMs: 100, retryForMs: 3_000, heartbeatMs: 0, ...options });
  cleanups.push(() => c.close());
  return c;
}

async function rejection(promise: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await promise;
  } catch (err) {
    return err as { code?: string; message: string };
  }
  throw new Error('expected a rejection');
}

function sourceFile(name: string, body: Buffer | string): string {
  const file = path.join(tempDir('ferry-sec-src-'), name);
  fs.writeFileSync(file, body);
  return file;
}

/** A raw TCP connection that keeps everything it receives and reports when the server closes it. */
interface Raw {
  socket: net.Socket;
  received(): Buffer;
  /** Resolves on `close`, with how long after connecting it came. */
  closed: Promise<{ afterMs: number; bytes: Buffer }>;
}

async function rawConnect(port: number, host = '127.0.0.1'): Promise<Raw> {
  const socket = net.connect({ port, host });
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => {});
  const start = Date.now();
  const closed = new Promise<{ afterMs: number; bytes: Buffer }>((resolve) => socket.once('close', () => resolve({ afterMs: Date.now() - start, bytes: Buffer.concat(chunks) })));
  cleanups.push(() => socket.destroy());
  await Promise.race([once(socket, 'connect'), closed]);
  return { socket, received: () => Buffer.concat(chunks), closed };
}

function decodeReplies(bytes: Buffer): ClientToken[] {
  return new ClientDecoder(DEFAULT_LIMITS).feed(bytes);
}

/** Every entry under `root` must resolve inside it; symlinks are allowed only where the test planted them. */
function expectContained(root: string, planted: string[] = []): void {
  const realRoot = fs.realpathSync(root);
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      const relative = path.relative(root, full);
      expect(relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative), `${full} lies outside ${root}`).toBe(false);
      const stat = fs.lstatSync(full);
      if (stat.isSymbolicLink()) {
        expect(planted, `unexpected symlink ${full}`).toContain(full);
        continue;
      }
      const real = fs.realpathSync(full);
      expect(real === realRoot || real.startsWith(realRoot + path.sep), `${full} resolves to ${real}, outside ${realRoot}`).toBe(true);
      if (stat.isDirectory()) walk(full);
    }
  };
  walk(root);
}

async function startReceiver(): Promise<{ url: string; texts: string[] }> {
  const wss = new ws.WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(wss as unknown as NodeJS.EventEmitter, 'listening');
  const texts: string[] = [];
  wss.on('connection', (socket) => socket.on('message', (data) => texts.push(data.toString())));
  cleanups.push(() => {
    for (const socket of wss.clients) socket.terminate();
    wss.close();
  });
  return { url: `ws://127.0.0.1:${wss.address().port}`, texts };
}

// --- CLI helpers --------------------------------------------------------------------------------

/** `ferry serve --port 0 …`; resolves once it is ready. */
function serveCli(extra: string[] = [], env: Record<string, string> = {}): Promise<{ proc: Proc; port: number; uploadDir: string }> {
  return serveInto(tempDir('ferry-sec-cli-'), ['--heartbeat', '0', ...extra], { env });
}

/** Sends SIGTERM and waits for a clean exit, so every log line has been read. */
async function stopCli(proc: Proc): Promise<void> {
  proc.child.kill('SIGTERM');
  const exit = await within(proc.exited, 'the server to exit', 15_000);
  expect(exit.code).toBe(0);
}

/** The `error` object of a `--json` client run's single output line. */
function jsonError(stdout: string): { code: string; message: string } {
  const lines = jsonLines(stdout);
  expect(lines, stdout).toHaveLength(1);
  return lines[0]!.error as { code: string; message: string };
}

// --- Certificates -----------------------------------------------------------------------------

function opensslAvailable(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** A self-signed certificate and its key, made with openssl. */
function makeCert(dir: string, name: string, subjectAltName: string, commonName: string): { cert: string; key: string } {
  if (!opensslAvailable()) {
    throw new Error('The TLS tests need the openssl command line tool; install it (Debian/Ubuntu: apt-get install openssl, macOS: brew install openssl) and run the tests again.');
  }
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}-key.pem`);
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${commonName}`, '-addext', `subjectAltName=${subjectAltName}`, '-keyout', key, '-out', cert],
    { stdio: 'ignore' },
  );
  return { cert, key };
}

// =============================================================================================

describe('token authentication (library)', () => {
  it('refuses a client without the token (E_AUTH_REQUIRED) and with a wrong one (E_AUTH_FAILED), storing nothing; the right token works', async () => {
    const { port, uploadDir, logs } = await startServer({ token: TOKEN });
    const file = sourceFile('report.txt', 'quarterly numbers\n');

    const anonymous = client(port);
    const noToken = await rejection(anonymous.upload(file));
    expect(noToken.code).toBe('E_AUTH_REQUIRED');
    expect(noToken.message).toMatch(/token/);

    const guesser = client(port, { token: WRONG });
    const [upload, message] = await Promise.all([rejection(guesser.upload(file)), rejection(guesser.message('let me in'))]);
    expect(upload.code).toBe('E_AUTH_FAILED');
    expect(message.code).toBe('E_AUTH_FAILED');
    await logs.event('auth-failed');
    expect(logs.all('message')).toEqual([]);
    expect(logs.all('upload-started')).toEqual([]);
    expect(finalFiles(uploadDir)).toEqual([]);
    expect(partialFiles(uploadDir)).toEqual([]);

    const friend = client(port, { token: TOKEN });
    expect(await friend.message('hello')).toBe('hello');
    const result = await friend.upload(file);
    expect(result.savedAs).toBe('report.txt');
    expect(finalFiles(uploadDir)).toEqual(['report.txt']);
  });

  it('a raw client that pipelines an upload without answering the challenge, or with a wrong answer, stores nothing', async () => {
    const { port, uploadDir, logs } = await startServer({ token: TOKEN });
    const body = Buffer.from('planted content');
    const upload = Buffer.concat([
      encode.uploadOffer({ id: 1, name: 'planted.txt', size: body.length }),
      encode.dataHeader(body.length),
      body,
      encode.uploadEnd(1, sha256(body)),
      encode.message(2, 'pipelined'),
    ]);

    const skipper = await rawConnect(port);
    skipper.socket.write(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'raw' }), upload]));
    const skipped = await within(skipper.closed, 'the server to close the connection that skipped the challenge');
    const skippedReplies = decodeReplies(skipped.bytes);
    expect(skippedReplies.map((t) => t.type)).toEqual(['challenge', 'error']);
    expect((skippedReplies[1] as Extract<ClientToken, { type: 'error' }>).error.code).toBe('E_UNEXPECTED_FRAME');

    const liar = await rawConnect(port);
    liar.socket.write(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'raw' })]));
    const replies = new ClientDecoder(DEFAULT_LIMITS);
    const challenge = await within(
      new Promise<string>((resolve) => {
        liar.socket.on('data', (chunk: Buffer) => {
          for (const token of replies.feed(chunk)) if (token.type === 'challenge') resolve(token.nonce);
        });
      }),
      'the challenge',
    );
    liar.socket.write(Buffer.concat([encode.auth(authMac(WRONG, challenge)), upload]));
    const lied = await within(liar.closed, 'the server to close the connection with the wrong answer');
    const errors = decodeReplies(lied.bytes).filter((t): t is Extract<ClientToken, { type: 'error' }> => t.type === 'error');
    expect(errors.map((e) => e.error.code)).toEqual(['E_AUTH_FAILED']);
    // The refusal is slowed down, to make guessing expensive.
    expect(lied.afterMs).toBeGreaterThanOrEqual(900);

    expect(logs.all('upload-started')).toEqual([]);
    expect(logs.all('message')).toEqual([]);
    expect(finalFiles(uploadDir)).toEqual([]);
    expect(partialFiles(uploadDir)).toEqual([]);
  });

  it('a 6th wrong attempt within a minute from the same address has its connection closed at once, without a challenge', async () => {
    const { port, logs } = await startServer({ token: TOKEN });

    // Before: a connection that says hello is challenged.
    const before = await rawConnect(port);
    before.socket.write(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'raw' })]));
    await within(
      new Promise<void>((resolve) => before.socket.on('data', () => resolve())),
      'a challenge before any failure',
    );
    expect(decodeReplies(before.received()).map((t) => t.type)).toEqual(['challenge']);
    before.socket.destroy();

    const guesses = Array.from({ length: 5 }, () => client(port, { token: WRONG }).message('guess'));
    const failures = await Promise.all(guesses.map(rejection));
    expect(failures.map((f) => f.code)).toEqual(Array(5).fill('E_AUTH_FAILED'));
    expect(logs.all('auth-failed')).toHaveLength(5);

    const sixth = await rawConnect(port);
    sixth.socket.write(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'raw' })]));
    const { bytes, afterMs } = await within(sixth.closed, 'the shut-out connection to be closed');
    expect(bytes.length).toBe(0);
    expect(afterMs).toBeLessThan(900);
    const turnedAway = await logs.event('turned-away', (r) => r.reason === 'shut-out');
    expect(String(turnedAway.peer)).toMatch(/^127\.0\.0\.1:\d+$/);
    // No session was started for it.
    expect(logs.all('connected')).toHaveLength(6);
  });

  it('the token is not on the wire: only a challenge and an HMAC answer cross it', async () => {
    const { port } = await startServer({ token: TOKEN });
    const up: Buffer[] = [];
    const down: Buffer[] = [];
    const proxy = net.createServer({ allowHalfOpen: true }, (downstream) => {
      const upstream = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
      downstream.on('data', (chunk: Buffer) => {
        up.push(Buffer.from(chunk));
        upstream.write(chunk);
      });
      upstream.on('data', (chunk: Buffer) => {
        down.push(Buffer.from(chunk));
        downstream.write(chunk);
      });
      downstream.on('end', () => upstream.end());
      upstream.on('end', () => downstream.end());
      downstream.on('error', () => upstream.destroy());
      upstream.on('error', () => downstream.destroy());
      downstream.on('close', () => upstream.destroy());
      upstream.on('close', () => downstream.destroy());
    });
    proxy.listen(0, '127.0.0.1');
    await once(proxy, 'listening');
    cleanups.push(() => new Promise((resolve) => proxy.close(resolve)));
    const proxyPort = (proxy.address() as net.AddressInfo).port;

    const c = createClient({ port: proxyPort, token: TOKEN, heartbeatMs: 0 });
    expect(await c.message('over the proxy')).toBe('over the proxy');
    await c.upload(sourceFile('wire.txt', 'file over the proxy'));
    await c.close();

    const sent = Buffer.concat(up);
    const received = Buffer.concat(down);
    for (const form of [Buffer.from(TOKEN), Buffer.from(Buffer.from(TOKEN).toString('hex')), Buffer.from(Buffer.from(TOKEN).toString('base64'))]) {
      expect(sent.includes(form)).toBe(false);
      expect(received.includes(form)).toBe(false);
    }
    // The capture is real: it holds the conversation, including the challenge and its answer.
    expect(sent.includes(Buffer.from('over the proxy'))).toBe(true);
    const challenge = decodeReplies(received).find((t): t is Extract<ClientToken, { type: 'challenge' }> => t.type === 'challenge');
    const answer = new ServerDecoder(DEFAULT_LIMITS).feed(sent).find((t): t is Extract<ServerToken, { type: 'auth' }> => t.type === 'auth');
    expect(challenge).toBeDefined();
    expect(answer?.mac).toBe(authMac(TOKEN, challenge!.nonce));
  });

  it('no machine holds the token: it is in no snapshot of the server, a session or their actors, even unsanitised', async () => {
    const snapshots: { value?: unknown; text: string }[] = [];
    const inspect = (ev: InspectionEvent) => {
      if (ev.type !== '@xstate.snapshot') return;
      const s = ev.snapshot as { value?: unknown; context?: unknown; input?: unknown };
      snapshots.push({ value: s.value, text: JSON.stringify({ context: s.context ?? null, input: s.input ?? null }) });
    };
    const { server, port } = await startServer({ token: TOKEN, inspect });
    const raw = await rawConnect(port);
    raw.socket.write(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'raw' })]));
    await within(new Promise<void>((resolve) => raw.socket.once('data', () => resolve())), 'the challenge');

    // The walk did see the session waiting for the answer, and the server listening.
    expect(snapshots.some((s) => s.value === 'authenticating')).toBe(true);
    expect(server.actor.getSnapshot().value).toBe('listening');
    for (const s of snapshots) expect(s.text.includes(TOKEN), s.text).toBe(false);
    expect(JSON.stringify(server.actor.getSnapshot().context).includes(TOKEN)).toBe(false);

    // And what is shown anyway goes through sanitize, which blanks secret-named fields and given secrets.
    const material = { error: new Error(`bad token ${TOKEN}`), note: `the token is ${TOKEN}`, settings: { token: TOKEN } };
    expect(JSON.stringify(sanitize(material, { secrets: [TOKEN] })).includes(TOKEN)).toBe(false);
    expect((sanitize(material) as { settings: { token: unknown } }).settings.token).toBe(REDACTED);
  });
});

describe('token authentication (CLI)', () => {
  it.each(['info', 'debug'])(
    'msg and send exit 1 without the token or with a wrong one, store nothing, and the token shows up in no output (LOG_LEVEL=%s)',
    async (level) => {
      const receiver = level === 'debug' ? await startReceiver() : undefined;
      const inspect = receiver ? ['--inspect', receiver.url] : [];
      const { proc: server, port, uploadDir } = await serveCli(['--token', TOKEN, ...inspect], { LOG_LEVEL: level });
      const dir = tempDir('ferry-sec-cli-src-');
      const file = path.join(dir, 'secret-plans.txt');
      fs.writeFileSync(file, 'the plans');
      const common = ['--port', String(port), '--json', '--retry-for', '5s', '--state-dir', path.join(dir, 'state'), ...inspect];

      const runs = {
        msgNoToken: await runCli(['msg', 'knock knock', ...common]),
        sendNoToken: await runCli(['send', file, ...common]),
        msgWrong: await runCli(['msg', 'knock knock', ...common, '--token', WRONG]),
        sendWrong: await runCli(['send', file, ...common], { env: { FERRY_TOKEN: WRONG } }),
      };
      for (const [name, run] of Object.entries(runs)) {
        expect(run.code, `${name}: ${run.stderr}`).toBe(1);
        expect(jsonError(run.stdout).code, name).toBe(name.endsWith('NoToken') ? 'E_AUTH_REQUIRED' : 'E_AUTH_FAILED');
        expect(run.stderr, name).toMatch(name.endsWith('NoToken') ? /^ferry: .*requires a token.*--token/m : /^ferry: .*token was not accepted/m);
      }
      await server.waitForLine(isEvent('auth-failed'));
      expect(finalFiles(uploadDir)).toEqual([]);
      expect(partialFiles(uploadDir)).toEqual([]);

      const msgRight = await runCli(['msg', 'open sesame', ...common, '--token', TOKEN]);
      expect(msgRight.code, msgRight.stderr).toBe(0);
      expect(jsonLines(msgRight.stdout)).toEqual([{ reply: 'open sesame' }]);
      const sendRight = await runCli(['send', file, ...common], { env: { FERRY_TOKEN: TOKEN } });
      expect(sendRight.code, sendRight.stderr).toBe(0);
      expect(finalFiles(uploadDir)).toEqual(['secret-plans.txt']);

      await server.waitForLine(isEvent('file-saved'));
      await stopCli(server);
      const outputs = [server.stdout, server.stderr, ...[...Object.values(runs), msgRight, sendRight].flatMap((r) => [r.stdout, r.stderr])];
      for (const text of outputs) expect(text.includes(TOKEN)).toBe(false);
      const records = jsonLines(server.stdout);
      expect(records.filter((r) => r.event === 'auth-failed')).toHaveLength(2);
      if (level === 'debug') expect(records.some((r) => r.level === 20)).toBe(true);

      if (receiver) {
        // The inspector saw the sessions that were being authenticated, with the token blanked.
        const all = receiver.texts.join('\n');
        expect(all).toContain('authenticating');
        expect(all).toContain(REDACTED);
        expect(all.includes(TOKEN)).toBe(false);
      }
    },
  );
});

// =============================================================================================

describe('TLS', () => {
  let certs: { main: { cert: string; key: string }; other: { cert: string; key: string } };

  beforeAll(() => {
    const dir = tempDir('ferry-sec-certs-');
    certs = {
      main: makeCert(dir, 'localhost', 'DNS:localhost,IP:127.0.0.1', 'localhost'),
      other: makeCert(dir, 'elsewhere', 'DNS:elsewhere.example', 'elsewhere.example'),
    };
  }, 30_000);

  it('a round trip works with --tls-ca, over 127.0.0.1 and over the name localhost', async () => {
    const { proc: server, port, uploadDir } = await serveCli(['--tls-cert', certs.main.cert, '--tls-key', certs.main.key]);
    expect(jsonLines(server.stdout).find((r) => r.event === 'ready')?.tls).toBe(true);
    const file = sourceFile('tls.txt', 'over TLS');
    const msg = await runCli(['msg', 'encrypted hello', '--port', String(port), '--tls-ca', certs.main.cert]);
    expect(msg).toMatchObject({ code: 0, stdout: 'encrypted hello\n', stderr: '' });
    const send = await runCli(['send', file, '--host', 'localhost', '--port', String(port), '--tls-ca', certs.main.cert, '--json', '--state-dir', path.dirname(file)]);
    expect(send.code, send.stderr).toBe(0);
    expect(fs.readFileSync(path.join(uploadDir, 'tls.txt'), 'utf8')).toBe('over TLS');
  });

  it('fails with an E_TLS sentence when the certificate is not trusted (--tls, system trust)', async () => {
    const { port } = await serveCli(['--tls-cert', certs.main.cert, '--tls-key', certs.main.key]);
    const run = await runCli(['msg', 'hi', '--port', String(port), '--tls', '--json']);
    expect(run.code).toBe(1);
    const error = jsonError(run.stdout);
    expect(error.code).toBe('E_TLS');
    expect(error.message).toMatch(/certificate is not trusted.*--tls-ca/);
    expect(run.stderr).toBe(`ferry: ${error.message}\n`);
  });

  it('a plain client against a TLS server fails with a sentence that mentions --tls', async () => {
    const { port } = await serveCli(['--tls-cert', certs.main.cert, '--tls-key', certs.main.key]);
    // A short --retry-for: a connection closed during the handshake looks like a restart, so it is retried.
    const run = await runCli(['msg', 'hi', '--port', String(port), '--json', '--retry-for', '1s', '--retry-initial', '50ms', '--retry-max', '200ms']);
    expect(run.code).toBe(1);
    expect(jsonError(run.stdout).message).toMatch(/--tls/);
    expect(run.stderr).toMatch(/^ferry: .*--tls/);
  });

  it('a TLS client against a plain server fails with a sentence saying the server may not use TLS', async () => {
    const { port } = await serveCli();
    for (const flags of [['--tls-ca', certs.main.cert], ['--tls']]) {
      const run = await runCli(['msg', 'hi', '--port', String(port), '--json', ...flags]);
      expect(run.code).toBe(1);
      const error = jsonError(run.stdout);
      expect(error.code).toBe('E_TLS');
      expect(error.message).toMatch(/may not use TLS/);
    }
  });

  it('checks the host name: a certificate for another name is refused even with its own CA trusted', async () => {
    const { proc: server, port } = await serveCli(['--tls-cert', certs.other.cert, '--tls-key', certs.other.key]);
    for (const host of ['localhost', '127.0.0.1']) {
      const run = await runCli(['msg', 'hi', '--host', host, '--port', String(port), '--json', '--tls-ca', certs.other.cert]);
      expect(run.code, host).toBe(1);
      const error = jsonError(run.stdout);
      expect(error.code).toBe('E_TLS');
      expect(error.message).toMatch(/not made out for this host name/);
    }
    expect(jsonLines(server.stdout).filter((r) => r.event === 'message')).toEqual([]);
  });
});

// =============================================================================================

describe('listening beyond loopback', () => {
  it('serve --host 0.0.0.0 without a token exits non-zero and says why and how', async () => {
    const uploadDir = path.join(tempDir('ferry-sec-cli-'), 'upload');
    const run = await runCli(['serve', '--host', '0.0.0.0', '--port', '0', '--upload-dir', uploadDir]);
    expect(run.code).not.toBe(0);
    expect(run.code).not.toBeNull();
    expect(run.stderr).toMatch(/^ferry: .*anyone on the network.*--token.*--insecure/);
    expect(jsonLines(run.stdout).filter((r) => r.event === 'listening')).toEqual([]);
  });

  it('starts with --insecure, and with --token', async () => {
    const insecure = await serveCli(['--host', '0.0.0.0', '--insecure']);
    expect(jsonLines(insecure.proc.stdout).find((r) => r.event === 'ready')).toMatchObject({ auth: 'none' });
    await stopCli(insecure.proc);
    const withToken = await serveCli(['--host', '0.0.0.0'], { FERRY_TOKEN: TOKEN });
    expect(jsonLines(withToken.proc.stdout).find((r) => r.event === 'listening')).toMatchObject({ host: '0.0.0.0' });
    expect(jsonLines(withToken.proc.stdout).find((r) => r.event === 'ready')).toMatchObject({ auth: 'token' });
    const run = await runCli(['msg', 'over the lan', '--port', String(withToken.port), '--token', TOKEN]);
    expect(run).toMatchObject({ code: 0, stdout: 'over the lan\n' });
    await stopCli(withToken.proc);
  });
});

describe('original-format clients under a token', () => {
  const legacyHi = Buffer.from('0000000002hi');

  it('are refused when a token is set', async () => {
    const { port, logs } = await startServer({ token: TOKEN });
    const raw = await rawConnect(port);
    raw.socket.write(legacyHi);
    const { bytes } = await within(raw.closed, 'the server to close the original client');
    expect(bytes.length).toBe(0);
    await logs.event('protocol-error', (r) => r.code === 'E_LEGACY_REFUSED');
    expect(logs.all('message')).toEqual([]);
  });

  it('are accepted with allowLegacy', async () => {
    const { port, logs } = await startServer({ token: TOKEN, allowLegacy: true });
    const raw = await rawConnect(port);
    raw.socket.write(legacyHi);
    await within(
      new Promise<void>((resolve) =>
        raw.socket.on('data', () => {
          if (raw.received().length >= legacyHi.length) resolve();
        }),
      ),
      'the echo',
    );
    expect(raw.received().equals(legacyHi)).toBe(true);
    await logs.event('message', (r) => r.text === 'hi');
  });
});

describe('connection limit', () => {
  it('with maxConnections 3 the 4th connection is closed at once while the first 3 keep working', async () => {
    const { port, logs } = await startServer({ maxConnections: 3 });
    const clients = [client(port), client(port), client(port)];
    await Promise.all(clients.map((c) => c.connect()));

    const fourth = await rawConnect(port);
    fourth.socket.write(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'raw' })]));
    const { bytes, afterMs } = await within(fourth.closed, 'the 4th connection to be closed');
    expect(bytes.length).toBe(0);
    expect(afterMs).toBeLessThan(1_000);
    await logs.event('turned-away', (r) => r.reason === 'too-many');

    const replies = await Promise.all(clients.map((c, i) => c.message(`still here ${i}`)));
    expect(replies).toEqual(['still here 0', 'still here 1', 'still here 2']);
    expect(logs.all('connected')).toHaveLength(3);
  });
});

// =============================================================================================

describe('hostile file names stay inside the upload folder', () => {
  const REFUSED = Symbol('refused');
  const cases: [name: string, expected: string | typeof REFUSED][] = [
    // A native name may be a relative path; one that climbs out, starts at a root or a drive, or
    // leads into the state folder is refused, never guessed at.
    ['../x1.txt', REFUSED],
    ['..\\x2.txt', REFUSED],
    ['/abs3.txt', REFUSED],
    ['C:\\abs4.txt', REFUSED],
    ['\\\\srv\\share5.txt', REFUSED],
    ['a/../../b6.txt', REFUSED],
    ['.ferry/partial/x6.part', REFUSED],
    ['%2e%2e/x7.txt', '%2e%2e/x7.txt'],
    ['%2e%2e%2fx8.txt', '%2e%2e%2fx8.txt'],
    ['f.txt:stream', 'f.txt_stream'],
    ['dots...', 'dots'],
    ['spaces   ', 'spaces'],
    ['both. . .', 'both'],
    ['NUL.txt', '_NUL.txt'],
    ['COM1', '_COM1'],
    ['CON', '_CON'],
    ['do..ts.txt', 'do..ts.txt'],
    ['..cache', '..cache'],
    ['.ferry', '.ferry (1)'],
    ['..', REFUSED],
    ['nul\u0000byte.txt', REFUSED],
    ['bell\u0007.txt', REFUSED],
    ['new\nline.txt', REFUSED],
    ['esc\u001b[31m.txt', REFUSED],
    ['c1\u0085.txt', REFUSED],
    ['del\u007f.txt', REFUSED],
  ];

  it('each name is stored under a safe name inside the folder, or refused with E_BAD_NAME', async () => {
    const { port, uploadDir } = await startServer();
    const c = client(port);
    const outcomes: string[] = [];
    for (const [i, [name, expected]] of cases.entries()) {
      const body = `case ${i} ${JSON.stringify(name)}`;
      const file = sourceFile(`case-${i}.bin`, body);
      if (expected === REFUSED) {
        const error = await rejection(c.upload(file, { name }));
        expect(error.code, JSON.stringify(name)).toBe('E_BAD_NAME');
      } else {
        const result = await c.upload(file, { name });
        expect(result.savedAs, JSON.stringify(name)).toBe(expected);
        expect(path.relative(uploadDir, path.join(uploadDir, result.savedAs)).split(path.sep)).toEqual(result.savedAs.split('/'));
        expect(fs.readFileSync(path.join(uploadDir, result.savedAs), 'utf8')).toBe(body);
        outcomes.push(result.savedAs.split('/')[0]!);
      }
      expectContained(uploadDir);
    }
    expect(finalFiles(uploadDir)).toEqual([...outcomes].sort());
    expect(partialFiles(uploadDir)).toEqual([]);
    // The state folder was not replaced by the upload called `.ferry`.
    expect(fs.lstatSync(path.join(uploadDir, '.ferry')).isDirectory()).toBe(true);
  });

  it('a 1000-character name is shortened, keeping its extension and whole characters', async () => {
    const { port, uploadDir } = await startServer();
    const c = client(port);
    for (const name of ['n'.repeat(996) + '.txt', '\u00e9'.repeat(1000) + '.jpeg', 'x'.repeat(1000)]) {
      const result = await c.upload(sourceFile('long.bin', name.slice(0, 10)), { name });
      expect(Buffer.byteLength(result.savedAs)).toBeLessThanOrEqual(200);
      expect(Buffer.byteLength(result.savedAs)).toBeGreaterThan(150);
      expect(name.startsWith(result.savedAs.replace(/\.[a-z]+$/, ''))).toBe(true);
      if (name.includes('.')) expect(path.extname(result.savedAs)).toBe(path.extname(name));
      expect(result.savedAs).not.toContain('\ufffd');
      expect(fs.existsSync(path.join(uploadDir, result.savedAs))).toBe(true);
      expectContained(uploadDir);
    }
  });

  it('Stra\u00dfe.txt and STRASSE.txt, and NFC and NFD \u00e9.txt, arriving together are all stored under distinct names', async () => {
    const { port, uploadDir } = await startServer();
    const pairs: [string, string][] = [
      ['Stra\u00dfe.txt', 'STRASSE.txt'],
      ['\u00e9.txt', 'e\u0301.txt'],
    ];
    for (const [first, second] of pairs) {
      const a = client(port);
      const b = client(port);
      await Promise.all([a.connect(), b.connect()]);
      const bodies = [`one ${first}`, `two ${second}`];
      const results = await Promise.all([
        a.upload(sourceFile('one.txt', bodies[0]!), { name: first }),
        b.upload(sourceFile('two.txt', bodies[1]!), { name: second }),
      ]);
      expect(results[0]!.savedAs).not.toBe(results[1]!.savedAs);
      for (const [i, result] of results.entries()) {
        expect(fs.readFileSync(path.join(uploadDir, result.savedAs), 'utf8')).toBe(bodies[i]);
      }
      expectContained(uploadDir);
    }
    const names = finalFiles(uploadDir);
    expect(names).toHaveLength(4);
    // NFD arrives normalised to NFC, so the two \u00e9 files are one name, numbered.
    expect(names.filter((n) => n.normalize('NFC') === n && /^\u00e9( \(1\))?\.txt$/.test(n))).toHaveLength(2);
  });

  it('a symlink planted under the uploaded name is neither followed nor replaced', async () => {
    const { port, uploadDir } = await startServer();
    const outside = path.join(tempDir('ferry-sec-outside-'), 'precious.txt');
    fs.writeFileSync(outside, 'do not touch');
    const planted = path.join(uploadDir, 'victim.txt');
    fs.symlinkSync(outside, planted);

    const result = await client(port).upload(sourceFile('attack.txt', 'overwritten!'), { name: 'victim.txt' });
    expect(result.savedAs).toBe('victim (1).txt');
    expect(fs.readFileSync(outside, 'utf8')).toBe('do not touch');
    expect(fs.readlinkSync(planted)).toBe(outside);
    expect(fs.lstatSync(path.join(uploadDir, result.savedAs)).isFile()).toBe(true);
    expect(fs.readFileSync(path.join(uploadDir, result.savedAs), 'utf8')).toBe('overwritten!');
    expectContained(uploadDir, [planted]);
  });

  it('an original client offering path names in its 20-byte field stays inside too', async () => {
    const { port, uploadDir } = await startServer();
    const names = ['../../etc/passwd', 'C:\\Windows\\x.dll', '/etc/hosts', '..\\..\\boot.ini'];
    const raw = await rawConnect(port);
    const parts: Buffer[] = [];
    for (const [i, name] of names.entries()) {
      const body = Buffer.from(`legacy ${i}`);
      parts.push(LEGACY_FILE_COMMAND, encodeLegacyFileHeader(body.length, name), body);
    }
    parts.push(LEGACY_EXIT_COMMAND);
    raw.socket.write(Buffer.concat(parts));
    const { bytes } = await within(raw.closed, 'the original client to be answered and closed');
    expect(bytes.toString('latin1')).toBe('0000000003ACK'.repeat(names.length));
    expect(finalFiles(uploadDir)).toEqual(['boot.ini', 'hosts', 'passwd', 'x.dll']);
    expectContained(uploadDir);
  });
});

describe('holes that were closed', () => {
  it('answers on connections opened in advance get no extra guesses once the address is shut out', async () => {
    const { port, logs } = await startServer({ token: TOKEN });
    // Open several connections and get each to the challenge before answering any of them.
    const raws = await Promise.all(Array.from({ length: 7 }, () => rawConnect(port)));
    for (const raw of raws) raw.socket.write(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'guesser' })]));
    await within(
      (async () => {
        for (const raw of raws) while (!decodeReplies(raw.received()).some((t) => t.type === 'challenge')) await new Promise((r) => setImmediate(r));
      })(),
      'every challenge',
      5_000,
    );
    for (const raw of raws.slice(0, 5)) raw.socket.write(encode.auth('0'.repeat(64)));
    await within(Promise.all(raws.slice(0, 5).map((r) => r.closed)), 'the refusals', 10_000);
    // The sixth connection answers right, but its address is shut out by now: no welcome.
    const last = raws[5]!;
    const challenge = decodeReplies(last.received()).find((t) => t.type === 'challenge') as { nonce: string };
    last.socket.write(encode.auth(authMac(TOKEN, challenge.nonce)));
    const { bytes } = await within(last.closed, 'the shut-out refusal', 10_000);
    const tokens = decodeReplies(bytes);
    expect(tokens.some((t) => t.type === 'welcome')).toBe(false);
    expect(tokens.find((t) => t.type === 'error')).toMatchObject({ error: { code: 'E_AUTH_FAILED' } });
    expect(logs.text.join('')).not.toContain(TOKEN);
  });

  it('an original-format client that trickles a byte and stops meets the handshake timeout', async () => {
    const { port } = await startServer({ handshakeTimeoutMs: 300, idleTimeoutMs: 0 });
    const raw = await rawConnect(port);
    raw.socket.write('0');
    const { afterMs } = await within(raw.closed, 'the handshake timeout', 5_000);
    expect(afterMs).toBeGreaterThanOrEqual(250);
  });
});
