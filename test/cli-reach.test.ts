/**
 * What a user sees when the server is not what the client expects, or not there at all: a TLS server
 * reached without --tls, web servers, nothing listening (one notice, then a line when it connects),
 * and the give-up times of the one-shot commands. Real `node dist/apps/cli.js` processes and real
 * servers over loopback; every wait is on a process exit or an output line.
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { scratchDirs } from './helpers/files.js';
import { buildCliOnce, killAll, runCli, startCli, startServe, type Proc } from './helpers/processes.js';
import { freePort } from './helpers/ports.js';

const scratch = scratchDirs('ferry-cli-reach-');
const closers: (() => Promise<unknown>)[] = [];

beforeAll(buildCliOnce, 120_000);

afterEach(async () => {
  for (const close of closers.splice(0)) await close();
  await killAll();
});

afterAll(() => scratch.removeAll());

async function serve(extra: string[] = []): Promise<{ proc: Proc; port: number }> {
  return startServe(['--upload-dir', path.join(scratch(), 'upload'), ...(extra.includes('--port') ? [] : ['--port', '0']), ...extra]);
}

async function listen(server: net.Server): Promise<number> {
  const sockets = new Set<net.Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  closers.push(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise((resolve) => server.close(resolve));
  });
  return (server.address() as net.AddressInfo).port;
}

function certificate(): { cert: string; key: string } {
  const dir = scratch();
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert], {
      stdio: 'ignore',
    });
  } catch {
    throw new Error('These tests need the openssl command line tool to make a certificate; install it (apt-get install openssl, brew install openssl).');
  }
  return { cert, key };
}

/** Runs the CLI and measures how long it took, from start to exit. */
async function timed(args: string[]): Promise<Awaited<ReturnType<typeof runCli>> & { ms: number }> {
  const started = performance.now();
  const result = await runCli(args);
  return { ...result, ms: performance.now() - started };
}

function errorOf(stdout: string): { code: string; message: string } {
  return (JSON.parse(stdout.trimEnd().split('\n')[0]!) as { error: { code: string; message: string } }).error;
}

describe('a server that will never work ends the command at once, with one sentence printed once', () => {
  it('a plain client against a TLS ferry server: E_TLS saying to add --tls, no retrying', async () => {
    const { cert, key } = certificate();
    const { port } = await serve(['--tls-cert', cert, '--tls-key', key]);
    const run = await timed(['msg', 'one', 'two', 'three', '--port', String(port), '--json']);
    expect(run.code).toBe(1);
    const objects = run.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { message: string; error: { code: string } });
    expect(objects.map((o) => [o.message, o.error.code])).toEqual([
      ['one', 'E_TLS'],
      ['two', 'E_TLS'],
      ['three', 'E_TLS'],
    ]);
    // Three messages failed for one reason: the reason is told once, and nothing about retrying.
    expect(run.stderr).toBe(`ferry: The server at 127.0.0.1:${port} speaks TLS; add --tls (or --tls-ca with its certificate authority).\n`);
    // Retrying would have taken the 10 s of --retry-for at least.
    expect(run.ms).toBeLessThan(5_000);
  });

  it('a web server that waits for a whole request line (like python -m http.server) is recognised at once', async () => {
    // Reads up to the end of a line, then answers as an HTTP server does to a request it cannot parse.
    const port = await listen(
      net.createServer((socket) => {
        let seen = '';
        socket.on('data', (chunk) => {
          seen += chunk.toString('latin1');
          if (seen.includes('\n')) socket.end('HTTP/1.0 400 Bad request syntax\r\nContent-Type: text/html\r\n\r\n<html>bad</html>');
        });
        socket.on('error', () => undefined);
      }),
    );
    const run = await timed(['msg', 'hi', '--port', String(port), '--json']);
    expect(run.code).toBe(1);
    const error = errorOf(run.stdout);
    expect(error.code).toBe('E_BAD_PREAMBLE');
    expect(error.message).toBe(`The server at 127.0.0.1:${port} does not speak the ferry protocol: it is a web server (it answered "HTTP/1.0 400 Bad request syntax"); check --host and --port.`);
    expect(run.stderr).toBe(`ferry: ${error.message}\n`);
    expect(run.ms).toBeLessThan(5_000);
  });

  it('a Node HTTP server, and an SSH-like server that greets first', async () => {
    const web = http.createServer((_req, res) => res.end('hello'));
    const webPort = await listen(web);
    const ssh = await listen(
      net.createServer((socket) => {
        socket.on('error', () => undefined);
        socket.write('SSH-2.0-OpenSSH_9.6\r\n');
      }),
    );
    const file = path.join(scratch(), 'page.txt');
    fs.writeFileSync(file, 'not for a web server\n');
    const fromWeb = await timed(['send', file, '--port', String(webPort)]);
    expect(fromWeb.code).toBe(1);
    expect(fromWeb.stderr.trimEnd().split('\n')).toEqual([expect.stringMatching(/^ferry: .*page\.txt: The server at 127\.0\.0\.1:\d+ does not speak the ferry protocol: it is a web server .*\.$/)]);
    const fromSsh = await timed(['msg', 'hi', '--port', String(ssh)]);
    expect(fromSsh.code).toBe(1);
    expect(fromSsh.stderr).toBe(`ferry: The server at 127.0.0.1:${ssh} does not speak the ferry protocol (it answered "SSH-2.0-OpenSSH_9.6"); check --host and --port, or add --legacy if it is the original tool.\n`);
    expect(Math.max(fromWeb.ms, fromSsh.ms)).toBeLessThan(5_000);
  });

  it('a TLS client against a plain ferry server: E_TLS once', async () => {
    const { cert } = certificate();
    const { port } = await serve();
    const run = await timed(['msg', 'a', 'b', '--port', String(port), '--tls-ca', cert]);
    expect(run.code).toBe(1);
    expect(run.stderr.trimEnd().split('\n')).toEqual([expect.stringMatching(/^ferry: .*may not use TLS.*\.$/)]);
    expect(run.ms).toBeLessThan(5_000);
  });
});

