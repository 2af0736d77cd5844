/**
 * A small record for each file the store has placed: its name, size and SHA-256, and the identity
 * of the file on disk (device, inode, modification time). An offer that carries a SHA-256 can then
 * be answered without storing anything when that name still holds exactly that file. A record is
 * only believed while the file on disk is the one it describes: a file that was changed, replaced
 * or removed since is not trusted, and its record is dropped.
 *
 * The records are kept in memory and in one append-only file, `<root>/.ferry/stored.log`, a JSON
 * line per placed file (a later line for a name replaces an earlier one). Appending a line to an
 * open file costs one write, where a file per record would cost a file creation per upload, which
 * takes about a millisecond on some disks. The log is rewritten compactly when it has grown to
 * twice the records it holds.
 */
import fs from 'node:fs';
import { promisify } from 'node:util';
import type { SavedFile } from './incoming-file.js';
import { noop } from './store-io.js';

interface StoredRecord {
  /** The name the file was stored under, relative to the root. */
  name: string;
  size: number;
  sha256: string;
  dev: string;
  ino: string;
  mtimeNs: string;
}

/** Records kept at most; the ones written longest ago are forgotten first (their files are then sent again). */
const MAX_RECORDS = 100_000;
/** The log is not rewritten before it has this many lines. */
const MIN_COMPACT_LINES = 1_024;

export class StoredRecords {
  readonly #file: string;
  readonly #records = new Map<string, StoredRecord>();
  /** The log, open for appending (a plain descriptor: it is closed by `close()`, never by the garbage collector). */
  #fd: number | undefined;
  #opening: Promise<void> | undefined;
  #lines = 0;
  /** Lines waiting for the next write, and the promise of that write. */
  #pending = '';
  #flush: Promise<void> | undefined;
  /** Writes and rewrites of the log, one after another. */
  #writing: Promise<void> = Promise.resolve();

  constructor(file: string) {
    this.#file = file;
  }

  /** Loads the log and opens it for appending. Safe to call repeatedly; never fails (the records then last as long as the process). */
  init(): Promise<void> {
    this.#opening ??= this.#open();
    return this.#opening;
  }

  async #open(): Promise<void> {
    let text = '';
    try {
      text = await fs.promises.readFile(this.#file, 'utf8');
    } catch {
      // No log yet.
    }
    for (const line of text.split('\n')) {
      const record = parseRecord(line);
      if (!record) continue;
      this.#lines++;
      this.#records.delete(record.name);
      this.#records.set(record.name, record);
    }
    this.#trim();
    try {
      this.#fd = await openForAppend(this.#file);
    } catch {
      // Kept in memory only.
    }
  }

  /**
   * Records a file just placed under `saved.savedAs` at `saved.path`. It counts from the moment this
   * resolves; its line reaches the log a moment later (lines of one tick in one write, which
   * `close()` waits for), so the answer to the upload does not wait for the disk. Never fails:
   * without a record the file is simply sent in full next time.
   */
  async remember(saved: SavedFile): Promise<void> {
    let stat: fs.BigIntStats;
    try {
      stat = await fs.promises.lstat(saved.path, { bigint: true });
    } catch {
      return;
    }
    if (!stat.isFile()) return;
    const record: StoredRecord = {
      name: saved.savedAs,
      size: saved.bytes,
      sha256: saved.sha256,
      dev: String(stat.dev),
      ino: String(stat.ino),
      mtimeNs: String(stat.mtimeNs),
    };
    // Re-inserted, so the map's order stays oldest record first.
    this.#records.delete(record.name);
    this.#records.set(record.name, record);
    this.#trim();
    void this.#append(JSON.stringify(record) + '\n');
  }

