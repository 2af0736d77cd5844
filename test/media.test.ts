/**
 * Opening received media: content sniffing, the app command line, launching, the per-minute
 * limit, the opener's outcomes, then the whole path over loopback (library and CLI) with a fake app
 * that records how it was started. The fake app runs detached, so the tests wait for its log line
 * with vi.waitFor (bounded polling), never with sleeps.
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { fileTypeFromFile } from 'file-type';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createClient, createServer, FerryError, type ClientOptions, type FerryClient, type FerryServer, type MediaApps, type OpenResultInfo, type ServerOptions } from '../index.js';
import { buildCommand, launch } from '../media/launcher.js';
import { launchAllowed, openMedia, OPEN_WINDOW_MS, type OpenSettings } from '../media/opener.js';
import { sniffMedia } from '../media/sniff.js';
import { MEDIA_FIXTURES, crc32, mp4Bytes, pngBytes, solidPng, textBytes, toneWav, wavBytes, writeFixture } from './fixtures/media.js';
import { sha256, tempDir } from './helpers/files.js';
import { closeAll } from './helpers/async.js';
import { buildCliOnce, jsonLines, killAll, runCli, startCli, type Proc } from './helpers/processes.js';

const FAKE_APP = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'fake-app.mjs');

const dirs: string[] = [];
const servers: FerryServer[] = [];
const clients: FerryClient[] = [];

afterEach(async () => {
  await closeAll(clients, servers);
  await killAll();
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

function scratch(): string {
  const dir = tempDir('ferry-media-');
  dirs.push(dir);
  return dir;
}

// ---------------------------------------------------------------------------------------------
// The fake app

/** One run of the fake app, as it logged itself. */
interface FakeRun {
  argv: string[];
  cwd: string;
  pid: number;
}

/** The command line that runs the fake app: it logs to LOG, with MARKER before the file's path. */
function fakeApp(log: string, marker: string): string {
  return `"${process.execPath}" "${FAKE_APP}" "${log}" ${marker} {file}`;
}

function fakeApps(log: string): MediaApps {
  return { image: fakeApp(log, 'image-app'), audio: fakeApp(log, 'audio-app'), video: fakeApp(log, 'video-app') };
}

/** The complete lines the fake app has written to LOG so far. */
function runsIn(log: string): FakeRun[] {
  if (!fs.existsSync(log)) return [];
  const text = fs.readFileSync(log, 'utf8');
  const end = text.lastIndexOf('\n');
  return end === -1 ? [] : text.slice(0, end).split('\n').map((line) => JSON.parse(line) as FakeRun);
}

/** Waits (polling, up to 10 s) until the fake app has logged at least N runs, and returns them all. */
function waitForRuns(log: string, n: number): Promise<FakeRun[]> {
  return vi.waitFor(
    () => {
      const runs = runsIn(log);
      expect(runs.length, `runs of the fake app logged in ${log}`).toBeGreaterThanOrEqual(n);
      return runs;
    },
    { timeout: 10_000, interval: 20 },
  );
}

// ---------------------------------------------------------------------------------------------
// Fixtures

