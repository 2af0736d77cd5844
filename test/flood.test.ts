/**
 * A real `ferry serve` process under hostile load on 127.0.0.1: random bytes, giant length
 * headers, slow drips, idle connections and a connection flood beyond --max-connections. Afterwards
 * ordinary `ferry msg` and `ferry send` must still work and the server must not have grown.
 * Every socket is bounded in count and time; everything waits on socket events, log lines and
 * process exits (the drip's own 50 ms pace is the attack, not synchronisation).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientDecoder, encode, frameHeader, preamble } from '../transport/native-codec.js';
import { DEFAULT_LIMITS, FrameType } from '../transport/frames.js';
import { content, finalFiles, removeTempDirs, tempDir, within } from './helpers/async.js';
import { buildCliOnce, jsonLines, killAll, runCli, startCli, type Proc } from './helpers/processes.js';

declare module 'vitest' {
  interface TaskMeta {
    /** The server's resident set size after the flood, in MiB. */
    serverRssMiB?: number;
  }
}

const HOST = '127.0.0.1';
const HANDSHAKE_MS = 2_000;
const MAX_CONNECTIONS = 150;
/** A connection closed this soon after connecting was closed "at once". */
const AT_ONCE_MS = 1_500;
/** Closed by the handshake timeout: not before this… */
const TIMEOUT_EARLIEST_MS = HANDSHAKE_MS - 200;
/** …and not after this. */
const TIMEOUT_LATEST_MS = HANDSHAKE_MS + 2_000;
/** No socket of ours may stay open longer than this, whatever happens. */
const SOCKET_BOUND_MS = 8_000;

let server: Proc;
let port: number;
let uploadDir: string;

beforeAll(async () => {
  buildCliOnce();
  uploadDir = path.join(tempDir('ferry-flood-'), 'upload');
  server = startCli(['serve', '--port', '0', '--handshake-timeout', '2s', '--max-connections', String(MAX_CONNECTIONS), '--upload-dir', uploadDir]);
  const line = await server.waitForLine((l) => jsonLines(l)[0]?.event === 'listening');
  port = jsonLines(line)[0]!.port as number;
  await server.waitForLine((l) => jsonLines(l)[0]?.event === 'ready');
}, 120_000);

afterAll(async () => {
  await killAll();
  removeTempDirs();
});

// --- Sockets ----------------------------------------------------------------------------------

interface Closed {
  /** Milliseconds from connecting to the close (-1: never connected). */
  afterMs: number;
  bytes: Buffer;
  /** We had to destroy it ourselves after SOCKET_BOUND_MS: the server never closed it. */
  forced: boolean;
}

interface Attack {
  socket: net.Socket;
  connected: Promise<void>;
  closed: Promise<Closed>;
}

/** Opens a connection whose close (by the server) is reported; it is destroyed after SOCKET_BOUND_MS regardless. */
function connect(onConnect: (socket: net.Socket) => void = () => {}): Attack {
  const socket = net.connect({ host: HOST, port });
  const chunks: Buffer[] = [];
  let connectedAt = -1;
  let forced = false;
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => {});
  const bound = setTimeout(() => {
    forced = true;
    socket.destroy();
  }, SOCKET_BOUND_MS);
  const connected = new Promise<void>((resolve) => {
    socket.once('connect', () => {
      connectedAt = Date.now();
      onConnect(socket);
      resolve();
    });
    socket.once('close', () => resolve());
  });
  const closed = new Promise<Closed>((resolve) =>
    socket.once('close', () => {
      clearTimeout(bound);
      resolve({ afterMs: connectedAt < 0 ? -1 : Date.now() - connectedAt, bytes: Buffer.concat(chunks), forced });
    }),
  );
  return { socket, connected, closed };
}

