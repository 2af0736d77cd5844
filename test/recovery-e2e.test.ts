/**
 * Recovery with real processes (`node dist/apps/cli.js`): a server killed with SIGKILL mid-upload
 * and restarted, a server killed while lines are being typed into `ferry connect`, and a sender
 * killed with SIGKILL and run again. Synchronises on files growing, log lines and process exits;
 * the only timer paces the lines written into `connect`.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { within } from './helpers/async.js';
import { hashFile, scratchDirs, writeSeededFile } from './helpers/files.js';
import { FreezingProxy } from './helpers/freezing-proxy.js';
import { buildCliOnce, isEvent, jsonLines, killAll, runCli, startCli, startServe, type Proc } from './helpers/processes.js';

const scratch = scratchDirs('ferry-recovery-');
const proxies: FreezingProxy[] = [];
const RETRY = ['--retry-initial', '100ms', '--retry-max', '500ms'];
const SIZE = 60 * 1024 * 1024;
const POLL = { timeout: 15_000, interval: 10 };

beforeAll(buildCliOnce, 120_000);

afterEach(async () => {
  for (const proxy of proxies.splice(0)) proxy.close();
  await killAll();
});

afterAll(() => scratch.removeAll());

/** `ferry serve` on `port` (0: any) into `uploadDir`; resolves with its port once it is ready. */
async function serve(uploadDir: string, port = 0, extra: string[] = []): Promise<{ proc: Proc; port: number }> {
  return startServe(['--port', String(port), '--upload-dir', uploadDir, ...extra]);
}

async function kill(proc: Proc): Promise<void> {
  proc.child.kill('SIGKILL');
  expect(await proc.exited).toEqual({ code: null, signal: 'SIGKILL' });
}

function partialDir(uploadDir: string): string {
  return path.join(uploadDir, '.ferry', 'partial');
}

/** The keyed partial upload in the folder (there must be at most one). */
function partial(uploadDir: string): { key: string; size: number } | undefined {
  const dir = partialDir(uploadDir);
  const parts = fs.existsSync(dir) ? fs.readdirSync(dir).filter((name) => name.endsWith('.part')) : [];
  expect(parts.length).toBeLessThanOrEqual(1);
  if (parts.length === 0) return undefined;
  return { key: path.basename(parts[0]!, '.part'), size: fs.statSync(path.join(dir, parts[0]!)).size };
}

/** Waits until a partial upload has data on disk and is not complete: really mid-upload. */
async function midUpload(uploadDir: string, proc: Proc): Promise<{ key: string; size: number }> {
  return vi.waitFor(() => {
    expect(proc.hasExited).toBe(false);
    const found = partial(uploadDir);
    expect(found?.size).toBeGreaterThan(0);
    expect(found!.size).toBeLessThan(SIZE);
    return found!;
  }, POLL);
}

function finalNames(uploadDir: string): string[] {
  return fs.readdirSync(uploadDir).filter((name) => name !== '.ferry').sort();
}

function bookKeys(stateDir: string): string[] {
  const parsed = JSON.parse(fs.readFileSync(path.join(stateDir, 'uploads.json'), 'utf8')) as { uploads: { key: string }[] };
  return parsed.uploads.map((e) => e.key);
}

/** Writes each line into `stdin` on a timer, `every` ms apart; resolves after the last one. */
function typeLines(stdin: Writable, lines: string[], every = 50): Promise<void> {
  return new Promise((resolve) => {
    let i = 0;
    const timer = setInterval(() => {
      stdin.write(`${lines[i++]}\n`);
      if (i === lines.length) {
        clearInterval(timer);
        resolve();
      }
    }, every);
  });
}

