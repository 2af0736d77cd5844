/**
 * Inspection (apps/inspect/): sending real server/session/client inspection events to a WebSocket
 * in @statelyai/inspect's format, the loopback relay, and never keeping a process alive (the
 * sanitiser itself is tested in sanitize.test.ts).
 * Synchronises on socket and process events, never on sleeps.
 */
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { StatelyActorEvent, StatelyInspectionEvent, StatelySnapshotEvent } from '@statelyai/inspect';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createActor, createMachine } from 'xstate';
import { REDACTED } from '../apps/inspect/sanitize.js';
import { startInspection, type Inspection } from '../apps/inspect/start.js';
import { createClient, createServer } from '../index.js';
import { ws, type WsSocket } from './helpers/ws.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BUILT = path.join(REPO_ROOT, 'dist/apps/inspect/start.js');
const SOURCES = [
  ...fs.readdirSync(path.join(REPO_ROOT, 'apps/inspect')).map((name) => path.join(REPO_ROOT, 'apps/inspect', name)),
  path.join(REPO_ROOT, 'transport/corked-writer.ts'),
];
const SECRET = 'tok-3f9a8c1d2e7b';

/** A plain WebSocket server on loopback that keeps every text message it receives. */
async function startReceiver(port = 0) {
  const wss = new ws.WebSocketServer({ host: '127.0.0.1', port });
  await once(wss as unknown as NodeJS.EventEmitter, 'listening');
  const texts: string[] = [];
  const connections: WsSocket[] = [];
  wss.on('connection', (socket) => {
    connections.push(socket);
    socket.on('message', (data) => texts.push(data.toString()));
  });
  return {
    port: wss.address().port,
    texts,
    connections,
    wss,
    close() {
      for (const client of wss.clients) client.terminate();
      wss.close();
    },
  };
}

