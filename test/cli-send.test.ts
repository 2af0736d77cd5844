/**
 * `ferry send` as a user meets it: several files where some cannot be sent, a file that goes
 * missing after the upload began, Ctrl-C in the middle of a file and the run that resumes it, and
 * sizes in error sentences. Real `node dist/apps/cli.js` processes over loopback; every wait is on
 * a process exit, an output line or a file on disk, never a sleep.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { scratchDirs, sha256 } from './helpers/files.js';
import { buildCliOnce, isEvent, jsonLines, killAll, runCli, serveInto, startCli, type Proc } from './helpers/processes.js';

const scratch = scratchDirs('ferry-cli-send-');

beforeAll(buildCliOnce, 120_000);

afterEach(async () => {
  await killAll();
});

afterAll(() => scratch.removeAll());

function serve(extra: string[] = []): Promise<{ proc: Proc; port: number; uploadDir: string }> {
  return serveInto(scratch(), extra);
}

function stored(uploadDir: string): string[] {
  return fs
    .readdirSync(uploadDir)
    .filter((n) => n !== '.ferry')
    .sort();
}

function expectNoStackTrace(text: string): void {
  expect(text).not.toMatch(/^\s+at\s/m);
  expect(text).not.toMatch(/node:internal|\.js:\d+:\d+/);
}

/** Deterministic content of `size` bytes. */
function body(size: number, seed: number): Buffer {
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buf[i] = (i * 31 + seed * 7) % 251;
  return buf;
}

describe('ferry send: a result or an error line for every file', () => {
  it('good.txt missing.txt c.txt: both good files are stored and reported in order, the missing one in one sentence, exit 1', async () => {
    const { port, uploadDir } = await serve();
    const dir = scratch();
    fs.writeFileSync(path.join(dir, 'good.txt'), 'good\n');
    fs.writeFileSync(path.join(dir, 'c.txt'), 'c\n');

    const result = await runCli(['send', 'good.txt', 'missing.txt', 'c.txt', '--port', String(port)], { cwd: dir });
    expect(result.code).toBe(1);
    expectNoStackTrace(result.stderr);
    expect(result.stderr).toBe('ferry: missing.txt does not exist; check the path.\n');
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(new RegExp(`^good\\.txt → good\\.txt  5 B  sha256 ${sha256('good\n')}$`));
    expect(lines[1]).toMatch(new RegExp(`^c\\.txt → c\\.txt  2 B  sha256 ${sha256('c\n')}$`));
    expect(stored(uploadDir)).toEqual(['c.txt', 'good.txt']);
  });

  it('with --json: one object per file on stdout, in order, the error included as an object', async () => {
    const { port, uploadDir } = await serve();
    const dir = scratch();
    fs.writeFileSync(path.join(dir, 'good.txt'), 'good\n');
    fs.writeFileSync(path.join(dir, 'c.txt'), 'c\n');

    const result = await runCli(['send', 'good.txt', 'missing.txt', 'c.txt', '--json', '--port', String(port)], { cwd: dir });
    expect(result.code).toBe(1);
    expectNoStackTrace(result.stderr);
    expect(result.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as unknown)).toEqual([
      { file: 'good.txt', savedAs: 'good.txt', bytes: 5, sha256: sha256('good\n'), resumedFrom: 0 },
      { file: 'missing.txt', error: { code: 'E_LOCAL_FILE', message: 'missing.txt does not exist; check the path.' } },
      { file: 'c.txt', savedAs: 'c.txt', bytes: 2, sha256: sha256('c\n'), resumedFrom: 0 },
    ]);
    expect(result.stderr).toBe('ferry: missing.txt does not exist; check the path.\n');
    expect(stored(uploadDir)).toEqual(['c.txt', 'good.txt']);
  });

  it('something that is not a regular file is refused before sending; with nothing left to send, no connection is made', async () => {
    const { proc: server, port, uploadDir } = await serve();
    const dir = scratch();
    const socketPath = path.join(dir, 'a.sock');
    const unix = net.createServer().listen(socketPath);
    await new Promise((resolve) => unix.once('listening', resolve));
    try {
      const result = await runCli(['send', 'a.sock', '--json', '--port', String(port)], { cwd: dir });
      expect(result.code).toBe(1);
      expect(JSON.parse(result.stdout)).toEqual({ file: 'a.sock', error: { code: 'E_LOCAL_FILE', message: expect.stringMatching(/^a\.sock is not a regular file/) } });
      expect(result.stderr).toMatch(/^ferry: a\.sock is not a regular file .*\.\n$/);
    } finally {
      unix.close();
    }
    expect(stored(uploadDir)).toEqual([]);
    expect(jsonLines(server.stdout).filter((r) => r.event === 'connected')).toEqual([]);
  });

  it('a file that disappears after the upload began fails on its own line; the files after it are still sent', async () => {
    const { proc: server, port, uploadDir } = await serve();
    const dir = scratch();
    // Slow enough that the second file is only looked at after it has been deleted.
    fs.writeFileSync(path.join(dir, 'first.bin'), body(2 * 1024 * 1024, 1));
    fs.writeFileSync(path.join(dir, 'gone.txt'), 'soon gone\n');
    fs.writeFileSync(path.join(dir, 'last.txt'), 'last\n');

    const send = startCli(['send', 'first.bin', 'gone.txt', 'last.txt', '--limit-rate', '1M', '--port', String(port), '--state-dir', path.join(dir, 'state')], { cwd: dir });
    await server.waitForLine(isEvent('upload-started', (r) => r.name === 'first.bin'));
    fs.unlinkSync(path.join(dir, 'gone.txt'));
    const exit = await send.exited;

    expect(exit.code).toBe(1);
    expectNoStackTrace(send.stderr);
    expect(send.stderr).toBe('ferry: gone.txt does not exist; check the path.\n');
    const lines = send.stdout.trimEnd().split('\n');
    expect(lines.map((l) => l.split(' → ')[0])).toEqual(['first.bin', 'last.txt']);
    expect(lines[0]).toContain('2.00 MiB');
    expect(stored(uploadDir)).toEqual(['first.bin', 'last.txt']);
  });
});