function closedByServer(results: Closed[], what: string): void {
  const forced = results.filter((r) => r.forced).length;
  expect(forced, `${forced} of ${results.length} ${what} were never closed by the server`).toBe(0);
  expect(results.every((r) => r.afterMs >= 0), `every one of the ${what} connected`).toBe(true);
}

/** Writes one byte every 50 ms (at most `bytes.length` of them) until the socket closes. */
function drip(socket: net.Socket, bytes: Buffer): void {
  let i = 0;
  const timer = setInterval(() => {
    if (i >= bytes.length || socket.destroyed || !socket.writable) {
      clearInterval(timer);
      return;
    }
    socket.write(bytes.subarray(i, i + 1));
    i++;
  }, 50);
  socket.once('close', () => clearInterval(timer));
}

/** The server's log records, parsed once each as they arrive, and how many there are of each event. */
const records: Record<string, unknown>[] = [];
const events = new Map<unknown, number>();
let parsed = 0;
function serverLog(): Record<string, unknown>[] {
  const text = server.stdout;
  const end = text.lastIndexOf('\n') + 1;
  if (end > parsed) {
    for (const record of jsonLines(text.slice(parsed, end))) {
      records.push(record);
      events.set(record.event, (events.get(record.event) ?? 0) + 1);
    }
    parsed = end;
  }
  return records;
}

function count(event: string, extra?: (r: Record<string, unknown>) => boolean): number {
  const all = serverLog();
  return extra ? all.filter((r) => r.event === event && extra(r)).length : (events.get(event) ?? 0);
}

/** Resolves once the server has logged the end of every session it started. */
async function serverIdle(): Promise<void> {
  const idle = () => count('disconnected') >= count('connected');
  if (idle()) return;
  await server.waitForLine(idle, { timeoutMs: SOCKET_BOUND_MS });
}

// --- The attack ---------------------------------------------------------------------------------

