/**
 * The CLI server's log lines are written once per turn of the event loop (apps/logger.ts TurnLines),
 * and a session flushes them before it acknowledges a message, so a message's line never trails
 * its acknowledgement.
 */
import { spawnSync } from 'node:child_process';
import { Writable } from 'node:stream';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { createActor } from 'xstate';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger, TurnLines } from '../apps/logger.js';
import { nativeOnly } from '../machines/actors/session-connection.js';
import { sessionLogic } from '../machines/session.machine.js';
import { defaultMediaApps } from '../media/launcher.js';
import { MessageJournal } from '../media/message-journal.js';
import { UploadStore } from '../media/upload-store.js';
import { DEFAULT_LIMITS } from '../transport/frames.js';
import { memoryPair } from '../transport/memory-transport.js';
import { encode, preamble } from '../transport/native-codec.js';
import { PeerClient } from './helpers/session-harness.js';
import { tempDir } from './helpers/async.js';

const root = path.resolve(import.meta.dirname, '..');
const opened: number[] = [];
afterEach(() => {
  for (const fd of opened.splice(0)) fs.closeSync(fd);
});

function logFile(): { file: string; fd: number } {
  const file = path.join(tempDir(), 'log.jsonl');
  const fd = fs.openSync(file, 'a');
  opened.push(fd);
  return { file, fd };
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A pipe's two descriptors, [read, write]: node has no pipe(2), so a FIFO opened at both ends. */
function pipeFds(): [number, number] {
  const fifo = path.join(tempDir(), 'fifo');
  spawnSync('mkfifo', [fifo]);
  const read = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const write = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  opened.push(write);
  return [read, write];
}

describe('TurnLines', () => {
  it('holds the lines of a turn and writes them, in order, once the turn is over', async () => {
    const { file, fd } = logFile();
    const lines = new TurnLines(fd);
    lines.write('{"n":1}\n');
    lines.write('{"n":2}\n');
    expect(fs.readFileSync(file, 'utf8')).toBe('');
    await nextTurn();
    expect(fs.readFileSync(file, 'utf8')).toBe('{"n":1}\n{"n":2}\n');
    lines.write('{"n":3}\n');
    await nextTurn();
    expect(fs.readFileSync(file, 'utf8')).toBe('{"n":1}\n{"n":2}\n{"n":3}\n');
  });

  it('writes what it holds at once when flushed, and calls back', () => {
    const { file, fd } = logFile();
    const lines = new TurnLines(fd);
    lines.write('{"n":1}\n');
    let called = false;
    lines.flush(() => (called = true));
    expect(called).toBe(true);
    expect(fs.readFileSync(file, 'utf8')).toBe('{"n":1}\n');
  });

  it('is what pino.flush() reaches, for a child logger too', () => {
    const { file, fd } = logFile();
    const log = pino({ base: null, timestamp: false }, new TurnLines(fd)).child({ session: 's-1' });
    log.info({ event: 'message', id: 1 }, 'message');
    expect(fs.readFileSync(file, 'utf8')).toBe('');
    log.flush();
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual({ level: 30, session: 's-1', event: 'message', id: 1, msg: 'message' });
  });

  it('writes the lines still held when the process exits, by process.exit() or an uncaught exception', () => {
    // Runs the built module (npm test builds first).
    const module = JSON.stringify(pathToFileURL(path.join(root, 'dist/apps/logger.js')).href);
    const exits = `const { TurnLines } = await import(${module}); const l = new TurnLines(1); l.write('one\\n'); l.write('two\\n'); process.exit(3);`;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', exits], { encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(3);
    expect(run.stdout).toBe('one\ntwo\n');
    const throws = `const { TurnLines } = await import(${module}); const l = new TurnLines(1); l.write('before the crash\\n'); setTimeout(() => { throw new Error('boom'); });`;
    const crashed = spawnSync(process.execPath, ['--input-type=module', '-e', throws], { encoding: 'utf8' });
    expect(crashed.status).toBe(1);
    expect(crashed.stderr).toContain('boom');
    expect(crashed.stdout).toBe('before the crash\n');
  });

  it('adds one exit handler however many there are', () => {
    const before = process.listenerCount('exit');
    for (let i = 0; i < 5; i++) new TurnLines(logFile().fd).write('x\n');
    expect(process.listenerCount('exit') - before).toBeLessThanOrEqual(1);
  });

  it('stops writing once the reader is gone, and says nothing of it', () => {
    const [readEnd, writeEnd] = pipeFds();
    fs.closeSync(readEnd);
    const lines = new TurnLines(writeEnd);
    let failure: Error | undefined;
    lines.write('lost\n');
    lines.flush((error) => (failure = error));
    expect((failure as NodeJS.ErrnoException | undefined)?.code).toBe('EPIPE');
    // Closed for good: nothing is held, nothing scheduled.
    lines.write('also lost\n');
    let second: Error | undefined = new Error('not called');
    lines.flush((error) => (second = error));
    expect(second).toBeUndefined();
  });
});

describe('a session with a logger that holds its lines', () => {
  it("writes a message's log line before the message's acknowledgement leaves", async () => {
    // What happened, in order: lines as the logger writes them out, and the session's socket writes.
    const order: string[] = [];
    let held: string[] = [];
    const stream = {
      write: (line: string) => void held.push(`line ${(JSON.parse(line) as { event?: string }).event}`),
      flush: (done?: () => void) => {
        order.push(...held);
        held = [];
        done?.();
      },
    };
    const log = pino({ level: 'info' }, stream);
    const [serverEnd, clientEnd] = memoryPair();
    const write = serverEnd.write.bind(serverEnd);
    serverEnd.write = (chunk, done) => {
      order.push('socket write');
      return write(chunk, done);
    };
    const client = new PeerClient(clientEnd);
    const logic = sessionLogic({
      store: new UploadStore({ root: tempDir() }),
      journal: new MessageJournal(),
      codecs: nativeOnly,
      log,
      linkOf: () => ({ transport: serverEnd, log }),
      now: () => Date.now(),
    });
    const actor = createActor(logic, {
      input: {
        id: 'session-1',
        remote: serverEnd.remote,
        limits: DEFAULT_LIMITS,
        timeouts: { handshakeMs: 10_000 },
        authRequired: false,
        authFailureDelayMs: 1_000,
        agent: 'test',
        media: { enabled: false, apps: defaultMediaApps(), perMinute: 10 },
      },
    }).start();
    try {
      client.write(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'test', clientId: 'c-1' })]));
      await client.expect('welcome');
      order.length = 0;
      held = [];
      client.write(encode.message(1, 'hi'));
      expect(await client.expect('message-ack')).toMatchObject({ id: 1, text: 'hi' });
      expect(order).toEqual(['line message', 'socket write']);
    } finally {
      actor.stop();
    }
  });
});

describe('the server logger', () => {
  it.each(['info', 'debug'])('at %s, blanks a token, a token one level down and a MAC should one ever be logged', (level) => {
    let text = '';
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        text += chunk.toString('utf8');
        done();
      },
    });
    const log = createLogger(level, sink, 'json');
    log.info({ event: 'x', token: 's3cret-1', settings: { token: 's3cret-2' }, err: Object.assign(new Error('e'), { token: 's3cret-3' }), mac: 's3cret-4' }, 'line');
    log.flush();
    expect(text).not.toMatch(/s3cret/);
    expect(JSON.parse(text)).toMatchObject({ token: '[redacted]', settings: { token: '[redacted]' }, mac: '[redacted]' });
  });
});