describe('ferry send: Ctrl-C', () => {
  it('says which file it stopped in and how far it got, exits 130, and the same command run again resumes', async () => {
    const { port, uploadDir } = await serve();
    const dir = scratch();
    const size = 6 * 1024 * 1024;
    const content = body(size, 3);
    fs.writeFileSync(path.join(dir, 'big.bin'), content);
    fs.writeFileSync(path.join(dir, 'after.txt'), 'after\n');
    // No --state-dir: the default one remembers the unfinished upload (on Linux under $XDG_STATE_HOME).
    const env = { XDG_STATE_HOME: path.join(dir, 'state'), LOCALAPPDATA: path.join(dir, 'state') };
    const args = ['send', 'big.bin', 'after.txt', '--port', String(port)];

    const send = startCli([...args, '--limit-rate', '1M'], { cwd: dir, env });
    // Wait until the server holds more than a mebibyte of it, so the client has reported progress.
    const partial = path.join(uploadDir, '.ferry', 'partial');
    await vi.waitFor(
      () => {
        const sizes = fs.readdirSync(partial).filter((f) => f.endsWith('.part')).map((f) => fs.statSync(path.join(partial, f)).size);
        expect(Math.max(0, ...sizes)).toBeGreaterThan(1024 * 1024);
      },
      { timeout: 15_000, interval: 50 },
    );
    send.child.kill('SIGINT');
    const exit = await send.exited;

    expect(exit.code).toBe(130);
    expect(send.stdout).toBe('');
    const lines = send.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^ferry: Interrupted while sending big\.bin \(at least \d+(\.\d+)? (B|KiB|MiB) of 6\.00 MiB sent, 1 more file after it\); run the same command again to resume from there\.$/);
    expect(stored(uploadDir)).toEqual([]);

    const again = await runCli([...args, '--json'], { cwd: dir, env });
    expect(again.code, again.stderr).toBe(0);
    const [big, after] = again.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(big).toMatchObject({ file: 'big.bin', savedAs: 'big.bin', bytes: size, sha256: sha256(content) });
    expect(big!.resumedFrom).toBeGreaterThan(0);
    expect(after).toMatchObject({ file: 'after.txt', savedAs: 'after.txt' });
    expect(fs.readFileSync(path.join(uploadDir, 'big.bin')).equals(content)).toBe(true);
  });
});

