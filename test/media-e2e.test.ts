/**
 * Opening media as a person would see it, with real apps from Debian packages: a real X server
 * (Xvfb), a real image viewer (feh) whose window is checked pixel by pixel in screenshots
 * (ImageMagick's `import`), and a real audio player (aplay) playing to ALSA's null device.
 *
 * These tests are never skipped: a missing program fails the test, naming the package to install.
 * CI installs: xvfb x11-utils feh imagemagick alsa-utils.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { OpenResultInfo } from '../index.js';
import { solidPng, toneWav, writeFixture } from './fixtures/media.js';
import { tempDir } from './helpers/files.js';
import { buildCliOnce, killAll, runCli, serveInto, type Proc } from './helpers/processes.js';

const execFileAsync = promisify(execFile);

/** Each program these tests run, and the Debian package that provides it. */
const PACKAGES = {
  Xvfb: 'xvfb',
  xdpyinfo: 'x11-utils',
  feh: 'feh',
  import: 'imagemagick',
  aplay: 'alsa-utils',
} as const;

type Program = keyof typeof PACKAGES;

function onPath(program: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    try {
      fs.accessSync(path.join(dir, program), fs.constants.X_OK);
      return true;
    } catch {
      // not in this folder
    }
  }
  return false;
}

/** Fails (never skips) when a program is missing, saying which Debian package provides it. */
function requirePrograms(...programs: Program[]): void {
  const missing = programs.filter((p) => !onPath(p));
  if (missing.length > 0) {
    const packages = [...new Set(missing.map((p) => PACKAGES[p]))].join(' ');
    throw new Error(`${missing.join(', ')} not found on the PATH: install the Debian package(s) with \`apt-get install -y ${packages}\` (CI installs them).`);
  }
}

const dirs: string[] = [];
/** Processes started here directly (Xvfb). */
const children: ChildProcess[] = [];
/** Process groups of apps that ferry started detached (feh, the audio wrapper). */
const appGroups: number[] = [];

beforeAll(buildCliOnce, 120_000);

afterEach(async () => {
  // The apps first (they are in their own process groups, as ferry starts them detached),
  // then the ferry processes, then the X server.
  for (const pgid of appGroups.splice(0)) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await killAll();
  await Promise.allSettled(children.splice(0).map(stop));
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * Ends a child with SIGTERM, so Xvfb removes its lock file and socket, and with SIGKILL if it has
 * not exited 5 s later.
 */
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), 5_000)));
  if ((await Promise.race([exited, late])) === 'late') child.kill('SIGKILL');
  clearTimeout(timer);
  await exited;
}

function scratch(): string {
  const dir = tempDir('ferry-media-e2e-');
  dirs.push(dir);
  return dir;
}

/** `ferry serve --port 0 --open …`; resolves once it accepts connections. */
function serve(args: string[], env: Record<string, string> = {}): Promise<{ proc: Proc; port: number; uploadDir: string }> {
  return serveInto(scratch(), ['--open', ...args], { env });
}

/** `ferry send --open --json FILE`: the one result line. */
async function sendOpen(port: number, file: string): Promise<{ savedAs: string; opened: OpenResultInfo }> {
  const result = await runCli(['send', '--open', '--json', '--port', String(port), file]);
  expect(result.stderr).toBe('');
  expect(result.code).toBe(0);
  const lines = result.stdout.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as { savedAs: string; opened: OpenResultInfo };
}

// ---------------------------------------------------------------------------------------------
// X

/**
 * Starts Xvfb on a display number it picks itself (-displayfd writes the number once the server
 * is ready), then checks with xdpyinfo, polling for at most 10 s, that clients can connect.
 */
async function startXvfb(): Promise<string> {
  const xvfb = spawn('Xvfb', ['-displayfd', '3', '-screen', '0', '320x240x24', '-nolisten', 'tcp', '-noreset'], {
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
  });
  children.push(xvfb);
  let stderr = '';
  xvfb.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const display = await new Promise<string>((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`Xvfb did not report its display within 10 s\n${stderr}`)), 10_000);
    xvfb.stdio[3]!.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const match = text.match(/^(\d+)\n/);
      if (match) {
        clearTimeout(timer);
        resolve(`:${match[1]}`);
      }
    });
    xvfb.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`Xvfb exited (${code ?? signal}) before it was ready\n${stderr}`));
    });
    xvfb.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
  await vi.waitFor(() => execFileAsync('xdpyinfo', ['-display', display], { timeout: 5_000 }), { timeout: 10_000, interval: 100 });
  return display;
}

