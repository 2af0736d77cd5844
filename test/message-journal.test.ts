import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MessageJournal } from '../media/message-journal.js';
import { encode, preamble } from '../transport/native-codec.js';
import { removeTempDirs, tempDir } from './helpers/async.js';
import { SessionHarness } from './helpers/session-harness.js';

afterEach(() => removeTempDirs());

const journalFile = () => path.join(tempDir('ferry-journal-'), '.ferry', 'messages.journal');
const linesOf = (file: string) => fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
/** The highest id the file holds for a client: a record of id n covers every id up to n. */
const highOnDisk = (file: string, clientId: string) => Math.max(0, ...linesOf(file).filter((l) => l.startsWith(`${clientId} `)).map((l) => Number(l.split(' ')[1])));

/** A session with a journal on disk, after the hello of a client called `journal-client`. */
async function withJournalledSession(body: (h: SessionHarness, file: string) => Promise<void>): Promise<void> {
  const file = journalFile();
  const journal = new MessageJournal({ file });
  journal.open();
  const h = new SessionHarness({ journal });
  try {
    h.client.write(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'test', clientId: 'journal-client' })]));
    await h.client.expect('welcome');
    await body(h, file);
  } finally {
    h.dispose();
    journal.close();
  }
}

describe('message journal', () => {
  it('writes records when flushed, one line per client with its highest id, and a journal opened later on the same file knows them', () => {
    const file = journalFile();
    const journal = new MessageJournal({ file });
    journal.open();
    journal.record('client-a', 1);
    journal.record('client-a', 2);
    journal.record('client-b', 7);
    // Known at once in memory, on disk only after the flush.
    expect(journal.seen('client-a', 2)).toBe(true);
    expect(linesOf(file)).toEqual([]);
    journal.flush();
    expect(linesOf(file).map((l) => l.split(' ').slice(0, 2).join(' '))).toEqual(['client-a 2', 'client-b 7']);
    journal.record('client-a', 3);
    journal.flush();
    expect(linesOf(file).map((l) => l.split(' ').slice(0, 2).join(' '))).toEqual(['client-a 2', 'client-b 7', 'client-a 3']);

    // No close(): as after a SIGKILL, only what was flushed is there.
    const reopened = new MessageJournal({ file });
    reopened.open();
    expect(reopened.seen('client-a', 3)).toBe(true);
    expect(reopened.seen('client-a', 4)).toBe(false);
    expect(reopened.seen('client-b', 7)).toBe(true);
    expect(reopened.seen('client-c', 1)).toBe(false);
    reopened.close();
    journal.close();
  });

  it('rewrites itself to one line per client once it grows past the limit, keeping each client’s highest id', () => {
    const file = journalFile();
    const journal = new MessageJournal({ file, compactAfter: 10 });
    journal.open();
    for (let id = 1; id <= 6; id++) {
      journal.record('client-a', id);
      journal.record('client-b', id * 10);
    }
    journal.flush();
    expect(linesOf(file).map((l) => l.split(' ').slice(0, 2).join(' '))).toEqual(['client-a 6', 'client-b 60']);
    journal.record('client-a', 7);
    journal.close();
    const reopened = new MessageJournal({ file });
    reopened.open();
    expect(reopened.seen('client-a', 7)).toBe(true);
    expect(reopened.seen('client-a', 8)).toBe(false);
    expect(reopened.seen('client-b', 60)).toBe(true);
    reopened.close();
  });

  it('forgets clients not heard from within the retention when it is opened', () => {
    const file = journalFile();
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const longAgo = Date.now() - 48 * 3600_000;
    fs.writeFileSync(file, `old-client 5 ${longAgo}\nfresh-client 3 ${Date.now()}\nnot a record\n`);
    const journal = new MessageJournal({ file, retentionMs: 24 * 3600_000 });
    journal.open();
    expect(journal.seen('old-client', 5)).toBe(false);
    expect(journal.seen('fresh-client', 3)).toBe(true);
    journal.close();
  });

  it('a message is on disk before the session does anything with it, even if its acknowledgement can never be sent', async () => {
    await withJournalledSession(async (h, file) => {
      // What the file holds at the moment each message is emitted (handled).
      const onDiskWhenEmitted = new Map<number, boolean>();
      h.actor.on('messages', (e) => {
        for (const m of e.messages) onDiskWhenEmitted.set(m.id, highOnDisk(file, 'journal-client') >= m.id);
      });
      // One on its own (header and body apart), then three in one read.
      const frame = encode.message(1, 'alone');
      h.client.write(frame.subarray(0, 7));
      h.client.write(frame.subarray(7));
      await h.client.expect('message-ack');
      const batch = h.processed('messages');
      h.client.write(Buffer.concat([2, 3, 4].map((id) => encode.message(id, `text ${id}`))));
      await batch;
      expect([...onDiskWhenEmitted]).toEqual([
        [1, true],
        [2, true],
        [3, true],
        [4, true],
      ]);
    });
  });

  it('a session’s acknowledgements leave only after their records are on disk', async () => {
    await withJournalledSession(async (h, file) => {
      // Three messages in one write: handled as one batch, acknowledged together.
      h.client.write(Buffer.concat([1, 2, 3].map((id) => encode.message(id, `text ${id}`))));
      for (const id of [1, 2, 3]) {
        const ack = await h.client.expect('message-ack');
        expect(ack.id).toBe(id);
        expect(highOnDisk(file, 'journal-client')).toBeGreaterThanOrEqual(id);
      }
    });
  });

  it('can be opened by several processes at once on one file (servers started together on one upload folder)', async () => {
    const file = journalFile();
    const module = path.resolve(import.meta.dirname, '..', 'dist', 'media', 'message-journal.js');
    // Each open rewrites the file through a temporary one; four processes do it 200 times each, racing.
    const script = `const { MessageJournal } = await import(${JSON.stringify(module)}); for (let i = 0; i < 200; i++) { const j = new MessageJournal({ file: ${JSON.stringify(file)} }); j.open(); j.record('c' + process.pid, i + 1); j.close(); }`;
    const runs = Array.from({ length: 4 }, () => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      return new Promise<{ code: number | null; stderr: string }>((resolve) => child.on('close', (code) => resolve({ code, stderr })));
    });
    expect(await Promise.all(runs)).toEqual(Array.from({ length: 4 }, () => ({ code: 0, stderr: '' })));
    expect(fs.readdirSync(path.dirname(file))).toEqual(['messages.journal']);
  });
});