describe('recovery with real processes', () => {
  it('serve killed with SIGKILL mid-upload and restarted on the same port: send resumes from the bytes on disk and exits 0', async () => {
    const dir = scratch();
    const uploadDir = path.join(dir, 'upload');
    const stateDir = path.join(dir, 'state');
    const src = path.join(dir, 'sixty.bin');
    const written = await writeSeededFile(src, SIZE, 1234);
    const first = await serve(uploadDir);
    const sender = startCli(['send', src, '--limit-rate', '20M', '--json', '--state-dir', stateDir, '--port', String(first.port), ...RETRY]);

    const seen = await midUpload(uploadDir, sender);
    await kill(first.proc);
    // What the killed server got onto the disk is all there is.
    const onDisk = partial(uploadDir)!;
    expect(onDisk.key).toBe(seen.key);
    expect(onDisk.size).toBeGreaterThanOrEqual(seen.size);
    expect(onDisk.size).toBeLessThan(SIZE);
    expect(bookKeys(stateDir)).toEqual([onDisk.key]);

    const second = await serve(uploadDir, first.port);
    expect(await within(sender.exited, 'send to finish', 30_000)).toEqual({ code: 0, signal: null });
    const results = sender.stdout.trimEnd().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(results).toEqual([{ file: src, savedAs: 'sixty.bin', bytes: SIZE, sha256: written.sha256, resumedFrom: onDisk.size }]);
    expect(await hashFile(path.join(uploadDir, 'sixty.bin'))).toEqual(written);
    expect(finalNames(uploadDir)).toEqual(['sixty.bin']);
    expect(fs.readdirSync(partialDir(uploadDir)).filter((name) => !name.endsWith('.done'))).toEqual([]);
    expect(bookKeys(stateDir)).toEqual([]);
    await second.proc.waitForLine(isEvent('file-saved'));
    expect(jsonLines(second.proc.stdout).filter((r) => r.event === 'file-saved')).toMatchObject([{ bytes: SIZE, sha256: written.sha256 }]);
  });

  it('40 lines typed into connect while the server is killed and restarted: each handled exactly once, connect exits 0', async () => {
    const dir = scratch();
    const uploadDir = path.join(dir, 'upload');
    const first = await serve(uploadDir, 0, ['--log-level', 'debug']);
    const connect = startCli(['connect', '--json', '--port', String(first.port), '--state-dir', path.join(dir, 'state'), ...RETRY]);
    const texts = Array.from({ length: 40 }, (_, i) => `line ${String(i + 1).padStart(2, '0')} of the recovery test`);

    let second: { proc: Proc; port: number } | undefined;
    let restarting: Promise<void> | undefined;
    await new Promise<void>((resolve) => {
      let i = 0;
      const timer = setInterval(() => {
        connect.child.stdin!.write(`${texts[i++]}\n`);
        if (i === 20) {
          restarting = (async () => {
            await kill(first.proc);
            second = await serve(uploadDir, first.port, ['--log-level', 'debug']);
          })();
        }
        if (i === texts.length) {
          clearInterval(timer);
          connect.child.stdin!.end();
          resolve();
        }
      }, 50);
    });
    await restarting;
    expect(await within(connect.exited, 'connect to finish', 20_000)).toEqual({ code: 0, signal: null });
    expect(connect.stderr).not.toMatch(/^\s+at\s/m);

    // Every line was acknowledged once.
    const replies = jsonLines(connect.stdout).map((r) => r.reply);
    expect([...replies].sort()).toEqual([...texts].sort());

    // And handled once, across both servers' logs.
    const handled = [...jsonLines(first.proc.stdout), ...jsonLines(second!.proc.stdout)].filter((r) => r.event === 'message').map((r) => r.text);
    for (const text of texts) expect(handled.filter((t) => t === text), text).toHaveLength(1);
    expect(handled).toHaveLength(texts.length);
    // Both servers really took part.
    expect(jsonLines(first.proc.stdout).some((r) => r.event === 'message')).toBe(true);
    expect(jsonLines(second!.proc.stdout).some((r) => r.event === 'message')).toBe(true);
  });

  it('lines the killed server handled but never acknowledged are not handled again by the restarted one (its journal survived SIGKILL)', async () => {
    const dir = scratch();
    const uploadDir = path.join(dir, 'upload');
    const first = await serve(uploadDir, 0, ['--log-level', 'debug']);
    const proxy = new FreezingProxy(first.port);
    proxies.push(proxy);
    const proxyPort = await proxy.listen();
    const connect = startCli(['connect', '--json', '--port', String(proxyPort), '--state-dir', path.join(dir, 'state'), ...RETRY]);
    const texts = Array.from({ length: 40 }, (_, i) => `journal line ${String(i + 1).padStart(2, '0')}`);
    const replies = () => jsonLines(connect.stdout).map((r) => r.reply);
    const handledBy = (proc: Proc) => jsonLines(proc.stdout).filter((r) => r.event === 'message').map((r) => r.text);

    await typeLines(connect.child.stdin!, texts.slice(0, 10));
    await vi.waitFor(() => expect(replies()).toHaveLength(10), POLL);
    // The server goes on handling lines, but its acknowledgements no longer arrive.
    proxy.holdReplies();
    await typeLines(connect.child.stdin!, texts.slice(10, 20));
    await vi.waitFor(() => expect(handledBy(first.proc)).toEqual(texts.slice(0, 20)), POLL);
    expect(replies()).toHaveLength(10);
    await kill(first.proc);

    const second = await serve(uploadDir, first.port, ['--log-level', 'debug']);
    await typeLines(connect.child.stdin!, texts.slice(20));
    connect.child.stdin!.end();
    expect(await within(connect.exited, 'connect to finish', 20_000)).toEqual({ code: 0, signal: null });
    expect([...replies()].sort()).toEqual([...texts].sort());
    expect(proxy.connections).toBeGreaterThanOrEqual(2);

    expect(handledBy(second.proc)).toEqual(texts.slice(20));
    // Lines 11-20 came again and were recognised from the journal the killed server left.
    const duplicates = jsonLines(second.proc.stdout).filter((r) => r.event === 'duplicate-message');
    expect(duplicates).toHaveLength(10);
    const all = [...handledBy(first.proc), ...handledBy(second.proc)];
    for (const text of texts) expect(all.filter((t) => t === text), text).toHaveLength(1);
  });

  it('send killed with SIGKILL mid-upload and run again with the same --state-dir resumes and stores the file once', async () => {
    const dir = scratch();
    const uploadDir = path.join(dir, 'upload');
    const stateDir = path.join(dir, 'state');
    const src = path.join(dir, 'again.bin');
    const written = await writeSeededFile(src, SIZE, 99);
    const server = await serve(uploadDir);
    const args = ['--json', '--state-dir', stateDir, '--port', String(server.port), ...RETRY];
    const doomed = startCli(['send', src, '--limit-rate', '20M', ...args]);

    const seen = await midUpload(uploadDir, doomed);
    await kill(doomed);
    // The server noticed, and kept the partial under the key the sender remembered.
    await server.proc.waitForLine(isEvent('disconnected'));
    const kept = partial(uploadDir)!;
    expect(kept.size).toBeGreaterThanOrEqual(seen.size);
    expect(bookKeys(stateDir)).toEqual([kept.key]);

    const again = await within(runCli(['send', src, ...args]), 'the second send to finish', 30_000);
    expect(again.code).toBe(0);
    const results = again.stdout.trimEnd().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(results).toHaveLength(1);
    expect(results[0]).toMatchObject({ file: src, savedAs: 'again.bin', bytes: SIZE, sha256: written.sha256 });
    expect(results[0]!.resumedFrom).toBeGreaterThanOrEqual(kept.size);
    expect(results[0]!.resumedFrom).toBeLessThan(SIZE);
    expect(await hashFile(path.join(uploadDir, 'again.bin'))).toEqual(written);
    expect(finalNames(uploadDir)).toEqual(['again.bin']);
    expect(fs.readdirSync(partialDir(uploadDir)).filter((name) => !name.endsWith('.done'))).toEqual([]);
    expect(bookKeys(stateDir)).toEqual([]);
  });
});