describe('a real server under a flood', () => {
  it('random bytes, giant length headers, slow drips and idle connections, all at once, are all closed by the server', async () => {
    const random = Array.from({ length: 50 }, (_, i) => connect((s) => s.write(content(64 + i * 37, 1000 + i))));
    const giantNative = Array.from({ length: 10 }, () => connect((s) => s.write(Buffer.concat([preamble(), frameHeader(FrameType.MESSAGE, 0xffffffff)]))));
    const giantLegacy = Array.from({ length: 10 }, () => connect((s) => s.write('9999999999')));
    // A valid preamble and hello, a byte at a time: finishing would take ~3 s, beyond the handshake timeout.
    const hello = Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'slow-loris-0123456789' })]);
    expect(hello.length * 50).toBeGreaterThan(HANDSHAKE_MS + 500);
    const slow = Array.from({ length: 20 }, () => connect((s) => drip(s, hello)));
    const idle = Array.from({ length: 50 }, () => connect());
    expect(random.length + giantNative.length + giantLegacy.length + slow.length + idle.length).toBeLessThanOrEqual(MAX_CONNECTIONS);

    const [randomDone, nativeDone, legacyDone, slowDone, idleDone] = await within(
      Promise.all([random, giantNative, giantLegacy, slow, idle].map((group) => Promise.all(group.map((a) => a.closed)))),
      'every attacking connection to close',
      SOCKET_BOUND_MS + 2_000,
    );

    closedByServer(randomDone!, 'random-byte connections');
    for (const r of randomDone!) expect(r.afterMs).toBeLessThan(TIMEOUT_LATEST_MS);

    closedByServer(nativeDone!, 'giant native headers');
    for (const r of nativeDone!) {
      expect(r.afterMs).toBeLessThan(AT_ONCE_MS);
      // The server says why, and never tries to buffer 4 GiB.
      const replies = new ClientDecoder(DEFAULT_LIMITS).feed(r.bytes);
      expect(replies).toEqual([{ type: 'error', error: expect.objectContaining({ code: 'E_MESSAGE_TOO_LARGE' }) }]);
    }
    closedByServer(legacyDone!, 'giant original-format headers');
    for (const r of legacyDone!) {
      expect(r.afterMs).toBeLessThan(AT_ONCE_MS);
      expect(r.bytes.length).toBe(0);
    }

    // The drip does not keep a connection alive past the handshake timeout.
    closedByServer(slowDone!, 'slow drips');
    for (const r of slowDone!) {
      expect(r.afterMs).toBeGreaterThanOrEqual(TIMEOUT_EARLIEST_MS);
      expect(r.afterMs).toBeLessThan(TIMEOUT_LATEST_MS);
      expect(r.bytes.length).toBe(0);
    }
    closedByServer(idleDone!, 'idle connections');
    for (const r of idleDone!) {
      expect(r.afterMs).toBeGreaterThanOrEqual(TIMEOUT_EARLIEST_MS);
      expect(r.afterMs).toBeLessThan(TIMEOUT_LATEST_MS);
      expect(r.bytes.length).toBe(0);
    }
    await serverIdle();
    expect(count('handshake-timeout')).toBe(slow.length + idle.length);
    expect(count('turned-away')).toBe(0);
  }, 30_000);

  it(`a flood of 200 connections at once: those beyond ${MAX_CONNECTIONS} are closed at once, the rest at the handshake timeout`, async () => {
    await serverIdle();
    const turnedAwayBefore = count('turned-away', (r) => r.reason === 'too-many');
    const flood = Array.from({ length: 200 }, () => connect());
    const results = await within(Promise.all(flood.map((a) => a.closed)), 'every flooding connection to close', SOCKET_BOUND_MS + 2_000);

    closedByServer(results, 'flooding connections');
    const atOnce = results.filter((r) => r.afterMs < AT_ONCE_MS);
    const timedOut = results.filter((r) => r.afterMs >= TIMEOUT_EARLIEST_MS && r.afterMs < TIMEOUT_LATEST_MS);
    expect(atOnce.length + timedOut.length, 'every close was either at once or at the handshake timeout').toBe(results.length);
    expect(timedOut).toHaveLength(MAX_CONNECTIONS);
    expect(atOnce).toHaveLength(results.length - MAX_CONNECTIONS);
    for (const r of results) expect(r.bytes.length).toBe(0);

    await serverIdle();
    expect(count('turned-away', (r) => r.reason === 'too-many') - turnedAwayBefore).toBe(results.length - MAX_CONNECTIONS);
  }, 30_000);

  it('afterwards ferry msg and ferry send still work, and the server stays small', async ({ task }) => {
    await serverIdle();
    const msg = await runCli(['msg', 'after the storm', '--port', String(port)]);
    expect(msg).toMatchObject({ code: 0, stdout: 'after the storm\n', stderr: '' });

    const dir = tempDir('ferry-flood-src-');
    const file = path.join(dir, 'survivor.bin');
    const body = content(200_000, 7);
    fs.writeFileSync(file, body);
    const send = await runCli(['send', file, '--port', String(port), '--json', '--state-dir', path.join(dir, 'state')]);
    expect(send.code, send.stderr).toBe(0);
    expect(jsonLines(send.stdout)).toMatchObject([{ savedAs: 'survivor.bin', bytes: body.length }]);
    expect(finalFiles(uploadDir)).toEqual(['survivor.bin']);
    expect(fs.readFileSync(path.join(uploadDir, 'survivor.bin')).equals(body)).toBe(true);

    const status = `/proc/${server.child.pid}/status`;
    if (fs.existsSync(status)) {
      const kib = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(status, 'utf8'))?.[1]);
      expect(kib).toBeGreaterThan(0);
      task.meta.serverRssMiB = Math.round(kib / 1024);
      expect(task.meta.serverRssMiB, `server RSS after the flood: ${task.meta.serverRssMiB} MiB`).toBeLessThan(200);
    }
    expect(server.hasExited).toBe(false);
  }, 30_000);
});