/** Resolves with the first message on `socket` that parses to an event matching `predicate`. */
function nextMatching(socket: WsSocket, predicate: (event: StatelyInspectionEvent) => boolean): Promise<StatelyInspectionEvent> {
  return new Promise((resolve) => {
    socket.on('message', (data) => {
      const event = JSON.parse(data.toString()) as StatelyInspectionEvent;
      if (predicate(event)) resolve(event);
    });
  });
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

const cleanups: (() => unknown)[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

function scratch(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-inspect-'));
  dirs.push(dir);
  return dir;
}

async function inspection(target: string | true, secrets: string[] = [SECRET]): Promise<Inspection> {
  const started = await startInspection(target, secrets);
  cleanups.push(() => started.stop());
  return started;
}

// --- Real server, session and client ----------------------------------------------------------

describe('startInspection towards a WebSocket', () => {
  it('sends registrations and snapshots of server, session and client in the library format, with nothing secret or bulky', async () => {
    const receiver = await startReceiver();
    cleanups.push(() => receiver.close());
    const url = `ws://127.0.0.1:${receiver.port}`;
    const serverInspection = await inspection(url);
    const clientInspection = await inspection(url);
    expect(serverInspection.description).toContain(url);

    const dir = scratch();
    const file = path.join(dir, 'payload.bin');
    fs.writeFileSync(file, Buffer.alloc(300_000, 7));
    const server = createServer({ port: 0, uploadDir: path.join(dir, 'upload'), inspect: serverInspection.inspect });
    const { port } = await server.listen();
    const client = createClient({ port, inspect: clientInspection.inspect });
    expect(await client.message(`hello ${SECRET}`)).toBe(`hello ${SECRET}`);
    expect((await client.upload(file)).bytes).toBe(300_000);
    await client.close();
    await server.close();
    // stop() sends what is queued and closes; the receiver has seen every message once it returns.
    await clientInspection.stop();
    await serverInspection.stop();

    const all = receiver.texts.join('\n');
    expect(receiver.texts.length).toBeGreaterThan(20);
    expect(all).not.toContain(SECRET);
    expect(all).not.toContain('"type":"Buffer"');
    expect(all).not.toMatch(/\[(\d{1,3},){32}/); // no byte arrays
    expect(all).toContain(REDACTED); // the message text carried the secret
    expect(all).toMatch(/<Buffer \d+ bytes>/); // data chunks went through, summarised

    const events = receiver.texts.map((text) => JSON.parse(text) as StatelyInspectionEvent);
    for (const event of events) {
      expect(['@xstate.actor', '@xstate.event', '@xstate.snapshot']).toContain(event.type);
      expect(typeof event._version).toBe('string');
      expect(typeof event.sessionId).toBe('string');
      expect(typeof event.createdAt).toBe('string');
    }
    const actors = events.filter((e): e is StatelyActorEvent => e.type === '@xstate.actor');
    const snapshots = events.filter((e): e is StatelySnapshotEvent => e.type === '@xstate.snapshot');
    const actorNamed = (match: (name: string) => boolean) => {
      const found = actors.find((e) => match(e.name));
      expect(found, `an actor registration among ${actors.map((e) => e.name).join(', ')}`).toBeDefined();
      return found!;
    };
    const snapshotsOf = (actor: StatelyActorEvent) =>
      snapshots.filter((e) => e.sessionId === actor.sessionId).map((e) => e.snapshot as { value?: unknown; context?: Record<string, unknown> });

    const serverActor = actorNamed((name) => name === 'server');
    const sessionActor = actorNamed((name) => /^session-\d+ 127\.0\.0\.1:\d+$/.test(name));
    const clientActor = actorNamed((name) => name === 'client');
    // Each session is a child of the one actor that holds the server's sessions, watched by the same inspector.
    const poolActor = actorNamed((name) => name === 'session-pool');
    expect(sessionActor.parentId).toBe(poolActor.sessionId);
    expect(serverActor.definition).toContain('"listening"'); // the machine definition, for the diagram

    for (const actor of [serverActor, sessionActor, clientActor]) expect(snapshotsOf(actor).length).toBeGreaterThan(0);
    const serverContext = snapshotsOf(serverActor).at(-1)!.context!;
    // Contexts hold data only: no logger, store or socket to hide.
    expect(serverContext.settings).toMatchObject({ host: '127.0.0.1', tls: false });
    expect(JSON.stringify(serverContext)).not.toMatch(/"<\w+>"/);
    const sessionContext = snapshotsOf(sessionActor).at(-1)!.context!;
    expect(sessionContext.settings).toMatchObject({ remote: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
    expect(JSON.stringify(sessionContext)).not.toMatch(/"<\w+>"/);
    expect(sessionActor.name.startsWith(`${(sessionContext.settings as Record<string, unknown>).id} `)).toBe(true);
    expect(snapshotsOf(clientActor).some((snapshot) => JSON.stringify(snapshot.value).includes('online'))).toBe(true);
  });

  it('keeps events while nobody listens and sends them once something does', async () => {
    const port = await freePort();
    const inspecting = await inspection(`ws://127.0.0.1:${port}`);
    const actor = createActor(createMachine({ id: 'early', initial: 'a', states: { a: { on: { go: 'b' } }, b: {} } }), { id: 'early', inspect: inspecting.inspect });
    actor.start();
    actor.send({ type: 'go' });
    actor.stop();

    const receiver = await startReceiver(port);
    cleanups.push(() => receiver.close());
    const [socket] = (await once(receiver.wss as unknown as NodeJS.EventEmitter, 'connection')) as [WsSocket];
    const registered = nextMatching(socket, (e) => e.type === '@xstate.actor' && e.name === 'early');
    const movedToB = nextMatching(socket, (e) => e.type === '@xstate.snapshot' && (e.snapshot as { value?: unknown }).value === 'b');
    await registered;
    await movedToB;
  });

  it('stop() closes the connection; afterwards inspect is a harmless no-op', async () => {
    const receiver = await startReceiver();
    cleanups.push(() => receiver.close());
    const inspecting = await startInspection(`ws://127.0.0.1:${receiver.port}`);
    const [socket] = (await once(receiver.wss as unknown as NodeJS.EventEmitter, 'connection')) as [WsSocket];
    const closed = once(socket as unknown as NodeJS.EventEmitter, 'close');
    await inspecting.stop();
    await closed;
    const before = receiver.texts.length;
    const actor = createActor(createMachine({ id: 'late' }), { inspect: inspecting.inspect });
    expect(() => actor.start().stop()).not.toThrow();
    await inspecting.stop(); // idempotent
    expect(receiver.texts.length).toBe(before);
    expect(receiver.connections).toHaveLength(1);
  });

  it('rejects what is not a WebSocket URL', async () => {
    await expect(startInspection('localhost:8080')).rejects.toThrow(/ws:\/\//);
    await expect(startInspection('http://127.0.0.1:8080')).rejects.toThrow(/ws:\/\//);
    await expect(startInspection('not a url')).rejects.toThrow(/inspector URL/);
  });
});

// --- The local relay ---------------------------------------------------------------------------

describe('startInspection(true)', () => {
  it('serves the Stately inspector bridge on loopback and relays events only to its own page', async () => {
    const inspecting = await inspection(true);
    const pageUrl = inspecting.pageUrl!;
    expect(pageUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(inspecting.url).toBe(pageUrl.replace('http:', 'ws:'));
    expect(inspecting.description).toContain(pageUrl);
    expect(inspecting.description).toMatch(/internet/);

    const page = await fetch(pageUrl);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<iframe id="inspector" src="https://stately.ai/inspect">');

    // A page under a foreign host name (DNS rebinding) gets nothing.
    const { port } = new URL(pageUrl);
    const foreignHost = await new Promise<number | undefined>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, headers: { host: `evil.example:${port}` } }, (res) => {
        res.resume();
        resolve(res.statusCode);
      }).on('error', reject);
    });
    expect(foreignHost).toBe(421);

    // Another web site's script cannot listen in.
    const foreign = new ws.WebSocket(inspecting.url, { origin: 'https://evil.example' });
    cleanups.push(() => foreign.terminate());
    const outcome = await new Promise<string>((resolve) => {
      foreign.on('open', () => resolve('opened'));
      foreign.on('error', (error) => resolve(error.message));
    });
    expect(outcome).toMatch(/401/);

    // The relay's own page can.
    const browser = new ws.WebSocket(inspecting.url, { origin: pageUrl });
    cleanups.push(() => browser.terminate());
    await once(browser as unknown as NodeJS.EventEmitter, 'open');
    const registered = nextMatching(browser, (e) => e.type === '@xstate.actor' && e.name === 'demo');
    const actor = createActor(createMachine({ id: 'demo', context: { password: 'hunter2', note: `has ${SECRET}`, blob: Buffer.alloc(4096) } }), {
      id: 'demo',
      inspect: inspecting.inspect,
    });
    actor.start();
    const event = (await registered) as StatelyActorEvent;
    actor.stop();
    expect(event.snapshot.context).toEqual({ password: REDACTED, note: REDACTED, blob: '<Buffer 4096 bytes>' });

    await inspecting.stop();
    await expect(fetch(pageUrl)).rejects.toThrow();
  });
});

// --- Never keeping a process alive --------------------------------------------------------------

describe('a process that only starts inspection', () => {
  beforeAll(() => {
    const stale = !fs.existsSync(BUILT) || SOURCES.some((source) => fs.statSync(BUILT).mtimeMs < fs.statSync(source).mtimeMs);
    if (stale) execFileSync('npm', ['run', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' });
  }, 120_000);

  const targets: [string, () => Promise<string>][] = [
    ['nothing listens', async () => `ws://127.0.0.1:${await freePort()}`],
    [
      'the listener accepts but never answers',
      async () => {
        const held: net.Socket[] = [];
        const server = net.createServer((socket) => held.push(socket));
        server.listen(0, '127.0.0.1');
        await once(server, 'listening');
        cleanups.push(() => {
          for (const socket of held) socket.destroy();
          server.close();
        });
        return `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
      },
    ],
  ];

  it.each(targets)('exits by itself when %s', async (_what, makeUrl) => {
    const url = await makeUrl();
    const script = [
      `import { startInspection } from ${JSON.stringify(pathToFileURL(BUILT).href)};`,
      `import { createActor, createMachine } from 'xstate';`,
      `const inspection = await startInspection(${JSON.stringify(url)}, ['s3cret']);`,
      `const actor = createActor(createMachine({ id: 'idle', initial: 'a', states: { a: { on: { go: 'b' } }, b: {} } }), { inspect: inspection.inspect });`,
      `actor.start();`,
      `actor.send({ type: 'go' });`,
      `console.log('started');`,
    ].join('\n');
    const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => key !== 'NODE_OPTIONS' && !key.startsWith('VITEST')));
    const startedAt = performance.now();
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    // Only a safety net so a hanging child fails the test instead of outliving it.
    const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
    clearTimeout(killer);
    const elapsedMs = performance.now() - startedAt;
    expect({ code, signal, stdout, stderr }).toEqual({ code: 0, signal: null, stdout: 'started\n', stderr: '' });
    expect(elapsedMs).toBeLessThan(4_000);
  });
});