describe('sizes in sentences', () => {
  it('a message over the server’s limit is refused with the limit written for people', async () => {
    const { port } = await serve(['--max-message', '1K']);
    const result = await runCli(['msg', 'x'.repeat(2000), '--port', String(port)]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe("ferry: The message is larger than the server's limit of 1.00 KiB; send a file instead.\n");
  });
});

describe('a file the server already holds', () => {
  it('is skipped when sent again (said on its line, and "skipped": true with --json); --fresh stores a new copy', async () => {
    const { proc: server, port, uploadDir } = await serve();
    const dir = scratch();
    fs.writeFileSync(path.join(dir, 'same.txt'), 'same content\n');
    const args = ['send', 'same.txt', '--port', String(port), '--state-dir', path.join(dir, 'state')];

    const first = await runCli(args, { cwd: dir });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/^same\.txt → same\.txt {2}13 B {2}sha256 [0-9a-f]{64}\n$/);

    const again = await runCli(args, { cwd: dir });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toBe('same.txt → same.txt  13 B  already there, skipped\n');
    const json = await runCli([...args, '--json'], { cwd: dir });
    expect(JSON.parse(json.stdout)).toEqual({ file: 'same.txt', savedAs: 'same.txt', bytes: 13, sha256: sha256('same content\n'), resumedFrom: 0, skipped: true });
    expect(stored(uploadDir)).toEqual(['same.txt']);

    const fresh = await runCli([...args, '--fresh', '--json'], { cwd: dir });
    expect(fresh.code, fresh.stderr).toBe(0);
    expect(JSON.parse(fresh.stdout)).toEqual({ file: 'same.txt', savedAs: 'same (1).txt', bytes: 13, sha256: sha256('same content\n'), resumedFrom: 0 });
    expect(stored(uploadDir)).toEqual(['same (1).txt', 'same.txt']);
    expect(jsonLines(server.stdout).filter((r) => r.event === 'file-saved').map((r) => [r.savedAs, r.skipped === true])).toEqual([
      ['same.txt', false],
      ['same.txt', true],
      ['same.txt', true],
      ['same (1).txt', false],
    ]);
  });
});

describe('ferry send FOLDER', () => {
  it('sends every file under the folder’s own name, one line each; a link to a folder is skipped and said so', async () => {
    const { port, uploadDir } = await serve();
    const dir = scratch();
    const photos = path.join(dir, 'photos');
    fs.mkdirSync(path.join(photos, '2024', 'summer'), { recursive: true });
    fs.writeFileSync(path.join(photos, 'cover.jpg'), 'cover');
    fs.writeFileSync(path.join(photos, '2024', 'a.jpg'), 'a in 2024');
    fs.writeFileSync(path.join(photos, '2024', 'summer', 'a.jpg'), 'a in summer');
    fs.symlinkSync(dir, path.join(photos, 'up'));

    const result = await runCli(['send', 'photos', '--port', String(port), '--state-dir', path.join(dir, 'state')], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toBe(`ferry: skipped ${path.join('photos', 'up')}: it is a link to a folder, which is not followed.\n`);
    expect(result.stdout.trimEnd().split('\n').map((l) => l.replace(/ {2}sha256 .*$/, ''))).toEqual([
      `${path.join('photos', '2024', 'a.jpg')} → photos/2024/a.jpg  9 B`,
      `${path.join('photos', '2024', 'summer', 'a.jpg')} → photos/2024/summer/a.jpg  11 B`,
      `${path.join('photos', 'cover.jpg')} → photos/cover.jpg  5 B`,
    ]);
    expect(fs.readFileSync(path.join(uploadDir, 'photos', '2024', 'summer', 'a.jpg'), 'utf8')).toBe('a in summer');
    expect(fs.readFileSync(path.join(uploadDir, 'photos', '2024', 'a.jpg'), 'utf8')).toBe('a in 2024');
    expect(fs.readFileSync(path.join(uploadDir, 'photos', 'cover.jpg'), 'utf8')).toBe('cover');

    // Sent again: nothing is stored twice.
    const again = await runCli(['send', 'photos', '--json', '--port', String(port), '--state-dir', path.join(dir, 'state')], { cwd: dir });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).map((o) => [o.savedAs, o.skipped])).toEqual([
      ['photos/2024/a.jpg', true],
      ['photos/2024/summer/a.jpg', true],
      ['photos/cover.jpg', true],
    ]);
  });

  it('with --legacy a folder is refused in one sentence, before anything is sent', async () => {
    const dir = scratch();
    fs.mkdirSync(path.join(dir, 'photos'));
    fs.writeFileSync(path.join(dir, 'photos', 'a.jpg'), 'a');
    const result = await runCli(['send', 'photos', '--legacy', '--port', '9'], { cwd: dir });
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toBe(`ferry: photos is a folder, and the original tool\u2019s format (--legacy) cannot carry folders; send the files in it (for example ${path.join('photos', '*')}).\n`);
  });
});