describe('media fixtures', () => {
  it('crc32 matches the standard check value', () => {
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
  });

  it.each(MEDIA_FIXTURES)('$label is recognised by file-type as $fileType.mime', async ({ ext, build, fileType }) => {
    const file = writeFixture(scratch(), `sample.${ext}`, build());
    expect(await fileTypeFromFile(file)).toEqual(fileType);
  });

  it('solidPng makes a real 64x64 PNG of pure red: valid chunk CRCs, every pixel (255,0,0)', async () => {
    const png = solidPng(64, 64, [255, 0, 0]);
    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    const chunks: { type: string; data: Buffer }[] = [];
    for (let at = 8; at < png.length; ) {
      const length = png.readUInt32BE(at);
      const typeAndData = png.subarray(at + 4, at + 8 + length);
      expect(png.readUInt32BE(at + 8 + length), `CRC of chunk at ${at}`).toBe(crc32(typeAndData));
      chunks.push({ type: typeAndData.subarray(0, 4).toString('latin1'), data: typeAndData.subarray(4) });
      at += 12 + length;
    }
    expect(chunks.map((c) => c.type)).toEqual(['IHDR', 'IDAT', 'IEND']);
    const ihdr = chunks[0]!.data;
    expect([ihdr.readUInt32BE(0), ihdr.readUInt32BE(4), ihdr[8], ihdr[9], ihdr[12]]).toEqual([64, 64, 8, 2, 0]);
    const raw = zlib.inflateSync(chunks[1]!.data);
    expect(raw.length).toBe(64 * (1 + 64 * 3));
    for (let y = 0; y < 64; y++) {
      const row = raw.subarray(y * 193, (y + 1) * 193);
      expect(row[0], `filter byte of row ${y}`).toBe(0);
      for (let x = 0; x < 64; x++) expect([...row.subarray(1 + x * 3, 4 + x * 3)]).toEqual([255, 0, 0]);
    }
    const file = writeFixture(scratch(), 'red.png', png);
    expect(await fileTypeFromFile(file)).toEqual({ ext: 'png', mime: 'image/png' });
  });

  it('toneWav makes a real 1 s, 8 kHz, mono, 16-bit WAV of a 440 Hz tone', async () => {
    const wav = toneWav();
    expect(wav.length).toBe(44 + 16_000);
    expect(wav.toString('latin1', 0, 4)).toBe('RIFF');
    expect(wav.readUInt32LE(4)).toBe(wav.length - 8);
    expect(wav.toString('latin1', 8, 16)).toBe('WAVEfmt ');
    // PCM, 1 channel, 8000 Hz, 16000 bytes/s, block align 2, 16 bits.
    expect([wav.readUInt32LE(16), wav.readUInt16LE(20), wav.readUInt16LE(22), wav.readUInt32LE(24), wav.readUInt32LE(28), wav.readUInt16LE(32), wav.readUInt16LE(34)]).toEqual([
      16, 1, 1, 8000, 16_000, 2, 16,
    ]);
    expect(wav.toString('latin1', 36, 40)).toBe('data');
    expect(wav.readUInt32LE(40)).toBe(16_000);
    const samples = Array.from({ length: 8000 }, (_, i) => wav.readInt16LE(44 + i * 2));
    // 440 Hz: 880 sign changes a second (give or take one at the ends), and a loud enough peak.
    let crossings = 0;
    for (let i = 1; i < samples.length; i++) if (samples[i - 1]! < 0 !== samples[i]! < 0) crossings++;
    expect(crossings).toBeGreaterThanOrEqual(878);
    expect(crossings).toBeLessThanOrEqual(881);
    expect(Math.max(...samples)).toBeGreaterThan(16_000);
    const file = writeFixture(scratch(), 'tone.wav', wav);
    expect(await fileTypeFromFile(file)).toEqual({ ext: 'wav', mime: 'audio/wav' });
  });
});

// ---------------------------------------------------------------------------------------------
// sniffMedia

