/**
 * ferry against stand-ins for the original Python tool (test/legacy/original_*.py), as real
 * processes over real loopback sockets:
 *   (a) `ferry serve` with the original interactive client,
 *   (b) `ferry msg|send|connect --legacy` with the original server.
 * The wire format and its quirks are described in LEGACY-WIRE.md; the stand-ins reproduce them.
 * Everything synchronises on process exits and on lines appearing in output, never on sleeps.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { within } from './helpers/async.js';
import { scratchDirs, sha256 } from './helpers/files.js';
import { REPO_ROOT, buildCliOnce, isEvent, jsonLines, killAll, startCli, type Exit, type Proc } from './helpers/processes.js';

const ORIGINAL_SERVER = path.join(REPO_ROOT, 'test/legacy/original_server.py');
const ORIGINAL_CLIENT = path.join(REPO_ROOT, 'test/legacy/original_client.py');
/** Longest a single process run may take before the test fails with its output. */
const RUN_MS = 20_000;

const scratch = scratchDirs('ferry-legacy-');

beforeAll(buildCliOnce, 120_000);

afterEach(async () => {
  await Promise.all([killAll(), killPythons()]);
});

afterAll(() => scratch.removeAll());

/** Writes `body` to `dir/name` and returns the path. */
function writeFile(dir: string, name: string, body: Buffer): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, body);
  return file;
}

// ---------------------------------------------------------------------------------------------
// Python processes (the CLI ones come from helpers/processes.ts)

interface PyProc {
  readonly child: ChildProcess;
  readonly stdout: () => string;
  readonly stderr: () => string;
  lines(): string[];
  waitForLine(predicate: (line: string) => boolean, what: string): Promise<string>;
  readonly exited: Promise<Exit>;
  hasExited(): boolean;
}

const pythons = new Set<PyProc>();

function startPython(script: string, args: string[], input?: string): PyProc {
  const child = spawn('python3', [script, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, PYTHONIOENCODING: 'utf-8', PYTHONUNBUFFERED: '1' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let exited = false;
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const waiter of [...waiters]) waiter();
  };
  child.stdout!.setEncoding('utf8').on('data', (text: string) => {
    stdout += text;
    notify();
  });
  child.stderr!.setEncoding('utf8').on('data', (text: string) => {
    stderr += text;
    notify();
  });
  const exit = new Promise<Exit>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => {
      exited = true;
      resolve({ code, signal });
      notify();
    });
  });
  child.stdin!.on('error', () => {});
  if (input !== undefined) child.stdin!.end(input);
  const lines = () => {
    const end = stdout.lastIndexOf('\n');
    return end === -1 ? [] : stdout.slice(0, end).split('\n');
  };
  const proc: PyProc = {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    lines,
    waitForLine(predicate, what) {
      let check = () => {};
      const found = new Promise<string>((resolve, reject) => {
        check = () => {
          const line = lines().find(predicate);
          if (line !== undefined) resolve(line);
          else if (exited) reject(new Error(`${path.basename(script)} exited before printing ${what}\nstdout:\n${stdout}\nstderr:\n${stderr}`));
        };
        waiters.add(check);
        check();
      });
      return within(found, `${path.basename(script)} to print ${what}\nstdout so far:\n${stdout}`, RUN_MS).finally(() => waiters.delete(check));
    },
    exited: exit,
    hasExited: () => exited,
  };
  pythons.add(proc);
  void exit.finally(() => pythons.delete(proc)).catch(() => {});
  return proc;
}

async function killPythons(): Promise<void> {
  const procs = [...pythons];
  for (const proc of procs) if (!proc.hasExited()) proc.child.kill('SIGKILL');
  await Promise.allSettled(procs.map((proc) => proc.exited));
}

/** Runs the original client to completion with `lines` on its stdin. */
async function originalClient(port: number, lines: string[]): Promise<Exit & { stdout: string; stderr: string }> {
  const proc = startPython(ORIGINAL_CLIENT, ['--port', String(port)], lines.map((l) => `${l}\n`).join(''));
  const exit = await within(proc.exited, `the original client to finish\nstdout so far:\n${proc.stdout()}\nstderr so far:\n${proc.stderr()}`, RUN_MS).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\nstdout now:\n${proc.stdout()}\nstderr now:\n${proc.stderr()}`);
  });
  return { ...exit, stdout: proc.stdout(), stderr: proc.stderr() };
}

/** Runs a ferry command to completion, failing with its output if it hangs. */
async function ferry(args: string[], input?: string): Promise<Exit & { stdout: string; stderr: string }> {
  const proc = startCli(args, { input: input ?? '' });
  const exit = await within(proc.exited, `ferry ${args.join(' ')} to finish`, RUN_MS).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\nstdout:\n${proc.stdout}\nstderr:\n${proc.stderr}`);
  });
  return { ...exit, stdout: proc.stdout, stderr: proc.stderr };
}

function expectNoStackTrace(text: string): void {
  expect(text).not.toMatch(/^\s+at\s/m);
  expect(text).not.toMatch(/node:internal|\.js:\d+:\d+/);
}