describe('nothing listening', () => {
  it('says so at once, once, while it keeps trying; then gives up after --retry-for', async () => {
    const port = await freePort();
    const msg = startCli(['msg', 'x', '--port', String(port), '--retry-for', '2s', '--retry-initial', '50ms', '--retry-max', '100ms']);
    const notice = await msg.waitForLine((l) => l.includes('nothing listening'), { stream: 'stderr' });
    expect(notice).toBe(`ferry: nothing listening on 127.0.0.1:${port}, retrying (Ctrl-C to stop)`);
    // Told while it is still trying, not when it gives up.
    expect(msg.hasExited).toBe(false);
    const exit = await msg.exited;
    expect(exit.code).toBe(1);
    const lines = msg.stderr.trimEnd().split('\n');
    // Some twenty attempts, one notice.
    expect(lines).toEqual([notice, expect.stringMatching(new RegExp(`^ferry: The server could not be reached for 2 s: Nothing is listening at 127\\.0\\.0\\.1:${port};.*\\.$`))]);
  });

  it('says when it gets through after all, and then does what it was asked', async () => {
    const port = await freePort();
    const msg = startCli(['msg', 'late hello', '--port', String(port), '--retry-initial', '50ms', '--retry-max', '200ms']);
    await msg.waitForLine((l) => l.includes('nothing listening'), { stream: 'stderr' });
    await serve(['--port', String(port)]);
    const exit = await msg.exited;
    expect(exit.code).toBe(0);
    expect(msg.stdout).toBe('late hello\n');
    expect(msg.stderr).toBe(`ferry: nothing listening on 127.0.0.1:${port}, retrying (Ctrl-C to stop)\nferry: connected to 127.0.0.1:${port}\n`);
  });

  it('msg gives up after 10 s by default', async () => {
    const port = await freePort();
    const run = await timed(['msg', 'x', '--port', String(port)]);
    expect(run.code).toBe(1);
    expect(run.stderr.trimEnd().split('\n').pop()).toMatch(/^ferry: The server could not be reached for 10 s: /);
    expect(run.ms).toBeGreaterThanOrEqual(10_000);
  }, 40_000);

  it('the defaults are in --help: 10 s for msg and open, 30 s for send, forever for connect', async () => {
    const give = async (command: string) => /--retry-for <duration>[^\n]*\n?[^\n]*\(default: ([^)]+)\)/.exec((await runCli([command, '--help'])).stdout)?.[1];
    expect(await give('msg')).toBe('10s');
    expect(await give('open')).toBe('10s');
    expect(await give('send')).toBe('30s');
    expect(await give('connect')).toBe('forever');
  });
});