  /**
   * The file stored under `name` at `file`, when its record says it has this size and SHA-256 and
   * the file on disk is still the one recorded (a regular file, same device, inode, size and
   * modification time). Undefined otherwise; a record found untrue is dropped.
   */
  async match(name: string, file: string, size: number, sha256: string): Promise<SavedFile | undefined> {
    const record = this.#records.get(name);
    if (!record || record.size !== size || record.sha256 !== sha256) return undefined;
    let stat: fs.BigIntStats | undefined;
    try {
      stat = await fs.promises.lstat(file, { bigint: true });
    } catch {
      stat = undefined;
    }
    if (!stat || !stat.isFile() || stat.size !== BigInt(size) || String(stat.dev) !== record.dev || String(stat.ino) !== record.ino || String(stat.mtimeNs) !== record.mtimeNs) {
      if (this.#records.get(name) === record) this.#records.delete(name);
      return undefined;
    }
    return { savedAs: name, path: file, bytes: size, sha256 };
  }

  /** Resolves once every record made so far is in the log (or could not be written). */
  async flush(): Promise<void> {
    await this.#opening;
    await this.#flush;
    await this.#writing;
  }

  /** Writes what is pending and closes the log. */
  async close(): Promise<void> {
    await this.#opening;
    await this.#flush;
    await this.#writing;
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd !== undefined) await closeFd(fd).catch(noop);
  }

  /** Lines appended in the same tick leave in one write. */
  #append(line: string): Promise<void> {
    this.#pending += line;
    this.#flush ??= new Promise<void>((resolve) => {
      setImmediate(() => {
        const lines = this.#pending;
        this.#pending = '';
        this.#flush = undefined;
        this.#writing = this.#writing.then(() => this.#write(lines)).then(resolve, resolve);
      });
    });
    return this.#flush;
  }

  async #write(lines: string): Promise<void> {
    if (this.#fd === undefined) return;
    try {
      await writeAll(this.#fd, lines);
      for (let i = lines.indexOf('\n'); i !== -1; i = lines.indexOf('\n', i + 1)) this.#lines++;
      if (this.#lines >= Math.max(MIN_COMPACT_LINES, 2 * this.#records.size)) await this.#compact();
    } catch {
      // A full disk costs only the skipping of these files later.
    }
  }

  /** Rewrites the log with one line per record held. */
  async #compact(): Promise<void> {
    const temp = `${this.#file}.tmp`;
    const text = [...this.#records.values()].map((r) => JSON.stringify(r) + '\n').join('');
    await fs.promises.writeFile(temp, text);
    if (this.#fd !== undefined) await closeFd(this.#fd);
    this.#fd = undefined;
    await fs.promises.rename(temp, this.#file);
    this.#fd = await openForAppend(this.#file);
    this.#lines = this.#records.size;
  }

  #trim(): void {
    for (const oldest of this.#records.keys()) {
      if (this.#records.size <= MAX_RECORDS) break;
      this.#records.delete(oldest);
    }
  }
}

const openForAppend = (file: string): Promise<number> => promisify(fs.open)(file, 'a');
const closeFd = promisify(fs.close);

/** Writes all of `text`; a short write (rare for a file, but allowed) is followed by the rest. */
async function writeAll(fd: number, text: string): Promise<void> {
  let rest = Buffer.from(text, 'utf8');
  while (rest.length > 0) {
    const written = await new Promise<number>((resolve, reject) => fs.write(fd, rest, (err, n) => (err ? reject(err) : resolve(n))));
    rest = rest.subarray(written);
  }
}

function parseRecord(line: string): StoredRecord | undefined {
  if (line === '') return undefined;
  try {
    const r = JSON.parse(line) as StoredRecord;
    const ok =
      typeof r.name === 'string' &&
      Number.isSafeInteger(r.size) &&
      typeof r.sha256 === 'string' &&
      /^[0-9a-f]{64}$/.test(r.sha256) &&
      typeof r.dev === 'string' &&
      typeof r.ino === 'string' &&
      typeof r.mtimeNs === 'string';
    return ok ? r : undefined;
  } catch {
    return undefined;
  }
}

