/**
 * `ferry connect` as a user meets it. In a real terminal (a tmux pane): notices, replies and results
 * are printed above the prompt and the line being typed survives them, the prompt shows an upload in
 * progress and a lost connection, `exit` while disconnected ends the session with one line saying
 * what was not confirmed, Ctrl-C clears a line or leaves. With piped input: /send arguments read
 * like a shell reads them, /status with --json, and the end of input while the server is away.
 * Every wait is on a process exit or on text appearing (in the pane, or in the output), never a sleep.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { scratchDirs, sha256 } from './helpers/files.js';
import { CLI, buildCliOnce, cleanEnv, killAll, runCli, startServe, type Proc } from './helpers/processes.js';
import { freePort } from './helpers/ports.js';

const scratch = scratchDirs('ferry-cli-connect-');
const terminals: Terminal[] = [];

beforeAll(buildCliOnce, 120_000);

afterEach(async () => {
  for (const terminal of terminals.splice(0)) terminal.close();
  await killAll();
});

afterAll(() => scratch.removeAll());

async function serve(uploadDir: string, port = 0): Promise<{ proc: Proc; port: number }> {
  return startServe(['--port', String(port), '--upload-dir', uploadDir]);
}

async function kill(proc: Proc): Promise<void> {
  proc.child.kill('SIGKILL');
  await proc.exited;
}

function quote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * `ferry ARGS` in a pane of a tmux server of its own, 160 columns wide. When ferry exits the pane
 * stays, showing `[exited STATUS]`.
 */
class Terminal {
  private static made = 0;
  private readonly socket = `ferry-cli-test-${process.pid}-${Terminal.made++}`;

  constructor(args: string[], cwd: string) {
    const command = [process.execPath, CLI, ...args].map(quote).join(' ');
    try {
      this.tmux('new-session', '-d', '-s', 'main', '-x', '160', '-y', '40', '-c', cwd, 'sh', '-c', `${command}; printf '\\n[exited %s]\\n' $?; sleep 3600`);
    } catch (err) {
      throw new Error(`These tests run ferry in a terminal made by tmux; install tmux (apt-get install tmux, brew install tmux): ${(err as Error).message}`);
    }
    terminals.push(this);
  }

  /** Types text without pressing Enter. */
  type(text: string): void {
    this.tmux('send-keys', '-t', 'main', '-l', text);
  }

  /** Presses keys by their tmux names: Enter, C-c, C-d. */
  press(...keys: string[]): void {
    this.tmux('send-keys', '-t', 'main', ...keys);
  }

  /** The lines on screen, trailing spaces and empty lines at the bottom removed. */
  lines(): string[] {
    const lines = this.tmux('capture-pane', '-p', '-t', 'main')
      .split('\n')
      .map((l) => l.trimEnd());
    while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    return lines;
  }

  last(): string {
    return this.lines().pop() ?? '';
  }

