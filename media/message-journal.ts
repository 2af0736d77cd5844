import fs from 'node:fs';
import path from 'node:path';

/** Numbers the compactions of every journal in this process (for their temporary files' names). */
let compactions = 0;

interface ClientRecord {
  /** The highest message id handled for this client; its ids only ever grow. */
  high: number;
  seenAt: number;
}

export interface MessageJournalOptions {
  /** The journal file; without one the record lasts as long as the process. */
  file?: string;
  /** Forget clients not heard from for this long (they can no longer resend). Default 24 h. */
  retentionMs?: number;
  /** Rewrite the file compactly once it has this many lines. Default 10,000. */
  compactAfter?: number;
}

/**
 * Which messages the server has already handled, per client, so a message resent after a
 * reconnect is acknowledged again but not handled twice. A client numbers its messages in the
 * order it sends them and resends in that order, so the highest id handled is the whole record.
 * The session records a message and flushes before it does anything else with it (emits it,
 * acknowledges it): a server killed with SIGKILL still knows it after a restart, since the kernel has
 * the write. A batch of messages from one read is recorded first and flushed once, as one line per
 * client (its highest id), so 64 messages cost one short write, not 64 lines. The file is rewritten,
 * one line per client still within the retention, whenever it grows long.
 */
export class MessageJournal {
  readonly #file: string | undefined;
  readonly #retentionMs: number;
  readonly #compactAfter: number;
  readonly #clients = new Map<string, ClientRecord>();
  #fd: number | undefined;
  #lines = 0;
  /** Clients with records not yet written: the highest id is the whole record, so one line each. */
  readonly #pending = new Set<string>();

  constructor(options: MessageJournalOptions = {}) {
    this.#file = options.file;
    this.#retentionMs = options.retentionMs ?? 24 * 3600_000;
    this.#compactAfter = options.compactAfter ?? 10_000;
  }

  /** Loads the journal (creating its folder) and opens it for appending. */
  open(): void {
    if (!this.#file || this.#fd !== undefined) return;
    fs.mkdirSync(path.dirname(this.#file), { recursive: true });
    let text = '';
    try {
      text = fs.readFileSync(this.#file, 'utf8');
    } catch {
      // No journal yet.
    }
    for (const line of text.split('\n')) {
      const [clientId, id, at] = line.split(' ');
      const high = Number(id);
      const seenAt = Number(at);
      if (!clientId || !Number.isSafeInteger(high) || !Number.isFinite(seenAt)) continue;
      const known = this.#clients.get(clientId);
      if (!known || known.high < high) this.#clients.set(clientId, { high, seenAt });
      this.#lines++;
    }
    this.#compact();
  }

  /** True when this client's message was handled already. */
  seen(clientId: string, id: number): boolean {
    const known = this.#clients.get(clientId);
    return known !== undefined && id <= known.high;
  }

  /** Records a handled message; `flush()` must follow before it is emitted or acknowledged. */
  record(clientId: string, id: number): void {
    const known = this.#clients.get(clientId);
    if (!known) this.#clients.set(clientId, { high: id, seenAt: Date.now() });
    else if (known.high < id) {
      known.high = id;
      known.seenAt = Date.now();
    }
    if (this.#fd !== undefined) this.#pending.add(clientId);
  }

  /** Writes the records made since the last flush, synchronously. */
  flush(): void {
    if (this.#pending.size === 0 || this.#fd === undefined) return;
    let lines = '';
    for (const clientId of this.#pending) {
      const record = this.#clients.get(clientId);
      if (record) lines += `${clientId} ${record.high} ${record.seenAt}\n`;
    }
    const count = this.#pending.size;
    this.#pending.clear();
    try {
      // Synchronous on purpose: a record the kernel has survives a SIGKILL of the server, and what
      // follows (the emit, the acknowledgement) happens only after this returns.
      fs.writeSync(this.#fd, lines);
      this.#lines += count;
      if (this.#lines >= this.#compactAfter) this.#compact();
    } catch (err) {
      // A full disk must not end the session (or the server); the record still holds in memory,
      // so only a restart in this state could lose it.
      this.lastError = err as Error;
    }
  }

  /** The last error writing the journal, if any (for the logs). */
  lastError: Error | undefined;

  close(): void {
    this.flush();
    if (this.#fd !== undefined) fs.closeSync(this.#fd);
    this.#fd = undefined;
  }

  /** Rewrites the journal with one line per client still within the retention. */
  #compact(): void {
    if (!this.#file) return;
    // The rewrite holds every record in memory, written or not.
    this.#pending.clear();
    const now = Date.now();
    for (const [clientId, record] of this.#clients) if (now - record.seenAt > this.#retentionMs) this.#clients.delete(clientId);
    const lines = [...this.#clients].map(([clientId, r]) => `${clientId} ${r.high} ${r.seenAt}\n`).join('');
    // A name of its own: two servers started at once on one upload folder both compact at start-up,
    // and with a shared name one's rename finds the file already gone.
    const temp = `${this.#file}.${process.pid}-${++compactions}.tmp`;
    try {
      fs.writeFileSync(temp, lines);
      if (this.#fd !== undefined) fs.closeSync(this.#fd);
      // Closed: a failed rename must not leave a number that a later open() may hand to another file.
      this.#fd = undefined;
      fs.renameSync(temp, this.#file);
    } catch (err) {
      fs.rmSync(temp, { force: true });
      // The old journal stays: everything held in memory goes to it with the next flush.
      for (const clientId of this.#clients.keys()) this.#pending.add(clientId);
      throw err;
    } finally {
      this.#fd ??= fs.openSync(this.#file, 'a');
    }
    this.#lines = this.#clients.size;
  }
}
