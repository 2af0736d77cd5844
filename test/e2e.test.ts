/**
 * The CLI as a user runs it: real `node dist/apps/cli.js` processes talking over loopback.
 * Synchronises on process exits and on lines appearing in their output, never on sleeps.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { once } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { scratchDirs, sha256 } from './helpers/files.js';
import { buildCliOnce, isEvent, jsonLines, killAll, listeningPort, runCli, serveInto, startCli, type Proc } from './helpers/processes.js';

const scratch = scratchDirs('ferry-e2e-');

beforeAll(buildCliOnce, 120_000);

afterEach(async () => {
  await killAll();
});

afterAll(() => scratch.removeAll());

/** `ferry serve --port 0` into a fresh upload folder; resolves once it accepts connections. */
function serve(extra: string[] = []): Promise<{ proc: Proc; port: number; uploadDir: string }> {
  return serveInto(scratch(), extra);
}

/** Ports that were free a moment ago (held together, so they are distinct). */
async function freePorts(n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => net.createServer().listen(0, '127.0.0.1'));
  await Promise.all(servers.map((s) => once(s, 'listening')));
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

function expectNoStackTrace(text: string): void {
  expect(text).not.toMatch(/^\s+at\s/m);
  expect(text).not.toMatch(/node:internal|\.js:\d+:\d+/);
}

describe('ferry msg and send', () => {
  it('serve --port 0 reports its port; msg prints the echo of each text and exits 0', async () => {
    const { proc: server, port } = await serve();
    expect(port).toBeGreaterThan(0);

    const result = await runCli(['msg', 'hi', 'фото', '--port', String(port)]);
    expect(result).toMatchObject({ code: 0, stdout: 'hi\nфото\n', stderr: '' });
    await server.waitForLine(isEvent('message', (r) => r.text === 'фото'));
    expect(jsonLines(server.stdout).filter((r) => r.event === 'message').map((r) => r.text)).toEqual(['hi', 'фото']);
  });

  it('send --json prints one JSON object per file with correct names, sizes and hashes', async () => {
    const { port, uploadDir } = await serve();
    const src = scratch();
    const a = path.join(src, 'a.txt');
    const b = path.join(src, 'b.bin');
    const bodyA = Buffer.from('first file\n');
    const bodyB = Buffer.alloc(300_000);
    for (let i = 0; i < bodyB.length; i++) bodyB[i] = (i * 7919) % 251;
    fs.writeFileSync(a, bodyA);
    fs.writeFileSync(b, bodyB);

    const result = await runCli(['send', a, b, '--json', '--port', String(port)]);
    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines.map((l) => JSON.parse(l))).toEqual([
      { file: a, savedAs: 'a.txt', bytes: bodyA.length, sha256: sha256(bodyA), resumedFrom: 0 },
      { file: b, savedAs: 'b.bin', bytes: bodyB.length, sha256: sha256(bodyB), resumedFrom: 0 },
    ]);
    expect(fs.readFileSync(path.join(uploadDir, 'a.txt')).equals(bodyA)).toBe(true);
    expect(fs.readFileSync(path.join(uploadDir, 'b.bin')).equals(bodyB)).toBe(true);
  });

  it('send of a missing file exits 1 with one sentence on stderr and no stack trace', async () => {
    const { port, uploadDir } = await serve();
    const result = await runCli(['send', 'missing.txt', '--port', String(port)], { cwd: scratch() });
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    const lines = result.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^ferry: .*missing\.txt.*\.$/);
    expectNoStackTrace(result.stderr);
    expect(fs.readdirSync(uploadDir).filter((n) => n !== '.ferry')).toEqual([]);
  });

  it('msg without any text is a usage error: exit 2', async () => {
    const result = await runCli(['msg']);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(/missing required argument/);
    expectNoStackTrace(result.stderr);
  });

  it('msg to a port nobody listens on gives up after --retry-for with a clear sentence: exit 1', async () => {
    const [port] = await freePorts(1);
    const started = Date.now();
    const result = await runCli(['msg', '--port', String(port), '--retry-for', '1s', 'x']);
    expect(result.code).toBe(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
    expect(result.stdout).toBe('');
    const last = result.stderr.trimEnd().split('\n').pop()!;
    expect(last).toMatch(/^ferry: The server could not be reached for 1 s: .*127\.0\.0\.1:\d+.*\.$/);
    expect(last).toContain(String(port));
    expectNoStackTrace(result.stderr);
  });
});