describe('sniffMedia', () => {
  it.each(MEDIA_FIXTURES)('$label → $kind', async ({ ext, build, kind, fileType }) => {
    const file = writeFixture(scratch(), `sample.${ext}`, build());
    expect(await sniffMedia(file)).toEqual({ kind, mime: fileType.mime, ext: fileType.ext });
  });

  it('decides by content, never by name: a text file called x.png is not media', async () => {
    const file = writeFixture(scratch(), 'x.png', textBytes());
    expect(await sniffMedia(file)).toEqual({ kind: undefined });
  });

  it('a recognised file that is not media (gzip) has a MIME type but no kind', async () => {
    const file = writeFixture(scratch(), 'photo.jpg', zlib.gzipSync(Buffer.from('hello')));
    expect(await sniffMedia(file)).toEqual({ kind: undefined, mime: 'application/gzip', ext: 'gz' });
  });

  it('a PNG called notes.txt is an image', async () => {
    const file = writeFixture(scratch(), 'notes.txt', pngBytes());
    expect(await sniffMedia(file)).toEqual({ kind: 'image', mime: 'image/png', ext: 'png' });
  });

  it('an empty file is not media', async () => {
    const file = writeFixture(scratch(), 'empty.mp3', Buffer.alloc(0));
    expect((await sniffMedia(file)).kind).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------
// buildCommand

describe('buildCommand', () => {
  const FILE = '/srv/upload/my photo (1).png';

  it('splits words like a shell: double quotes, single quotes and backslash escapes', () => {
    expect(buildCommand(`"/opt/My Viewer/view" 'two words' three\\ words "it's" '"q"' {file}`, FILE)).toEqual({
      command: '/opt/My Viewer/view',
      args: ['two words', 'three words', "it's", '"q"', FILE],
    });
  });

  it('replaces {file} with the path as one word, even when the path has spaces', () => {
    expect(buildCommand('feh --geometry 64x64+0+0 {file} --auto-zoom', FILE)).toEqual({
      command: 'feh',
      args: ['--geometry', '64x64+0+0', FILE, '--auto-zoom'],
    });
  });

  it('replaces {file} inside a word and every time it appears', () => {
    expect(buildCommand('player --file={file} --title="{file}"', FILE)).toEqual({ command: 'player', args: [`--file=${FILE}`, `--title=${FILE}`] });
  });

  it('appends the path as the last argument when there is no {file}', () => {
    expect(buildCommand('xdg-open', FILE)).toEqual({ command: 'xdg-open', args: [FILE] });
    expect(buildCommand('mpv --no-video', FILE)).toEqual({ command: 'mpv', args: ['--no-video', FILE] });
  });

  it('keeps $VARIABLES literal instead of expanding them', () => {
    expect(buildCommand('$HOME/bin/view "$HOME" \'$HOME\' --x=$USER {file}', FILE)).toEqual({
      command: '$HOME/bin/view',
      args: ['$HOME', '$HOME', '--x=$USER', FILE],
    });
  });

  it('keeps quoted operators, globs and hashes as plain text', () => {
    expect(buildCommand(`app "a;b" 'x|y' "*.png" '#c' "a && b" {file}`, FILE)).toEqual({ command: 'app', args: ['a;b', 'x|y', '*.png', '#c', 'a && b', FILE] });
  });

  it.each([
    ['a command separator', 'feh {file}; rm -rf ~'],
    ['a pipe', 'cat {file} | lp'],
    ['&&', 'feh {file} && reboot'],
    ['||', 'feh {file} || true'],
    ['a background &', 'feh {file} &'],
    ['an output redirection', 'feh {file} > /tmp/out'],
    ['an input redirection', 'feh < {file}'],
    ['a command substitution', 'feh $(cat /etc/passwd) {file}'],
    ['a subshell', '(feh {file})'],
    ['a glob', 'feh /tmp/*.png {file}'],
    ['a ? glob', 'feh photo?.png'],
    ['a comment', 'feh {file} # show it'],
  ])('refuses %s with E_LAUNCH_FAILED', (_what, template) => {
    let error: unknown;
    try {
      buildCommand(template, FILE);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(FerryError);
    expect(error).toMatchObject({ code: 'E_LAUNCH_FAILED', message: expect.stringContaining('shell syntax') });
    expect((error as Error).message).toContain(template);
  });

  it.each([[''], ['   '], ['\t\n']])('refuses an empty command (%j) with E_LAUNCH_FAILED naming the flags', (template) => {
    expect(() => buildCommand(template, FILE)).toThrow(expect.objectContaining({ code: 'E_LAUNCH_FAILED', message: expect.stringMatching(/empty.*--image-app/) }));
  });
});

// ---------------------------------------------------------------------------------------------
// launch

describe('launch', () => {
  it('starts the app detached and resolves with the program and its pid', async () => {
    const dir = scratch();
    const log = path.join(dir, 'app.log');
    const file = writeFixture(dir, 'a b.png', pngBytes());
    const launched = await launch(fakeApp(log, 'marker'), file);
    expect(launched.app).toBe(process.execPath);
    const [run] = await waitForRuns(log, 1);
    expect(run).toEqual({ argv: [log, 'marker', file], cwd: process.cwd(), pid: launched.pid });
  });

  it('a program that is not on the PATH is E_APP_NOT_FOUND, naming it', async () => {
    await expect(launch('ferry-test-no-such-viewer-7f3a {file}', '/tmp/x.png')).rejects.toMatchObject({
      code: 'E_APP_NOT_FOUND',
      message: expect.stringContaining('"ferry-test-no-such-viewer-7f3a"'),
    });
  });

  it('an absolute path that does not exist is E_APP_NOT_FOUND', async () => {
    const missing = path.join(scratch(), 'nowhere', 'viewer');
    await expect(launch(`"${missing}"`, '/tmp/x.png')).rejects.toMatchObject({ code: 'E_APP_NOT_FOUND' });
  });

  it('a program that exists but cannot be run (a directory; a file without x bits) is E_LAUNCH_FAILED (EACCES)', async () => {
    const dir = scratch();
    const plain = writeFixture(dir, 'viewer.sh', Buffer.from('#!/bin/sh\nexit 0\n'));
    fs.chmodSync(plain, 0o644);
    await expect(launch(`"${dir}" {file}`, '/tmp/x.png')).rejects.toMatchObject({ code: 'E_LAUNCH_FAILED', message: expect.stringContaining('EACCES') });
    await expect(launch(`"${plain}" {file}`, '/tmp/x.png')).rejects.toMatchObject({ code: 'E_LAUNCH_FAILED', message: expect.stringContaining('EACCES') });
  });

  it('shell syntax is refused before anything is started', async () => {
    const dir = scratch();
    const log = path.join(dir, 'app.log');
    await expect(launch(`${fakeApp(log, 'm')} ; true`, '/tmp/x.png')).rejects.toMatchObject({ code: 'E_LAUNCH_FAILED' });
    expect(fs.existsSync(log)).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// launchAllowed

describe('launchAllowed', () => {
  const now = 1_000_000;

  it('allows launches while fewer than perMinute happened in the last minute', () => {
    expect(launchAllowed([], now, 2)).toBe(true);
    expect(launchAllowed([now - 1_000], now, 2)).toBe(true);
    expect(launchAllowed([now - 1_000, now - 2_000], now, 2)).toBe(false);
    expect(launchAllowed([now - 1_000, now - 2_000], now, 3)).toBe(true);
  });

  it('forgets launches once a full minute has passed', () => {
    expect(OPEN_WINDOW_MS).toBe(60_000);
    expect(launchAllowed([now - 59_999, now - 1], now, 2)).toBe(false);
    expect(launchAllowed([now - 60_000, now - 1], now, 2)).toBe(true);
    expect(launchAllowed([now - 120_000, now - 90_000, now - 61_000], now, 1)).toBe(true);
  });

  it('perMinute 0 allows nothing', () => {
    expect(launchAllowed([], now, 0)).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// openMedia

describe('openMedia', () => {
  function settings(log: string, overrides: Partial<OpenSettings> = {}): OpenSettings {
    return { enabled: true, apps: fakeApps(log), perMinute: 10, ...overrides };
  }

  it('disabled: E_OPEN_DISABLED with a sentence that names --open, and nothing starts', async () => {
    const dir = scratch();
    const log = path.join(dir, 'app.log');
    const file = writeFixture(dir, 'a.png', pngBytes());
    const outcome = await openMedia(file, settings(log, { enabled: false }), false);
    expect(outcome).toEqual({ opened: false, code: 'E_OPEN_DISABLED', message: expect.stringContaining('--open') });
    expect(fs.existsSync(log)).toBe(false);
  });

  it('not media: E_NOT_MEDIA, with the MIME type when the content was recognised', async () => {
    const dir = scratch();
    const log = path.join(dir, 'app.log');
    const text = writeFixture(dir, 'x.png', textBytes());
    expect(await openMedia(text, settings(log), false)).toEqual({
      opened: false,
      code: 'E_NOT_MEDIA',
      message: 'The file is not an image, audio or video by its content, so it was not opened.',
    });
    const gz = writeFixture(dir, 'y.mp4', zlib.gzipSync(Buffer.from('x')));
    expect(await openMedia(gz, settings(log), false)).toEqual({
      opened: false,
      code: 'E_NOT_MEDIA',
      mime: 'application/gzip',
      message: expect.stringContaining('(it is application/gzip)'),
    });
    expect(fs.existsSync(log)).toBe(false);
  });

  it('rate limited: E_RATE_LIMITED with the kind and the limit, and nothing starts', async () => {
    const dir = scratch();
    const log = path.join(dir, 'app.log');
    const file = writeFixture(dir, 'a.wav', wavBytes());
    expect(await openMedia(file, settings(log, { perMinute: 3 }), true)).toEqual({
      opened: false,
      code: 'E_RATE_LIMITED',
      kind: 'audio',
      mime: 'audio/wav',
      message: expect.stringContaining('More than 3 files'),
    });
    expect(fs.existsSync(log)).toBe(false);
  });

  it('a file that cannot be read: E_NOT_FOUND', async () => {
    const dir = scratch();
    const outcome = await openMedia(path.join(dir, 'gone.png'), settings(path.join(dir, 'app.log')), false);
    expect(outcome).toMatchObject({ opened: false, code: 'E_NOT_FOUND' });
  });

  it('success: the app for the kind gets the stored path, and the outcome names the app and its pid', async () => {
    const dir = scratch();
    const log = path.join(dir, 'app.log');
    const file = writeFixture(dir, 'clip.mp4', mp4Bytes());
    const outcome = await openMedia(file, settings(log), false);
    expect(outcome).toEqual({ opened: true, kind: 'video', mime: 'video/mp4', app: process.execPath, pid: expect.any(Number) });
    const [run] = await waitForRuns(log, 1);
    expect(run!.argv).toEqual([log, 'video-app', file]);
    expect(run!.pid).toBe((outcome as { pid: number }).pid);
  });

  it('a missing app: E_APP_NOT_FOUND with the kind', async () => {
    const dir = scratch();
    const file = writeFixture(dir, 'a.png', pngBytes());
    const outcome = await openMedia(file, settings(path.join(dir, 'app.log'), { apps: { image: 'ferry-test-no-such-viewer-7f3a', audio: 'x', video: 'x' } }), false);
    expect(outcome).toMatchObject({ opened: false, code: 'E_APP_NOT_FOUND', kind: 'image', mime: 'image/png' });
  });
});

// ---------------------------------------------------------------------------------------------
// Over loopback with the library

interface Setup {
  server: FerryServer;
  port: number;
  uploadDir: string;
  /** Where the fake apps log. */
  log: string;
  /** A folder for files to send, outside the upload folder. */
  src: string;
}

async function startServer(options: ServerOptions = {}): Promise<Setup> {
  const dir = scratch();
  const uploadDir = path.join(dir, 'upload');
  const log = path.join(dir, 'apps.log');
  const src = path.join(dir, 'src');
  fs.mkdirSync(src);
  const server = createServer({ port: 0, uploadDir, open: true, apps: fakeApps(log), ...options });
  servers.push(server);
  const { port } = await server.listen();
  return { server, port, uploadDir, log, src };
}

function client(port: number, options: ClientOptions = {}): FerryClient {
  const c = createClient({ port, retryInitialMs: 20, retryMaxMs: 200, retryForMs: 5_000, ...options });
  clients.push(c);
  return c;
}

/** The session still answers: a message goes there and back. */
async function expectSessionAlive(c: FerryClient): Promise<void> {
  expect(await c.message('still here')).toBe('still here');
}

/** A refusal the client can show a person: opened false, the code, and one sentence. */
function refusal(code: string): OpenResultInfo {
  return expect.objectContaining({ opened: false, code, message: expect.stringMatching(/^[A-Z"].*\.$/) }) as OpenResultInfo;
}

describe('opening over loopback (createServer/createClient)', () => {
  it('a PNG, a WAV and an MP4 each reach the app for their kind, with the stored absolute path', async () => {
    const { port, uploadDir, log, src } = await startServer();
    const c = client(port);
    const sent = [
      { file: writeFixture(src, 'red.png', solidPng(64, 64, [255, 0, 0])), kind: 'image', mime: 'image/png', marker: 'image-app' },
      { file: writeFixture(src, 'tone.wav', toneWav()), kind: 'audio', mime: 'audio/wav', marker: 'audio-app' },
      { file: writeFixture(src, 'clip.mp4', mp4Bytes()), kind: 'video', mime: 'video/mp4', marker: 'video-app' },
    ];
    const results = [];
    for (const { file } of sent) results.push(await c.upload(file, { open: true }));

    const runs = await waitForRuns(log, 3);
    expect(runs).toHaveLength(3);
    for (const [i, { file, kind, mime, marker }] of sent.entries()) {
      const result = results[i]!;
      expect(result.savedAs).toBe(path.basename(file));
      expect(result.opened).toEqual({ opened: true, kind, mime, app: process.execPath, pid: expect.any(Number) });
      const run = runs.find((r) => r.pid === result.opened!.pid);
      expect(run, `the ${kind} app's run with pid ${result.opened!.pid}`).toBeDefined();
      const stored = run!.argv[2]!;
      expect(run!.argv).toEqual([log, marker, stored]);
      expect(path.isAbsolute(stored)).toBe(true);
      expect(stored).toBe(path.join(uploadDir, result.savedAs));
      expect(path.dirname(stored)).toBe(uploadDir);
      expect(sha256(fs.readFileSync(stored))).toBe(sha256(fs.readFileSync(file)));
    }
    await expectSessionAlive(c);
  });

  it('the kind comes from the content: a WAV sent as picture.png goes to the audio app', async () => {
    const { port, uploadDir, log, src } = await startServer();
    const c = client(port);
    const result = await c.upload(writeFixture(src, 'picture.png', wavBytes()), { open: true });
    expect(result.opened).toMatchObject({ opened: true, kind: 'audio', mime: 'audio/wav' });
    const [run] = await waitForRuns(log, 1);
    // Desktop openers go by the name's extension, so the app gets the file under a name that says
    // what it is: a link in .ferry/open/ ending in .wav, to the very same bytes.
    const opened = run!.argv[2]!;
    expect(run!.argv.slice(0, 2)).toEqual([log, 'audio-app']);
    expect(path.dirname(opened)).toBe(path.join(uploadDir, '.ferry', 'open'));
    expect(opened).toMatch(/\.wav$/);
    expect(fs.statSync(opened).ino).toBe(fs.statSync(path.join(uploadDir, 'picture.png')).ino);
  });

  it('a PNG named like a launcher file (.desktop) is opened under a .png name, never its own', async () => {
    const { port, uploadDir, log, src } = await startServer();
    const c = client(port);
    const result = await c.upload(writeFixture(src, 'evil.desktop', pngBytes()), { open: true });
    expect(result.opened).toMatchObject({ opened: true, kind: 'image' });
    const [run] = await waitForRuns(log, 1);
    expect(run!.argv[2]).toMatch(/\.png$/);
    expect(run!.argv[2]).not.toBe(path.join(uploadDir, 'evil.desktop'));
  });

  it('an upload without open:true launches nothing and has no `opened`', async () => {
    const { port, log, src } = await startServer();
    const c = client(port);
    const result = await c.upload(writeFixture(src, 'red.png', pngBytes()));
    expect(result).not.toHaveProperty('opened');
    // Then one that is opened: its run is the only one.
    const second = await c.upload(writeFixture(src, 'clip.mp4', mp4Bytes()), { open: true });
    const runs = await waitForRuns(log, 1);
    expect(runs.map((r) => r.pid)).toEqual([second.opened!.pid]);
  });

  it('a text file named .png reaches no app: opened says E_NOT_MEDIA with a sentence; the file is stored', async () => {
    const { port, uploadDir, log, src } = await startServer();
    const c = client(port);
    const text = writeFixture(src, 'notes.png', textBytes());
    const result = await c.upload(text, { open: true });
    expect(result.savedAs).toBe('notes.png');
    expect(result.opened).toEqual(refusal('E_NOT_MEDIA'));
    expect(result.opened!.message).toMatch(/not an image, audio or video/);
    expect(result.opened).not.toHaveProperty('pid');
    expect(fs.readFileSync(path.join(uploadDir, 'notes.png'))).toEqual(textBytes());
    await expectSessionAlive(c);

    // A real image afterwards is launched, and its run is the only one logged.
    const png = await c.upload(writeFixture(src, 'real.png', pngBytes()), { open: true });
    const runs = await waitForRuns(log, 1);
    expect(runs).toHaveLength(1);
    expect(runs[0]!.pid).toBe(png.opened!.pid);
    expect(runs[0]!.argv[2]).toBe(path.join(uploadDir, 'real.png'));
  });

  it('a server without open: E_OPEN_DISABLED, nothing launched, the upload still succeeds', async () => {
    const { port, uploadDir, log, src } = await startServer({ open: false });
    const c = client(port);
    const file = writeFixture(src, 'red.png', pngBytes());
    const result = await c.upload(file, { open: true });
    expect(result).toMatchObject({ savedAs: 'red.png', bytes: pngBytes().length, sha256: sha256(pngBytes()) });
    expect(result.opened).toEqual(refusal('E_OPEN_DISABLED'));
    expect(result.opened!.message).toContain('--open');
    expect(fs.readFileSync(path.join(uploadDir, 'red.png'))).toEqual(pngBytes());
    // Asking later by name is refused the same way.
    expect(await c.open('red.png')).toEqual(refusal('E_OPEN_DISABLED'));
    await expectSessionAlive(c);
    expect(fs.existsSync(log)).toBe(false);
  });

  it("client.open('stored.png') launches a file uploaded earlier, also from another connection", async () => {
    const { port, uploadDir, log, src } = await startServer();
    const first = client(port);
    const uploaded = await first.upload(writeFixture(src, 'stored.png', pngBytes()));
    expect(uploaded.opened).toBeUndefined();
    await first.close();

    const second = client(port);
    const opened = await second.open('stored.png');
    expect(opened).toEqual({ opened: true, kind: 'image', mime: 'image/png', app: process.execPath, pid: expect.any(Number) });
    const [run] = await waitForRuns(log, 1);
    expect(run).toMatchObject({ argv: [log, 'image-app', path.join(uploadDir, 'stored.png')], pid: opened.pid });
    await expectSessionAlive(second);
  });

  it('client.open of a missing name, ../x, .ferry, a path, or a symlink pointing outside: E_NOT_FOUND, nothing launched', async () => {
    const { port, uploadDir, log, src } = await startServer();
    const c = client(port);
    await c.upload(writeFixture(src, 'stored.png', pngBytes()));
    // Real images just outside the upload folder, and a symlink inside it pointing at one.
    const outside = path.dirname(uploadDir);
    writeFixture(outside, 'x', pngBytes());
    const secret = writeFixture(outside, 'secret.png', pngBytes());
    fs.symlinkSync(secret, path.join(uploadDir, 'link.png'));
    fs.symlinkSync(path.join(uploadDir, 'stored.png'), path.join(uploadDir, 'inside-link.png'));

    for (const name of ['missing.png', '../x', '.ferry', 'link.png', 'inside-link.png', '.ferry/partial', path.join(uploadDir, 'stored.png'), 'sub/stored.png', '']) {
      const result = await c.open(name);
      expect(result, `open(${JSON.stringify(name)})`).toEqual(refusal('E_NOT_FOUND'));
    }
    await expectSessionAlive(c);

    // The stored file itself does open, and its run is the only one.
    const ok = await c.open('stored.png');
    expect(ok.opened).toBe(true);
    const runs = await waitForRuns(log, 1);
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({ argv: [log, 'image-app', path.join(uploadDir, 'stored.png')], pid: ok.pid });
  });

  it('opensPerMinute 2: the third open in a session is E_RATE_LIMITED; another session may still open', async () => {
    const { port, log, src } = await startServer({ opensPerMinute: 2 });
    const c = client(port);
    const up = await c.upload(writeFixture(src, 'red.png', pngBytes()), { open: true });
    expect(up.opened?.opened).toBe(true);
    const second = await c.open('red.png');
    expect(second.opened).toBe(true);
    const third = await c.open('red.png');
    expect(third).toEqual(refusal('E_RATE_LIMITED'));
    expect(third).toMatchObject({ kind: 'image', mime: 'image/png' });
    expect(third.message).toContain('More than 2 files');
    // Refused uploads do not count, and are refused too.
    const fourth = await c.upload(writeFixture(src, 'clip.mp4', mp4Bytes()), { open: true });
    expect(fourth.opened).toEqual(refusal('E_RATE_LIMITED'));
    await expectSessionAlive(c);

    const other = client(port);
    const fromOther = await other.open('red.png');
    expect(fromOther.opened).toBe(true);
    // Exactly the three launches that were allowed ran.
    const runs = await waitForRuns(log, 3);
    expect(runs.map((r) => r.pid).sort()).toEqual([up.opened!.pid, second.pid, fromOther.pid].sort());
  });

  it('an app that does not exist: E_APP_NOT_FOUND, the file is stored and the session keeps working', async () => {
    const dir = scratch();
    const { port, uploadDir, src } = await startServer({
      apps: { image: 'ferry-test-no-such-viewer-7f3a --fullscreen {file}', audio: `"${path.join(dir, 'missing', 'player')}"` },
    });
    const c = client(port);
    const image = await c.upload(writeFixture(src, 'red.png', pngBytes()), { open: true });
    expect(image.opened).toEqual(refusal('E_APP_NOT_FOUND'));
    expect(image.opened).toMatchObject({ kind: 'image', mime: 'image/png', message: expect.stringContaining('ferry-test-no-such-viewer-7f3a') });
    expect(fs.existsSync(path.join(uploadDir, 'red.png'))).toBe(true);
    await expectSessionAlive(c);
    expect(await c.open('red.png')).toEqual(refusal('E_APP_NOT_FOUND'));
    const audio = await c.upload(writeFixture(src, 'tone.wav', wavBytes()), { open: true });
    expect(audio.opened).toEqual(refusal('E_APP_NOT_FOUND'));
    await expectSessionAlive(c);
  });

  it('an app that cannot be started (a directory, a file without x bits, shell syntax): E_LAUNCH_FAILED; the session keeps working', async () => {
    const dir = scratch();
    const notExecutable = writeFixture(dir, 'player.sh', Buffer.from('#!/bin/sh\nexit 0\n'));
    fs.chmodSync(notExecutable, 0o644);
    const { port, log, src } = await startServer({
      apps: { image: `"${dir}" {file}`, audio: `"${notExecutable}" {file}`, video: `${fakeApp(path.join(dir, 'never.log'), 'v')} && echo pwned` },
    });
    const c = client(port);
    const image = await c.upload(writeFixture(src, 'red.png', pngBytes()), { open: true });
    expect(image.opened).toEqual(refusal('E_LAUNCH_FAILED'));
    expect(image.opened!.message).toContain('EACCES');
    await expectSessionAlive(c);
    const audio = await c.upload(writeFixture(src, 'tone.wav', wavBytes()), { open: true });
    expect(audio.opened).toEqual(refusal('E_LAUNCH_FAILED'));
    expect(audio.opened!.message).toContain('EACCES');
    await expectSessionAlive(c);
    const video = await c.open((await c.upload(writeFixture(src, 'clip.mp4', mp4Bytes()))).savedAs);
    expect(video).toEqual(refusal('E_LAUNCH_FAILED'));
    expect(video.message).toContain('shell syntax');
    await expectSessionAlive(c);
    expect(fs.existsSync(path.join(dir, 'never.log'))).toBe(false);
    expect(fs.existsSync(log)).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// The CLI

describe('the CLI: send --open, ferry open, serve --help', () => {
  beforeAll(buildCliOnce, 120_000);

  afterAll(async () => {
    await killAll();
  });

  function isEvent(event: string) {
    return (line: string): boolean => jsonLines(line)[0]?.event === event;
  }

  /** `ferry serve --open` with the fake app for every kind; resolves once it accepts connections. */
  async function serveCli(extra: string[] = []): Promise<{ proc: Proc; port: number; uploadDir: string; log: string; src: string }> {
    const dir = scratch();
    const uploadDir = path.join(dir, 'upload');
    const log = path.join(dir, 'apps.log');
    const src = path.join(dir, 'src');
    fs.mkdirSync(src);
    const proc = startCli([
      'serve',
      '--port',
      '0',
      '--upload-dir',
      uploadDir,
      '--open',
      '--image-app',
      fakeApp(log, 'image-app'),
      '--audio-app',
      fakeApp(log, 'audio-app'),
      '--video-app',
      fakeApp(log, 'video-app'),
      ...extra,
    ]);
    const listening = await proc.waitForLine(isEvent('listening'));
    const port = jsonLines(listening)[0]!.port as number;
    await proc.waitForLine(isEvent('ready'));
    return { proc, port, uploadDir, log, src };
  }

  it('send --open prints where the file went and the launch, and exits 0', async () => {
    const { proc, port, uploadDir, log, src } = await serveCli();
    const file = writeFixture(src, 'red.png', solidPng(64, 64, [255, 0, 0]));
    const result = await runCli(['send', '--open', '--port', String(port), file]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(new RegExp(`→ red\\.png .*sha256 ${sha256(fs.readFileSync(file))}$`));
    const opened = lines[1]!.match(/^red\.png opened with (.+) \(pid (\d+), image\/png\)$/);
    expect(opened, lines[1]).not.toBeNull();
    expect(opened![1]).toBe(process.execPath);
    const [run] = await waitForRuns(log, 1);
    expect(run).toMatchObject({ argv: [log, 'image-app', path.join(uploadDir, 'red.png')], pid: Number(opened![2]) });
    // The server logged the launch too.
    const record = jsonLines((await proc.waitForLine(isEvent('media-opened'))))[0]!;
    expect(record).toMatchObject({ file: 'red.png', kind: 'image', mime: 'image/png', app: process.execPath, pid: Number(opened![2]) });
  });

  it('send --open --json carries the outcome in `opened`', async () => {
    const { port, uploadDir, log, src } = await serveCli();
    const file = writeFixture(src, 'tone.wav', toneWav());
    const result = await runCli(['send', '--open', '--json', '--port', String(port), file]);
    expect(result.code).toBe(0);
    const [line] = result.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { savedAs: string; opened: OpenResultInfo });
    expect(line).toMatchObject({ savedAs: 'tone.wav', opened: { opened: true, kind: 'audio', mime: 'audio/wav', app: process.execPath } });
    const [run] = await waitForRuns(log, 1);
    expect(run).toMatchObject({ argv: [log, 'audio-app', path.join(uploadDir, 'tone.wav')], pid: line!.opened.pid });
  });

  it('send --open of a text file exits 1 and says why, while the file is stored', async () => {
    const { port, uploadDir, log, src } = await serveCli();
    const file = writeFixture(src, 'notes.png', textBytes());
    const result = await runCli(['send', '--open', '--port', String(port), file]);
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/→ notes\.png .*sha256 /);
    expect(result.stdout).not.toContain('opened with');
    expect(result.stderr).toBe('ferry: notes.png was not opened: The file is not an image, audio or video by its content, so it was not opened.\n');
    expect(fs.readFileSync(path.join(uploadDir, 'notes.png'))).toEqual(textBytes());
    expect(fs.existsSync(log)).toBe(false);
  });

  it('ferry open NAME --json prints {"name","opened":{...}} per name; a missing one makes the exit 1', async () => {
    const { port, uploadDir, log, src } = await serveCli();
    expect((await runCli(['send', '--port', String(port), writeFixture(src, 'clip.mp4', mp4Bytes())])).code).toBe(0);

    const ok = await runCli(['open', 'clip.mp4', '--json', '--port', String(port)]);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    const lines = ok.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { name: string; opened: OpenResultInfo });
    expect(lines).toEqual([{ name: 'clip.mp4', opened: { opened: true, kind: 'video', mime: 'video/mp4', app: process.execPath, pid: expect.any(Number) } }]);
    const [run] = await waitForRuns(log, 1);
    expect(run).toMatchObject({ argv: [log, 'video-app', path.join(uploadDir, 'clip.mp4')], pid: lines[0]!.opened.pid });

    const missing = await runCli(['open', 'nope.png', '--json', '--port', String(port)]);
    expect(missing.code).toBe(1);
    expect(JSON.parse(missing.stdout)).toEqual({ name: 'nope.png', opened: { opened: false, code: 'E_NOT_FOUND', message: expect.stringMatching(/nope\.png.*\.$/) } });
    expect(missing.stderr).toMatch(/^ferry: nope\.png was not opened: .+\.\n$/);
  });

  it('ferry open NAME (text) prints the launch', async () => {
    const { port, src } = await serveCli();
    expect((await runCli(['send', '--port', String(port), writeFixture(src, 'red.png', pngBytes())])).code).toBe(0);
    const result = await runCli(['open', 'red.png', '--port', String(port)]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^red\.png opened with .+ \(pid \d+, image\/png\)\n$/);
  });

  it('serve --help explains --open, --image-app, --audio-app, --video-app and {file}, with an example', async () => {
    const result = await runCli(['serve', '--help']);
    expect(result.code).toBe(0);
    for (const flag of ['--open', '--image-app <cmd>', '--audio-app <cmd>', '--video-app <cmd>', '--opens-per-minute <n>', '{file}']) {
      expect(result.stdout).toContain(flag);
    }
    expect(result.stdout).toMatch(/content.*never its name/);
    expect(result.stdout).toMatch(/^\s+ferry serve --open --image-app "[^"]*\{file\}"/m);
  });
});
