// Shared helpers for the benchmarks: tracked child processes (always killed, even on failure),
// tracked temp folders (always removed), payload generation, /proc readings and statistics.
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { cli, pipeScript } from './common-paths.mjs';

export * from './common-paths.mjs';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

// ---------------------------------------------------------------------------------------------
// Processes and temp folders that must not outlive the bench.

const children = new Set();
const tempDirs = new Set();
let tempRoot = os.tmpdir();

/** Where temp folders go (the disk the uploads are written to). */
export function setTempRoot(dir) {
  fs.mkdirSync(dir, { recursive: true });
  tempRoot = dir;
}

export function getTempRoot() {
  return tempRoot;
}

export function makeTempDir(prefix) {
  const dir = fs.mkdtempSync(path.join(tempRoot, `ferry-bench-${prefix}-`));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDir(dir) {
  fs.rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/** Spawns a child that is killed when the bench ends, however it ends. */
export function spawnTracked(command, args, options = {}) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  children.add(child);
  child.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    });
    child.once('error', (error) => {
      children.delete(child);
      resolve({ code: null, signal: null, error });
    });
  });
  // Keep the last few kilobytes of stderr for error messages; never let a full pipe stall a child.
  child.stderrTail = '';
  child.stderr?.on('data', (d) => {
    child.stderrTail = (child.stderrTail + d).slice(-4000);
  });
  return child;
}

/** SIGKILLs a child (if still running) and waits for it to be gone. */
export async function kill(child, signal = 'SIGKILL') {
  if (!child) return;
  if (child.exitCode === null && child.signalCode === null) {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
  await child.exited;
}

export async function killAll() {
  await Promise.all([...children].map((c) => kill(c)));
}

function killAllSync() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
}

process.on('exit', killAllSync);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    console.error(`\n${signal}: stopping, killing children and removing temp files`);
    killAllSync();
    process.exit(130);
  });
}

/** Cleans up whatever a benchmark left behind (its children and temp folders). */
export async function cleanupAll() {
  await killAll();
  for (const dir of [...tempDirs]) removeTempDir(dir);
}

// ---------------------------------------------------------------------------------------------
// Waiting.

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out after ${Math.round(ms / 1000)} s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Reads a child's stdout line by line until `match(line)` returns something other than undefined.
 * The rest of stdout keeps being drained (and handed to `onLine`), so the child never blocks on it.
 */
export function waitForLine(child, match, timeoutMs, what) {
  const lines = readline.createInterface({ input: child.stdout });
  let found = false;
  const result = new Promise((resolve, reject) => {
    lines.on('line', (line) => {
      child.onLine?.(line);
      if (found) return;
      let value;
      try {
        value = match(line);
      } catch {
        value = undefined;
      }
      if (value !== undefined) {
        found = true;
        resolve(value);
      }
    });
    child.exited.then(({ code, signal }) => {
      if (!found) reject(new Error(`${what} exited (${code ?? signal}) before it was ready: ${child.stderrTail.trim().slice(-800)}`));
    });
  });
  return withTimeout(result, timeoutMs, what);
}

/** Spawns a command, waits for it to exit 0, and returns its wall time in ms and its stdout. */
export async function timeProcess(command, args, { timeoutMs, what, env, onSpawn } = {}) {
  const started = performance.now();
  const child = spawnTracked(command, args, env ? { env: { ...process.env, ...env } } : {});
  onSpawn?.(child);
  let stdout = '';
  child.stdout.on('data', (d) => (stdout += d));
  let outcome;
  try {
    outcome = await withTimeout(child.exited, timeoutMs ?? 600_000, what ?? path.basename(args[0] ?? command));
  } catch (error) {
    await kill(child);
    throw error;
  }
  const ms = performance.now() - started;
  if (outcome.code !== 0) {
    throw new Error(`${what ?? command} failed (${outcome.error?.message ?? outcome.code ?? outcome.signal}): ${child.stderrTail.trim().slice(-800)}`);
  }
  return { ms, stdout, child };
}

// ---------------------------------------------------------------------------------------------
// ferry and baseline servers.

/** Log lines of `ferry serve` are JSON; returns the port of its `listening` line. */
export function listeningPort(line) {
  const o = JSON.parse(line);
  return o.event === 'listening' ? o.port : undefined;
}

/**
 * Starts `ferry serve` as a child and resolves once it logs `listening`, with its port and the time
 * from spawn to that line. `fdLimit` raises the open-file limit (through bash's ulimit) first.
 */