/** The colour of one pixel of the whole screen, from an ImageMagick screenshot. */
async function pixel(display: string, x: number, y: number): Promise<[number, number, number]> {
  const { stdout } = await execFileAsync('import', ['-display', display, '-window', 'root', '-crop', `1x1+${x}+${y}`, '-depth', '8', 'rgb:-'], {
    encoding: 'buffer',
    timeout: 10_000,
  });
  expect(stdout.length, 'bytes of a 1x1 RGB screenshot').toBe(3);
  return [stdout[0]!, stdout[1]!, stdout[2]!];
}

function isRed([r, g, b]: [number, number, number]): boolean {
  return r >= 250 && g <= 5 && b <= 5;
}

describe('opening media with real apps', () => {
  it('an image sent with `ferry send --open` is shown by feh on the X display: the pixels turn red', async () => {
    requirePrograms('Xvfb', 'xdpyinfo', 'feh', 'import');
    const display = await startXvfb();
    // Before: nothing red on the screen, inside or outside where the window will be.
    expect(isRed(await pixel(display, 10, 10))).toBe(false);

    const { port, uploadDir } = await serve(['--image-app', 'feh --geometry 64x64+0+0 {file}'], { DISPLAY: display });
    const file = writeFixture(scratch(), 'red.png', solidPng(64, 64, [255, 0, 0]));

    const { savedAs, opened } = await sendOpen(port, file);
    expect(savedAs).toBe('red.png');
    expect(opened).toMatchObject({ opened: true, kind: 'image', mime: 'image/png', app: 'feh' });
    expect(opened.pid).toBeGreaterThan(0);
    appGroups.push(opened.pid!);

    // feh maps a 64x64 window at the top left corner and draws the image into it.
    await vi.waitFor(
      async () => {
        const seen = await pixel(display, 10, 10);
        expect(isRed(seen), `pixel (10,10) is ${seen.join(',')}`).toBe(true);
      },
      { timeout: 10_000, interval: 100 },
    );
    expect(isRed(await pixel(display, 63, 63))).toBe(true);
    // Outside the window the screen is untouched: it is a 64x64 window, not a red screen.
    expect(isRed(await pixel(display, 100, 100))).toBe(false);
    expect(isRed(await pixel(display, 64, 10))).toBe(false);

    // The viewer that draws is the process ferry reported, showing the stored file.
    const cmdline = fs.readFileSync(`/proc/${opened.pid}/cmdline`, 'utf8').split('\0');
    expect(cmdline).toEqual(['feh', '--geometry', '64x64+0+0', path.join(uploadDir, 'red.png'), '']);
  });

  it('a sound sent with `ferry send --open` is played by aplay to the null device, which exits 0', async () => {
    requirePrograms('aplay');
    const work = scratch();
    const status = path.join(work, 'aplay.status');
    const messages = path.join(work, 'aplay.stderr');
    // ferry starts the app detached and does not wait for it, so a wrapper records how aplay ended.
    // The status file is written whole and then renamed, so it is never seen half-written.
    const wrapper = writeFixture(
      work,
      'play.sh',
      Buffer.from(`#!/bin/sh\naplay -D null "$1" 2> "${messages}"\necho $? > "${status}.tmp"\nmv "${status}.tmp" "${status}"\n`),
    );
    fs.chmodSync(wrapper, 0o755);

    const { uploadDir, port } = await serve(['--audio-app', `"${wrapper}" {file}`]);
    const file = writeFixture(scratch(), 'tone.wav', toneWav());

    const { savedAs, opened } = await sendOpen(port, file);
    expect(savedAs).toBe('tone.wav');
    expect(opened).toMatchObject({ opened: true, kind: 'audio', mime: 'audio/wav', app: wrapper });
    appGroups.push(opened.pid!);

    const exitStatus = await vi.waitFor(
      () => {
        expect(fs.existsSync(status), `${status} written by the wrapper`).toBe(true);
        return fs.readFileSync(status, 'utf8').trim();
      },
      { timeout: 10_000, interval: 50 },
    );
    const said = fs.readFileSync(messages, 'utf8');
    expect(exitStatus, `aplay's exit status; it said:\n${said}`).toBe('0');
    // aplay read the stored file as a WAV with the format it was made with (not as raw bytes).
    expect(said).toContain(`Playing WAVE '${path.join(uploadDir, 'tone.wav')}' : Signed 16 bit Little Endian, Rate 8000 Hz, Mono`);
  });
});