describe('ferry connect', () => {
  it('sends piped lines and files, prints every reply, and exits 0 after all acknowledgements', async () => {
    const { proc: server, port, uploadDir } = await serve();
    const src = scratch();
    const one = path.join(src, 'one.txt');
    const two = path.join(src, 'two.txt');
    fs.writeFileSync(one, 'uploaded after "send file"\n');
    fs.writeFileSync(two, 'uploaded with /send\n');

    const result = await runCli(['connect', '--port', String(port)], { input: `hello\nsend file\n${one}\n/send ${two}\nexit\n` });
    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines).toContain('hello');
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${escape(one)} → one\\.txt .*sha256 ${sha256(fs.readFileSync(one))}$`)));
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${escape(two)} → two\\.txt .*sha256 ${sha256(fs.readFileSync(two))}$`)));
    expect(fs.readFileSync(path.join(uploadDir, 'one.txt'), 'utf8')).toBe('uploaded after "send file"\n');
    expect(fs.readFileSync(path.join(uploadDir, 'two.txt'), 'utf8')).toBe('uploaded with /send\n');

    // The session is over on the server side too, so its whole log is in.
    await server.waitForLine(isEvent('disconnected'));
    const messages = jsonLines(server.stdout).filter((r) => r.event === 'message');
    expect(messages.map((r) => r.text)).toEqual(['hello']);
    // `send file`, the path and `/send …` are commands, not messages.
    expect(server.stdout.match(/"event":"message"/g)).toHaveLength(1);
  });
});

describe('ferry serve', () => {
  it('--help names --host, --port, --upload-dir, --config and the FERRY_ variables', async () => {
    const result = await runCli(['serve', '--help']);
    expect(result.code).toBe(0);
    for (const word of ['--host', '--port', '--upload-dir', '--config', 'FERRY_']) expect(result.stdout).toContain(word);
  });

  it('settings: config file, then FERRY_PORT, then --port, each overriding the one before', async () => {
    const [fromConfig, fromEnv, fromFlag] = (await freePorts(3)) as [number, number, number];
    const dir = scratch();
    const config = path.join(dir, 'ferry.json');
    fs.writeFileSync(config, JSON.stringify({ port: fromConfig }));
    const upload = ['--upload-dir', path.join(dir, 'upload')];

    const [configOnly, envOverConfig, flagOverEnv] = await Promise.all([
      listeningPort(startCli(['serve', ...upload, '--config', config])),
      listeningPort(startCli(['serve', ...upload, '--config', config], { env: { FERRY_PORT: String(fromEnv) } })),
      listeningPort(startCli(['serve', ...upload, '--config', config, '--port', String(fromFlag)], { env: { FERRY_PORT: String(fromEnv) } })),
    ]);
    expect(configOnly).toBe(fromConfig);
    expect(envOverConfig).toBe(fromEnv);
    expect(flagOverEnv).toBe(fromFlag);
  });

  it('SIGTERM makes the server log "stopped" and exit 0, also with an idle client connected', async () => {
    const { proc: server, port } = await serve(['--grace', '30s']);
    // An interactive client that stays connected (its stdin stays open) and says nothing.
    const idle = startCli(['connect', '--port', String(port)]);
    await server.waitForLine(isEvent('hello'));

    server.child.kill('SIGTERM');
    // With nothing in flight the grace period (30 s) is not waited for.
    expect(await server.exited).toEqual({ code: 0, signal: null });
    const events = jsonLines(server.stdout).map((r) => r.event);
    expect(events).toContain('signal');
    expect(events).toContain('disconnected');
    expect(events.at(-1)).toBe('stopped');
    expect(idle.stderr).not.toMatch(/^\s+at\s/m);
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