// ---------------------------------------------------------------------------------------------
// (a) ferry's server, the original client

async function ferryServe(): Promise<{ server: Proc; port: number; uploadDir: string }> {
  const uploadDir = path.join(scratch(), 'upload');
  const server = startCli(['serve', '--port', '0', '--upload-dir', uploadDir]);
  const line = await server.waitForLine(isEvent('listening'));
  const port = jsonLines(line)[0]!.port;
  expect(typeof port).toBe('number');
  await server.waitForLine(isEvent('ready'));
  return { server, port: port as number, uploadDir };
}

function events(server: Proc, event: string): Record<string, unknown>[] {
  return jsonLines(server.stdout).filter((r) => r.event === event);
}

/** Waits until the server has logged `n` disconnections, i.e. every session so far is over and logged. */
async function sessionsOver(server: Proc, n: number): Promise<void> {
  await server.waitForLine(() => events(server, 'disconnected').length >= n);
}

describe('ferry serve with the original client', () => {
  it('echoes messages header and all, stores an upload byte-identical, ACKs it, and outlives the client\u2019s exit', async () => {
    const { server, port, uploadDir } = await ferryServe();
    const body = randomBytes(256 * 1024 + 7);
    const file = writeFile(scratch(), 'random-upload.bin', body);

    const run = await originalClient(port, ['hello', 'send file', file, 'another message', 'exit']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout.trimEnd().split('\n')).toEqual(['0000000005hello', '0000000003ACK', '0000000015another message']);
    expect(fs.readFileSync(path.join(uploadDir, 'random-upload.bin')).equals(body)).toBe(true);

    await sessionsOver(server, 1);
    expect(events(server, 'message').map((r) => r.text)).toEqual(['hello', 'another message']);
    const saved = events(server, 'file-saved');
    expect(saved).toHaveLength(1);
    expect(saved[0]).toMatchObject({ savedAs: 'random-upload.bin', bytes: body.length, sha256: sha256(body) });

    // `exit` ends that client's connection only: ferry goes on serving.
    expect(server.hasExited).toBe(false);
    const again = await originalClient(port, ['second client', 'exit']);
    expect(again).toMatchObject({ code: 0, stderr: '', stdout: '0000000013second client\n' });
    await sessionsOver(server, 2);
    expect(events(server, 'message').map((r) => r.text)).toEqual(['hello', 'another message', 'second client']);
    expect(server.hasExited).toBe(false);
  });

  it('stores and acknowledges a zero-byte file (the original server never answered one)', async () => {
    const { server, port, uploadDir } = await ferryServe();
    const file = writeFile(scratch(), 'empty.txt', Buffer.alloc(0));

    const run = await originalClient(port, ['send file', file, 'after the empty file', 'exit']);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(run.stdout.trimEnd().split('\n')).toEqual(['0000000003ACK', '0000000020after the empty file']);
    expect(fs.readFileSync(path.join(uploadDir, 'empty.txt'))).toHaveLength(0);
    await sessionsOver(server, 1);
    expect(events(server, 'file-saved')).toEqual([expect.objectContaining({ savedAs: 'empty.txt', bytes: 0, sha256: sha256(Buffer.alloc(0)) })]);
  });

  it('takes a name of exactly 20 characters (no padding at all) whole', async () => {
    const { server, port, uploadDir } = await ferryServe();
    const name = 'exactly_20_chars.bin';
    expect(name).toHaveLength(20);
    const body = randomBytes(4096);
    const file = writeFile(scratch(), name, body);

    const run = await originalClient(port, ['send file', file, 'exit']);
    expect(run).toMatchObject({ code: 0, stderr: '', stdout: '0000000003ACK\n' });
    expect(fs.readFileSync(path.join(uploadDir, name)).equals(body)).toBe(true);
    await sessionsOver(server, 1);
    expect(events(server, 'file-saved')).toEqual([expect.objectContaining({ savedAs: name, bytes: body.length, sha256: sha256(body) })]);
  });

  it('counts a non-ASCII message in characters and stays in step; the original client\u2019s byte-counting reader does not', async () => {
    const { server, port } = await ferryServe();

    // The client reads replies until it has as many *bytes* as the header's character count:
    // it prints half of фото, and the other half then spoils the next header, so it gives up.
    const run = await originalClient(port, ['фото', 'ok', 'exit']);
    expect(run.stdout.split('\n')[0]).toMatch(/^0000000004фо(\uFFFD)?$/);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/giving up/);

    // ferry itself read both messages correctly, so it used the header as a character count.
    await sessionsOver(server, 1);
    expect(events(server, 'message').map((r) => r.text)).toEqual(['фото', 'ok']);
    expect(server.hasExited).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// (b) ferry's client with --legacy, the original server

async function originalServe(): Promise<{ server: PyProc; port: number; dir: string }> {
  const dir = path.join(scratch(), 'upload');
  const server = startPython(ORIGINAL_SERVER, ['--port', '0', '--dir', dir]);
  const line = await server.waitForLine((l) => /^listening on \d+$/.test(l), '"listening on PORT"');
  const port = Number(line.split(' ')[2]);
  expect(port).toBeGreaterThan(0);
  return { server, port, dir };
}

/** How many lines the original server has printed starting with `word`. */
function count(server: PyProc, word: string): number {
  return server.lines().filter((l) => l.split(' ')[0] === word).length;
}

/**
 * Proves the original server is still up and serving by talking to it with the original client,
 * which closes without sending `exit`. The server serves one client at a time, so by the time the
 * probe is answered every earlier connection has been handled and printed.
 */
async function expectStillServing(server: PyProc): Promise<void> {
  const port = Number(server.lines()[0]!.split(' ')[2]);
  const before = count(server, 'disconnected');
  const probe = await originalClient(port, ['still there?']);
  expect(probe).toMatchObject({ code: 0, stdout: '0000000012still there?\n' });
  await server.waitForLine(() => count(server, 'disconnected') > before, 'the probe\u2019s disconnection');
  expect(server.hasExited()).toBe(false);
}

describe('ferry --legacy with the original server', () => {
  it('msg --legacy prints the echoed texts (not the headers), exits 0 and leaves the server running', async () => {
    const { server, port } = await originalServe();

    const result = await ferry(['msg', '--legacy', '--port', String(port), 'hello', 'фото']);
    expect(result).toMatchObject({ code: 0, stdout: 'hello\nфото\n', stderr: '' });

    // ferry closed its connection rather than sending `exit`.
    await server.waitForLine((l) => l === 'disconnected', '"disconnected"');
    expect(server.lines()).not.toContain('exit received');
    await expectStillServing(server);
    // Nothing ferry sent looked odd to the original server.
    expect(server.stderr()).toBe('');
  });

  it('send --legacy --json uploads byte-identical and reports the name, size and SHA-256', async () => {
    const { server, port, dir } = await originalServe();
    const body = randomBytes(300_000);
    const file = writeFile(scratch(), 'legacy-upload.bin', body);

    const result = await ferry(['send', '--legacy', '--port', String(port), file, '--json']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ file, savedAs: 'legacy-upload.bin', bytes: body.length, sha256: sha256(body) });
    expect(fs.readFileSync(path.join(dir, 'legacy-upload.bin')).equals(body)).toBe(true);
    expect(server.lines()).toContain(`saved legacy-upload.bin ${body.length}`);

    await server.waitForLine((l) => l === 'disconnected', '"disconnected"');
    expect(server.lines()).not.toContain('exit received');
    await expectStillServing(server);
    // `file` arrived on its own each time: nothing was mistaken for a message.
    expect(server.stderr()).toBe('');
  });

  it('send --legacy of several files, one after another on one connection, keeps each `file` command apart', async () => {
    const { server, port, dir } = await originalServe();
    const src = scratch();
    const bodies = [randomBytes(70_000), randomBytes(1), randomBytes(5_000)];
    const files = bodies.map((body, i) => writeFile(src, `part-${i}.bin`, body));

    const result = await ferry(['send', '--legacy', '--port', String(port), ...files, '--json']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as unknown)).toEqual(
      bodies.map((body, i) => expect.objectContaining({ savedAs: `part-${i}.bin`, bytes: body.length, sha256: sha256(body) })),
    );
    bodies.forEach((body, i) => expect(fs.readFileSync(path.join(dir, `part-${i}.bin`)).equals(body)).toBe(true));
    expect(count(server, 'connected')).toBe(1);
    expect(server.stderr()).toBe('');
    await expectStillServing(server);
  });

  it.each([
    ['an ASCII name of 25 characters', 'name-longer-than-20-b.txt'],
    ['a name of 12 characters but 23 bytes in UTF-8', 'фотоальбомы1'],
  ])('send --legacy of %s fails with exit 1 before sending anything', async (_what, name) => {
    expect(Buffer.byteLength(name)).toBeGreaterThan(20);
    const { server, port, dir } = await originalServe();
    const file = writeFile(scratch(), name, Buffer.from('never sent\n'));

    const result = await ferry(['send', '--legacy', '--port', String(port), file]);
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    // One sentence: which name, that it is too long for the format (20 bytes), and to rename it.
    expect(result.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(result.stderr).toContain(name);
    expect(result.stderr).toMatch(/too long|more than 20 bytes/i);
    expect(result.stderr).toMatch(/rename/i);
    expectNoStackTrace(result.stderr);

    // The probe is served after whatever ferry did, so the server's record is complete by then.
    await expectStillServing(server);
    expect(server.lines().filter((l) => !/^(listening on|connected|disconnected)\b/.test(l))).toEqual(['message 22 bytes']);
    expect(fs.readdirSync(dir)).toEqual([]);
    expect(server.stderr()).toBe('');
  });

  it('connect --legacy prints the echo of a line, and `exit` stops the original server as the original client did', async () => {
    const { server, port } = await originalServe();

    const result = await ferry(['connect', '--legacy', '--port', String(port)], 'hi\nexit\n');
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout.split('\n')).toContain('hi');
    expect(result.stdout).not.toContain('0000000002');

    const exit = await within(server.exited, 'the original server to stop after `exit`', RUN_MS);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(server.lines()).toContain('exit received');
    expect(server.stderr()).toBe('');
  });
});