  /** Resolves with the screen once `predicate` holds for it. */
  async until(predicate: (lines: string[]) => boolean, what: string, timeoutMs = 15_000): Promise<string[]> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const lines = this.lines();
      if (predicate(lines)) return lines;
      if (performance.now() > deadline) throw new Error(`the terminal never showed ${what}; it shows:\n${lines.join('\n')}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Resolves once a line matching `pattern` is on screen. */
  showing(pattern: RegExp | string, timeoutMs?: number): Promise<string[]> {
    const test = (l: string) => (typeof pattern === 'string' ? l.includes(pattern) : pattern.test(l));
    return this.until((lines) => lines.some(test), String(pattern), timeoutMs);
  }

  close(): void {
    try {
      this.tmux('kill-server');
    } catch {
      // Already gone.
    }
  }

  private tmux(...args: string[]): string {
    return execFileSync('tmux', ['-L', this.socket, '-f', '/dev/null', ...args], { encoding: 'utf8', env: cleanEnv({ TERM: 'xterm-256color' }) });
  }
}

describe('ferry connect in a terminal', () => {
  it('a notice never breaks into the line being typed; replies land above the prompt; it reconnects', async () => {
    const uploadDir = path.join(scratch(), 'upload');
    const first = await serve(uploadDir);
    const port = first.port;
    const term = new Terminal(['connect', '--port', String(port), '--retry-initial', '50ms', '--retry-max', '200ms'], scratch());
    await term.showing(`ferry: connected to 127.0.0.1:${port}`);
    await term.until((l) => l[l.length - 1] === 'ferry>', 'the prompt');

    term.type('hello');
    term.press('Enter');
    let screen = await term.showing(/^< hello$/);
    expect(screen.indexOf('< hello')).toBeLessThan(screen.length - 1);
    expect(screen[screen.length - 1]).toBe('ferry>');

    // Half a line typed, then the server goes away: the notice appears above, the typed text stays.
    term.type('half');
    await term.until((l) => l[l.length - 1] === 'ferry> half', 'the typed text');
    await kill(first.proc);
    screen = await term.showing('retrying (Ctrl-C to stop)');
    screen = await term.until((l) => l[l.length - 1] === 'ferry (disconnected, retrying)> half', 'the prompt of a lost connection with the typed text');
    expect(screen[screen.length - 2]).toMatch(new RegExp(`^ferry: (lost the connection to|nothing listening on) 127\\.0\\.0\\.1:${port}.*retrying \\(Ctrl-C to stop\\)$`));
    expect(screen.filter((l) => l.includes('half'))).toEqual(['ferry (disconnected, retrying)> half']);
    expect(screen.filter((l) => l.includes('retrying (Ctrl-C to stop)'))).toHaveLength(1);

    // The rest of the line, sent while disconnected, is delivered once the server is back.
    term.type('way');
    term.press('Enter');
    await serve(uploadDir, port);
    screen = await term.showing(/^< halfway$/);
    screen = await term.until((l) => l[l.length - 1] === 'ferry>', 'the prompt');
    const notice = screen.findIndex((l) => l.includes('retrying (Ctrl-C to stop)'));
    const back = screen.lastIndexOf(`ferry: connected to 127.0.0.1:${port}`);
    expect(back).toBeGreaterThan(notice);
    expect(screen.indexOf('< halfway')).toBeGreaterThan(notice);

    term.type('exit');
    term.press('Enter');
    await term.showing('[exited 0]');
  });

  it('an upload shows its progress in the prompt, and its result line is not overwritten', async () => {
    const { port } = await serve(path.join(scratch(), 'upload'));
    const dir = scratch();
    const content = Buffer.alloc(3 * 1024 * 1024, 7);
    fs.writeFileSync(path.join(dir, 'big.bin'), content);
    const term = new Terminal(['connect', '--port', String(port), '--limit-rate', '1M'], dir);
    await term.until((l) => l[l.length - 1] === 'ferry>', 'the prompt');

    term.type('/send big.bin');
    term.press('Enter');
    await term.until((l) => /^\[big\.bin \d+%\] ferry>$/.test(l[l.length - 1]!), 'the progress in the prompt');
    term.type('typed meanwhile');
    const screen = await term.showing(/^big\.bin → big\.bin/);
    const result = screen.find((l) => l.startsWith('big.bin → '))!;
    expect(result).toBe(`big.bin → big.bin  3.00 MiB  sha256 ${sha256(content)}`);
    await term.until((l) => l[l.length - 1] === 'ferry> typed meanwhile', 'the prompt without progress, the typed text kept');
  });

  it('`exit` while disconnected ends at once, saying what the server never confirmed', async () => {
    const first = await serve(path.join(scratch(), 'upload'));
    const term = new Terminal(['connect', '--port', String(first.port)], scratch());
    await term.until((l) => l[l.length - 1] === 'ferry>', 'the prompt');
    await kill(first.proc);
    await term.showing('retrying (Ctrl-C to stop)');

    term.type('lost words');
    term.press('Enter');
    term.type('exit');
    term.press('Enter');
    const screen = await term.showing('[exited 1]');
    expect(screen, screen.join('\n')).toContain('ferry: left before the server confirmed 1 message; they may not have arrived, so send them again if they matter.');
  });

  it('Ctrl-C clears a typed line; on an empty line it leaves (exit status 130)', async () => {
    const { port } = await serve(path.join(scratch(), 'upload'));
    const term = new Terminal(['connect', '--port', String(port)], scratch());
    await term.until((l) => l[l.length - 1] === 'ferry>', 'the prompt');
    term.type('never mind');
    await term.until((l) => l[l.length - 1] === 'ferry> never mind', 'the typed text');
    term.press('C-c');
    await term.until((l) => l[l.length - 1] === 'ferry>', 'an empty prompt');
    term.press('C-c');
    await term.showing('[exited 130]');
  });
});

describe('ferry connect with piped input', () => {
  it('/send reads its arguments like a shell; an unknown option is an error, not part of the path; /status prints JSON with --json', async () => {
    const uploadDir = path.join(scratch(), 'upload');
    const { port } = await serve(uploadDir);
    const dir = scratch();
    fs.writeFileSync(path.join(dir, 'my file.txt'), 'spaces in the name\n');
    const input = ['/send "my file.txt" --limit-rate 5M', "/send 'my file.txt'", '/status', 'exit', ''].join('\n');
    const result = await runCli(['connect', '--port', String(port), '--json'], { cwd: dir, input });

    expect(result.code).toBe(1);
    expect(result.stderr).toBe('ferry: /send has no option --limit-rate; start `ferry connect --limit-rate RATE` to limit every upload.\n');
    const objects = result.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(objects).toHaveLength(2);
    const status = objects.find((o) => 'status' in o)!.status as Record<string, unknown>;
    expect(status).toMatchObject({ server: `127.0.0.1:${port}`, waiting: expect.any(Number) });
    expect(['connecting', 'connected']).toContain(status.state);
    expect(objects.find((o) => 'savedAs' in o)).toMatchObject({ file: 'my file.txt', savedAs: 'my file.txt', sha256: sha256('spaces in the name\n') });
    expect(fs.readdirSync(uploadDir).filter((n) => n !== '.ferry')).toEqual(['my file.txt']);
  });

  it('/status prints a line for people without --json', async () => {
    const { port } = await serve(path.join(scratch(), 'upload'));
    const result = await runCli(['connect', '--port', String(port)], { input: 'hi\n/status\n' });
    expect(result.code).toBe(0);
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines).toContain('hi');
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^state: (connecting|connected); server: 127\\.0\\.0\\.1:${port}.*; waiting for confirmation: \\d+$`)));
  });

  it('the end of input while no server listens ends the session after 10 s and says what was not confirmed', async () => {
    const port = await freePort();
    const result = await runCli(['connect', '--port', String(port), '--json'], { input: 'one\ntwo\n' });
    expect(result.code).toBe(1);
    expect(result.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)).toEqual([
      { message: 'one', error: expect.objectContaining({ code: 'E_CLOSED' }) },
      { message: 'two', error: expect.objectContaining({ code: 'E_CLOSED' }) },
    ]);
    expect(result.stderr.trimEnd().split('\n')).toEqual([
      `ferry: nothing listening on 127.0.0.1:${port}, retrying (Ctrl-C to stop)`,
      'ferry: left before the server confirmed 2 messages; they may not have arrived, so send them again if they matter.',
    ]);
  });
});