export async function startFerryServe({ uploadDir, port = 0, args = [], nodeArgs = [], fdLimit, timeoutMs = 30_000 }) {
  const nodeCommand = [process.execPath, ...nodeArgs, cli, 'serve', '--port', String(port), '--upload-dir', uploadDir, '--log-level', 'info', ...args];
  const started = performance.now();
  const child = fdLimit
    ? spawnTracked('bash', ['-c', `${ulimitPrefix(fdLimit)} exec "$@"`, 'bash', ...nodeCommand])
    : spawnTracked(nodeCommand[0], nodeCommand.slice(1));
  const bound = await waitForLine(child, listeningPort, timeoutMs, 'ferry serve');
  return { child, port: bound, startMs: performance.now() - started };
}

/** Starts the pipe baseline's receiver, writing into `dir`. */
export async function startPipeReceiver(dir, { nodeArgs = [] } = {}) {
  const child = spawnTracked(process.execPath, [...nodeArgs, pipeScript, 'receive', dir]);
  const port = await waitForLine(child, (l) => JSON.parse(l).port, 15_000, 'pipe receiver');
  return { child, port };
}

/** Whether something listens on 127.0.0.1:port (from /proc/net/tcp, so no connection is made). */
export function isListening(port) {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  try {
    return fs
      .readFileSync('/proc/net/tcp', 'utf8')
      .split('\n')
      .some((l) => {
        const cols = l.trim().split(/\s+/);
        return cols[1]?.endsWith(`:${hex}`) && cols[3] === '0A';
      });
  } catch {
    return false;
  }
}

/** A port that is free right now on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Deletes everything in an upload folder except ferry's own state folder. */
export function emptyInbox(dir) {
  for (const name of fs.readdirSync(dir)) {
    if (name === '.ferry') continue;
    fs.rmSync(path.join(dir, name), { recursive: true, force: true });
  }
}

