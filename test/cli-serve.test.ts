/**
 * `ferry serve` as its operator meets it: a failure to store names the path and the real cause (and
 * does not say to send the file again when that cannot help), and the log is one readable line per
 * event for people or JSON lines for machines. Real processes over loopback; every wait is on a
 * process exit or an output line.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { scratchDirs } from './helpers/files.js';
import { CLI, REPO_ROOT, buildCliOnce, cleanEnv, jsonLines, killAll, runCli, startCli, type Proc } from './helpers/processes.js';

const scratch = scratchDirs('ferry-cli-serve-');
const children: { kill(): void; exited: Promise<unknown> }[] = [];

beforeAll(buildCliOnce, 120_000);

afterEach(async () => {
  for (const child of children.splice(0)) {
    child.kill();
    await child.exited;
  }
  await killAll();
});

afterAll(() => scratch.removeAll());

const isRoot = process.getuid?.() === 0;

/**
 * `ferry serve` as a user who may be denied a folder. Root may write anywhere, so as root the
 * server runs as `nobody`; the upload folder is made theirs until the server has set it up.
 */
async function serveAsUser(uploadDir: string): Promise<{ port: number; log: () => string; lockUploadFolder: () => void }> {
  let uid: number | undefined;
  let gid: number | undefined;
  if (isRoot) {
    uid = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim());
    gid = Number(execFileSync('id', ['-g', 'nobody'], { encoding: 'utf8' }).trim());
    // The scratch folder (under the system's temp folder) is made for root alone; let them in.
    fs.chmodSync(path.dirname(uploadDir), 0o755);
    fs.mkdirSync(uploadDir);
    fs.chownSync(uploadDir, uid, gid);
  } else {
    fs.mkdirSync(uploadDir);
  }
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--upload-dir', uploadDir], {
    env: cleanEnv(),
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(uid !== undefined ? { uid, gid: gid! } : {}),
  });
  let out = '';
  const exited = new Promise((resolve) => child.once('close', resolve));
  children.push({ kill: () => child.kill('SIGKILL'), exited });
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      out += text;
      if (jsonLines(out).some((r) => r.event === 'ready')) resolve();
    });
    void exited.then(() => reject(new Error(`the server exited before it was ready:\n${out}`)));
  });
  child.stderr.resume();
  await ready;
  const port = jsonLines(out).find((r) => r.event === 'listening')!.port as number;
  return {
    port,
    log: () => out,
    // The server keeps its own state folder; the upload folder itself becomes read-only for it.
    lockUploadFolder: () => (isRoot ? fs.chownSync(uploadDir, 0, 0) : fs.chmodSync(uploadDir, 0o555)),
  };
}

describe('a server that cannot store a file says where and why', () => {
  it('a read-only upload folder: the client and the log name the path and the permission, without "send the file again"', async () => {
    const base = scratch();
    const uploadDir = path.join(base, 'inbox');
    const server = await serveAsUser(uploadDir);
    server.lockUploadFolder();
    try {
      const dir = scratch();
      fs.writeFileSync(path.join(dir, 'good.txt'), 'good\n');
      const result = await runCli(['send', 'good.txt', '--port', String(server.port)], { cwd: dir });
      expect(result.code).toBe(1);
      const expected = `The server failed while naming the received file at ${path.join(uploadDir, 'good.txt')}: permission denied (EACCES); whoever runs the server must make ${uploadDir} writable for it.`;
      expect(result.stderr).toBe(`ferry: good.txt: ${expected}\n`);
      expect(result.stderr).not.toMatch(/send the file again/);
      const failed = jsonLines(server.log()).find((r) => r.event === 'upload-failed');
      expect(failed).toMatchObject({ code: 'E_STORE_FAILED', msg: expected });
    } finally {
      fs.chmodSync(uploadDir, 0o755);
    }
  });

  it('an upload folder that cannot be made: the server says which path and why, in one line, and exits 1', async () => {
    const dir = scratch();
    fs.writeFileSync(path.join(dir, 'plain-file'), 'not a folder\n');
    const uploadDir = path.join(dir, 'plain-file', 'upload');
    const result = await runCli(['serve', '--port', '0', '--upload-dir', uploadDir]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      new RegExp(`^ferry: The server failed while creating the upload folder at ${escape(uploadDir)}\\S*: a part of the path is not a folder \\(ENOTDIR\\); whoever runs the server must check that \\S+ exists and is a folder\\.\\n$`),
    );
  });
});

describe('server logs', () => {
  async function readableServer(args: string[], env: Record<string, string> = {}): Promise<{ proc: Proc; port: number }> {
    const proc = startCli(['serve', '--port', '0', '--upload-dir', path.join(scratch(), 'upload'), ...args], { env });
    const line = await proc.waitForLine((l) => /ferry is listening on 127\.0\.0\.1:\d+/.test(l));
    return { proc, port: Number(/127\.0\.0\.1:(\d+)/.exec(line)![1]) };
  }

  /** Every line is `[HH:MM:SS] LEVEL: …`; none is JSON. */
  function expectReadable(text: string): string[] {
    const lines = text.trimEnd().split('\n');
    for (const line of lines) expect(line).toMatch(/^\[\d\d:\d\d:\d\d\] (INFO|WARN|ERROR|DEBUG): \S/);
    return lines;
  }

  it('--log-format pretty: one readable line per event, the session and peer first', async () => {
    const { proc, port } = await readableServer(['--log-format', 'pretty']);
    const msg = await runCli(['msg', 'hello there', '--port', String(port)]);
    expect(msg.code).toBe(0);
    await proc.waitForLine((l) => l.includes('connection closed'));
    const lines = expectReadable(proc.stdout);
    const session = lines.filter((l) => / session-1 127\.0\.0\.1:\d+: /.test(l));
    expect(session.map((l) => l.replace(/^.*?: session-1 127\.0\.0\.1:\d+: /, ''))).toEqual([
      'client connected',
      'client said hello {"format":"native","agent":"ferry/0.1.0"}',
      'message {"id":1,"text":"hello there"}',
      'connection closed',
    ]);
  });

  it('FERRY_LOG_FORMAT=pretty does the same; --json wins over it; without either, off a terminal, JSON lines', async () => {
    const pretty = await readableServer([], { FERRY_LOG_FORMAT: 'pretty' });
    expectReadable(pretty.proc.stdout);

    const forced = startCli(['serve', '--port', '0', '--upload-dir', path.join(scratch(), 'upload'), '--json'], { env: { FERRY_LOG_FORMAT: 'pretty' } });
    await forced.waitForLine((l) => jsonLines(l)[0]?.event === 'ready');
    const plain = startCli(['serve', '--port', '0', '--upload-dir', path.join(scratch(), 'upload')]);
    await plain.waitForLine((l) => jsonLines(l)[0]?.event === 'ready');
    for (const proc of [forced, plain]) {
      const lines = proc.stdout.trimEnd().split('\n');
      expect(jsonLines(proc.stdout)).toHaveLength(lines.length);
      expect(jsonLines(proc.stdout).map((r) => r.event)).toEqual(['listening', 'ready']);
    }
  });

  it('an unknown log format is a usage error', async () => {
    const result = await runCli(['serve', '--log-format', 'xml']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/--log-format.*xml/);
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
