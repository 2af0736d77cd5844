import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(REPO_ROOT, 'dist/apps/cli.js');

/** Builds dist/ when it is missing; `npm test` builds first, so this only runs on a fresh checkout. Use as `beforeAll(buildCliOnce, 120_000)`. */
export function buildCliOnce(): void {
  if (!fs.existsSync(CLI)) execFileSync('npm', ['run', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' });
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

type Stream = 'stdout' | 'stderr';

/** A spawned process whose output is collected as it arrives. */
export interface Proc {
  readonly child: ChildProcess;
  readonly stdout: string;
  readonly stderr: string;
  /** Complete lines written so far to `stream`. */
  lines(stream?: Stream): string[];
  /** Resolves with the first line of `stream` (past or future) matching `predicate`; rejects if the process exits first or after `timeoutMs`. */
  waitForLine(predicate: (line: string) => boolean, options?: { stream?: Stream; timeoutMs?: number }): Promise<string>;
  /** Resolves once the process has exited and its output streams are closed. */
  readonly exited: Promise<Exit>;
  readonly hasExited: boolean;
}

const running = new Set<Proc>();

/** The environment minus anything that would change ferry's settings behind a test's back. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('FERRY_') || key === 'LOG_LEVEL' || key.startsWith('VITEST') || key === 'NODE_OPTIONS') continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

/** Starts `node dist/apps/cli.js ...args`. */
export function startCli(args: string[], options: { env?: Record<string, string>; cwd?: string; input?: string } = {}): Proc {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: options.cwd ?? REPO_ROOT,
    env: cleanEnv(options.env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const out: Record<Stream, string> = { stdout: '', stderr: '' };
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const waiter of [...waiters]) waiter();
  };
  child.stdout!.setEncoding('utf8').on('data', (text: string) => {
    out.stdout += text;
    notify();
  });
  child.stderr!.setEncoding('utf8').on('data', (text: string) => {
    out.stderr += text;
    notify();
  });
  let hasExited = false;
  const exited = new Promise<Exit>((resolve, reject) => {
    child.once('error', reject);
    // 'close' comes after 'exit' and after the output streams have ended, so nothing is missed.
    child.once('close', (code, signal) => {
      hasExited = true;
      resolve({ code, signal });
      notify();
    });
  });
  child.stdin!.on('error', () => {});
  if (options.input !== undefined) child.stdin!.end(options.input);

  const completeLines = (stream: Stream) => {
    const text = out[stream];
    const end = text.lastIndexOf('\n');
    return end === -1 ? [] : text.slice(0, end).split('\n');
  };

  const proc: Proc = {
    child,
    get stdout() {
      return out.stdout;
    },
    get stderr() {
      return out.stderr;
    },
    lines: (stream = 'stdout') => completeLines(stream),
    waitForLine(predicate, { stream = 'stdout', timeoutMs = 15_000 } = {}) {
      return new Promise<string>((resolve, reject) => {
        const check = () => {
          const found = completeLines(stream).find(predicate);
          if (found !== undefined) return done(() => resolve(found));
          if (hasExited) {
            done(() => reject(new Error(`process exited before the expected line appeared\nstdout:\n${out.stdout}\nstderr:\n${out.stderr}`)));
          }
        };
        const timer = setTimeout(
          () => done(() => reject(new Error(`no matching line within ${timeoutMs} ms\nstdout:\n${out.stdout}\nstderr:\n${out.stderr}`))),
          timeoutMs,
        );
        const done = (settle: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          settle();
        };
        waiters.add(check);
        check();
      });
    },
    exited,
    get hasExited() {
      return hasExited;
    },
  };
  running.add(proc);
  void exited.finally(() => running.delete(proc)).catch(() => {});
  return proc;
}

/** Runs the CLI to completion and returns its exit status and output. */
export async function runCli(args: string[], options: { env?: Record<string, string>; cwd?: string; input?: string } = {}): Promise<Exit & { stdout: string; stderr: string }> {
  const proc = startCli(args, { ...options, input: options.input ?? '' });
  const exit = await proc.exited;
  return { ...exit, stdout: proc.stdout, stderr: proc.stderr };
}

/** Kills every process started here that is still running, and waits for each to exit. */
export async function killAll(): Promise<void> {
  const procs = [...running];
  for (const proc of procs) if (!proc.hasExited) proc.child.kill('SIGKILL');
  await Promise.allSettled(procs.map((proc) => proc.exited));
}

/** Parses the JSON log lines of a server's stdout, skipping anything that is not JSON. */
export function jsonLines(text: string): Record<string, unknown>[] {
  const records: Record<string, unknown>[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      records.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a partial or non-JSON line
    }
  }
  return records;
}

/** A line predicate for `waitForLine`: a JSON log line whose `event` is `event` (and that passes `extra`). */
export function isEvent(event: string, extra: (record: Record<string, unknown>) => boolean = () => true): (line: string) => boolean {
  return (line: string): boolean => {
    const [record] = jsonLines(line);
    return record !== undefined && record.event === event && extra(record);
  };
}

/** The port in the `listening` log line of a `serve` process. */
export async function listeningPort(proc: Proc): Promise<number> {
  const line = await proc.waitForLine(isEvent('listening'));
  const port = jsonLines(line)[0]!.port;
  if (typeof port !== 'number') throw new Error(`the listening line carries no port: ${line}`);
  return port;
}

/** Starts `ferry serve ...args`; resolves once it accepts connections, with the port it listens on. */
export async function startServe(args: string[], options: Parameters<typeof startCli>[1] = {}): Promise<{ proc: Proc; port: number }> {
  const proc = startCli(['serve', ...args], options);
  const port = await listeningPort(proc);
  await proc.waitForLine(isEvent('ready'));
  return { proc, port };
}

/** `ferry serve --port 0 ...extra` into a new `upload` folder inside `dir`; resolves once it accepts connections. */
export async function serveInto(dir: string, extra: string[] = [], options: Parameters<typeof startCli>[1] = {}): Promise<{ proc: Proc; port: number; uploadDir: string }> {
  const uploadDir = path.join(dir, 'upload');
  return { ...(await startServe(['--port', '0', '--upload-dir', uploadDir, ...extra], options)), uploadDir };
}