export function commandExists(command) {
  return (process.env.PATH ?? '').split(':').some((dir) => {
    try {
      fs.accessSync(path.join(dir, command), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Payloads: AES-128-CTR keystream (deterministic from the seed, GB/s with AES-NI, incompressible).

export function generateFile(file, bytes, seed = 1) {
  const key = crypto.createHash('sha256').update(`ferry-bench-${seed}`).digest().subarray(0, 16);
  const cipher = crypto.createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const hash = crypto.createHash('sha256');
  const block = Math.min(bytes, 8 * MiB);
  const zeros = Buffer.alloc(block);
  const fd = fs.openSync(file, 'w');
  try {
    let left = bytes;
    while (left > 0) {
      const n = Math.min(left, block);
      const chunk = cipher.update(n === block ? zeros : zeros.subarray(0, n));
      hash.update(chunk);
      let off = 0;
      while (off < chunk.length) off += fs.writeSync(fd, chunk, off, chunk.length - off);
      left -= n;
    }
    // On disk before anything is timed, so no run pays for writing back the payload (small files
    // are left to settleDisk(), one sync for all of them).
    if (bytes >= 8 * MiB) fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

/**
 * Writes back every dirty page (e.g. of files received in the previous run) so that each timed
 * transfer starts with the disk idle; without it one run pays for another's writes. Not timed.
 */
export function settleDisk() {
  spawnSync('sync', [], { stdio: 'ignore', timeout: 120_000 });
}

/** Free bytes for an unprivileged writer on the file system holding `dir`. */
export function freeBytes(dir) {
  const s = fs.statfsSync(dir);
  return Number(s.bavail) * Number(s.bsize);
}

// ---------------------------------------------------------------------------------------------
// /proc readings.

/** `{ rss, hwm }` in bytes from /proc/<pid>/status, or undefined when the process is gone. */
export function memoryOf(pid) {
  let text;
  try {
    text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const field = (name) => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : undefined;
  };
  return { rss: field('VmRSS'), hwm: field('VmHWM') };
}

/**
 * Resets a process's peak RSS (VmHWM) to its current RSS, so that the next `memoryOf` reports the
 * peak since now (Linux: writing 5 to /proc/<pid>/clear_refs). False when that is not allowed.
 */
export function resetPeakMemory(pid) {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

let clockTicks;
/** Clock ticks per second, the unit of the CPU times in /proc/<pid>/stat. */
function ticksPerSecond() {
  if (clockTicks === undefined) {
    const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const n = Number(out.stdout?.trim());
    clockTicks = Number.isFinite(n) && n > 0 ? n : 100;
  }
  return clockTicks;
}

/**
 * CPU time a running process has used so far, all its threads: `{ user, system }` in ms, from
 * /proc/<pid>/stat (fields 14 and 15, in clock ticks), or undefined when the process is gone.
 */
export function cpuTimeOf(pid) {
  let text;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces: count from after it.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const tick = 1000 / ticksPerSecond();
  return { user: Number(fields[11]) * tick, system: Number(fields[12]) * tick };
}

/** The soft and hard open-file limits of this process. */
export function fdLimits() {
  try {
    const line = fs
      .readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const [soft, hard] = line.replace('Max open files', '').trim().split(/\s+/);
    const num = (v) => (v === 'unlimited' ? Infinity : Number(v));
    return { soft: num(soft), hard: num(hard) };
  } catch {
    return { soft: 1024, hard: 1024 };
  }
}

/** The shell prefix that raises a child's open-file limit to `wanted`, or as far as it may go. */
export function ulimitPrefix(wanted) {
  return `ulimit -n ${wanted} 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null;`;
}

/** Spawns a tracked child (stdin piped) with its open-file limit raised to `limit`, or as far as it may go. */
export function spawnWithFdLimit(limit, command, args, options = {}) {
  return spawnTracked('bash', ['-c', `${ulimitPrefix(limit)} exec "$@"`, 'bash', command, ...args], { stdio: ['pipe', 'pipe', 'pipe'], ...options });
}

/**
 * How many files a child started through ulimitPrefix(wanted) may open: asked of bash itself, since
 * whether the hard limit can be raised depends on privileges (root in a container often cannot).
 */
export function achievableFdLimit(wanted = 65_536) {
  const out = spawnSync('bash', ['-c', `${ulimitPrefix(wanted)} ulimit -n`], { encoding: 'utf8' });
  const n = Number(out.stdout?.trim());
  return Number.isFinite(n) && n > 0 ? Math.min(n, wanted) : fdLimits().soft;
}

// ---------------------------------------------------------------------------------------------
// Statistics.

export function median(xs) {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return undefined;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** A measured quantity over the runs: its samples, median and spread. */
export function metric(label, unit, samples, extra = {}) {
  const clean = samples.filter((x) => typeof x === 'number' && Number.isFinite(x));
  return {
    label,
    unit,
    samples: clean.map(round),
    median: round(median(clean)),
    min: round(clean.length ? Math.min(...clean) : undefined),
    max: round(clean.length ? Math.max(...clean) : undefined),
    ...extra,
  };
}

export function round(x) {
  if (typeof x !== 'number' || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  const digits = a >= 100 ? 1 : a >= 1 ? 3 : 4;
  return Number(x.toFixed(digits));
}

/**
 * A target on a ratio or a value. `op` is '<=', '<', '>=' or '>'; `actual` is the median value (or
 * the ratio of medians) compared with `value`.
 */
export function target(name, actual, op, value, detail = {}) {
  const ok = { '<=': (a, b) => a <= b, '<': (a, b) => a < b, '>=': (a, b) => a >= b, '>': (a, b) => a > b }[op];
  const measured = typeof actual === 'number' && Number.isFinite(actual);
  return { name, op, value, actual: round(actual), pass: measured ? ok(actual, value) : null, ...detail };
}

export const mb = (bytes) => bytes / 1e6;

/** The value for the run's scale: `--smoke` (tiny, CI), `--quick` (small) or a full run. */
export function bySize(ctx, { smoke, quick, full }) {
  return ctx.smoke ? smoke : ctx.quick ? quick : full;
}

/**
 * One line of the printed table: a measure, ferry's metric beside its baseline's (keys into the
 * figure's `metrics`), the ratio between them (a key into `ratios`) and the target judged on it (an
 * index into `targets`). Any of baseline, ratio and target may be left out.
 */
export function row(measure, ferry, { baseline, ratio, target: targetIndex } = {}) {
  return { measure, ferry, ...(baseline ? { baseline } : {}), ...(ratio ? { ratio } : {}), ...(targetIndex !== undefined ? { target: targetIndex } : {}) };
}

/** A ratio of two medians, with the ratio within each run (both measured back to back) when given. */
export function ratioOf(contender, baseline) {
  const value = median(contender) / median(baseline);
  if (contender.length < 2 || contender.length !== baseline.length) return { value };
  const perRun = contender.map((c, i) => c / baseline[i]);
  return { value, perRun: perRun.map(round), min: round(Math.min(...perRun)), max: round(Math.max(...perRun)) };
}
