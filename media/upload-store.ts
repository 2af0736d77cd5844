/**
 * Stores files sent by peers. Bytes go to a temp file under `<root>/.ferry/partial/` and only a
 * complete, verified file is given its final name, which is created without ever replacing or
 * following anything that already exists in the root.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Hash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { FerryError } from '../transport/errors.js';
import { numberedName, safeName } from './names.js';
import { storeFailure } from '../transport/store-failure.js';

/** How the store is set up. */
export interface UploadStoreOptions {
  /** Folder the files are saved in; created if missing. */
  root: string;
  /** Largest accepted file in bytes; undefined means only free disk space limits it. */
  maxFileSize?: number;
}

/** What a peer announces before sending a file. */
export interface Offer {
  name: string;
  size: number;
  /**
   * A resumable upload's key (32 hex digits, chosen by the sender). Its partial data is kept when
   * the connection drops, and a later offer with the same key continues where it stopped.
   */
  key?: string;
}

/** A file that was stored. */
export interface SavedFile {
  /** Base name the file was saved under; differs from the offered name when that was taken or unsafe. */
  savedAs: string;
  /** Absolute path of the stored file. */
  path: string;
  bytes: number;
  /** Lower-case hex SHA-256 of the content. */
  sha256: string;
}

/** A file being received. Obtain one from {@link UploadStore.begin}. */
export interface IncomingFile {
  /** The sanitised requested name; the final name may carry a ` (n)` suffix. */
  readonly name: string;
  /** The announced size in bytes. */
  readonly size: number;
  /** Bytes accepted by `write()` so far, counting what an earlier connection left (the resume offset). */
  readonly received: number;
  /** Where this upload continued from: bytes already on disk when it began. */
  readonly resumedFrom: number;
  /**
   * Hashes and writes a chunk. The chunk must not be modified afterwards, since it is queued
   * without copying. Returns false when the caller should wait for `onDrain` before writing more.
   *
   * @throws FerryError `E_UPLOAD_SIZE` when the chunk would exceed the announced size (nothing is
   *   written); `E_NO_SPACE` or `E_STORE_FAILED` once writing to disk has failed; `E_STORE_FAILED`
   *   after `finish()` or `abort()`.
   */
  write(chunk: Buffer): boolean;
  /**
   * Registers a one-shot listener for when writing may continue. Listeners also run when the disk
   * write fails, so nobody waits forever; the next `write()` then throws the failure.
   */
  onDrain(listener: () => void): void;
  /**
   * Completes the upload: checks the size and, when given, the SHA-256 (hex, any case), then gives
   * the file its final name. The temp file is removed whatever the outcome. Calling it again
   * returns the same promise.
   *
   * @throws FerryError `E_UPLOAD_SIZE`, `E_HASH_MISMATCH`, `E_NO_SPACE` or `E_STORE_FAILED`.
   */
  finish(expectedSha256?: string): Promise<SavedFile>;
  /**
   * Stops the upload. A resumable upload's partial data is flushed and kept for a later offer with
   * the same key; any other temp file is deleted. Idempotent and never rejects. Once `finish()` has
   * been called it only waits for that to settle, so a verified file is not thrown away.
   */
  abort(): Promise<void>;
}

/** The state folder inside the root: partial uploads live here, never under a final name. */
const STATE_DIR = '.ferry';
const PARTIAL_DIR = path.join(STATE_DIR, 'partial');
/** How long a free-space reading may be reused (for files that need under 1 % of it). */
const FREE_SPACE_REUSE_MS = 1_000;
/** Holds the one empty file made ahead of need (see `#newPartial`); anything in it is disposable. */
const SPARE_DIR = path.join(STATE_DIR, 'spare');
const WRITE_HIGH_WATER_MARK = 1024 * 1024;
const MAX_NUMBERED_NAMES = 10_000;
// Codes with which link() says the file system has no hard links, rather than that something is wrong.
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'ENOSYS']);

/** Saves incoming files inside `root` and nowhere else. */
export class UploadStore {
  /** Absolute path of the folder files are saved in. */
  readonly root: string;
  readonly #partialDir: string;
  readonly #maxFileSize: number | undefined;
  readonly #active = new Set<Incoming>();
  /** Resumable uploads being received, by key: a newer connection for the same key takes over. */
  readonly #byKey = new Map<string, Incoming>();
  /** Offers for one key are handled one after another, so two can never both claim the partial. */
  readonly #keyTurns = new Map<string, Promise<unknown>>();
  #initialising: Promise<void> | undefined;
  #hardLinks = true;
  readonly #spareDir: string;
  /** An empty file, created ahead of the next upload that needs one. */
  #spare: { path: string; fd: Promise<number> } | undefined;
  #closed = false;
  /** Stems of partial files being made for uploads that have not started yet. */
  readonly #starting = new Set<string>();
  /** The last free-space reading, reused briefly for small files. */
  #freeSpace: { free: number; at: number } | undefined;

  constructor(opts: UploadStoreOptions) {
    if (opts.maxFileSize !== undefined && !(Number.isSafeInteger(opts.maxFileSize) && opts.maxFileSize >= 0)) {
      throw new RangeError(`maxFileSize must be a non-negative integer, got ${opts.maxFileSize}.`);
    }
    this.root = path.resolve(opts.root);
    this.#partialDir = path.join(this.root, PARTIAL_DIR);
    this.#spareDir = path.join(this.root, SPARE_DIR);
    this.#maxFileSize = opts.maxFileSize;
  }

  /** Creates the root and the folder for partial uploads. Safe to call repeatedly. */
  init(): Promise<void> {
    this.#initialising ??= Promise.all([fs.promises.mkdir(this.#partialDir, { recursive: true }), this.#clearSpares()]).then(
      () => fs.promises.mkdir(this.#spareDir, { recursive: true }),
    ).then(
      () => undefined,
      (err: unknown) => {
        // Forget the failure so a later call can retry once the cause is fixed.
        this.#initialising = undefined;
        throw storeError(err, 'creating the upload folder');
      },
    );
    return this.#initialising;
  }

  /**
   * Starts receiving a file after checking its name, its size and the free disk space.
   *
   * @throws FerryError `E_BAD_NAME`, `E_UPLOAD_SIZE` (size not a non-negative integer),
   *   `E_FILE_TOO_LARGE`, `E_NO_SPACE` or `E_STORE_FAILED`.
   */
  async begin(offer: Offer): Promise<IncomingFile> {
    const name = safeName(offer.name);
    const size = offer.size;
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      throw new FerryError(
        'E_UPLOAD_SIZE',
        `The announced size ${String(size)} is not a whole number of bytes; send the file again with its real size.`,
      );
    }
    if (this.#maxFileSize !== undefined && size > this.#maxFileSize) {
      throw new FerryError(
        'E_FILE_TOO_LARGE',
        `The file is ${size} bytes but this server accepts at most ${this.#maxFileSize} bytes; send a smaller file or raise the limit.`,
      );
    }

    await this.init();
    if (offer.key !== undefined) return this.#resume(name, size, offer.key);
    await this.#checkFreeSpace(size);

    let partial: { path: string; fd: number; stem: string };
    try {
      partial = await this.#newPartial();
    } catch (err) {
      // The exclusive open failed, so the path is not ours to delete.
      throw storeError(err, 'creating a temporary file');
    }
    const stream = fs.createWriteStream(partial.path, { fd: partial.fd, highWaterMark: WRITE_HIGH_WATER_MARK });
    const incoming: Incoming = new Incoming(name, size, partial.path, stream, createHash('sha256'), 0, undefined, {
      place: (temp, wanted) => this.#place(temp, wanted),
      completed: () => Promise.resolve(),
      release: () => this.#active.delete(incoming),
    });
    this.#active.add(incoming);
    this.#starting.delete(partial.stem);
    return incoming;
  }

  /**
   * Opens a new, empty partial file for an upload. Creating a file takes about a millisecond on
   * some disks (ext4 on a virtual disk, for one), which a sender of many small files would wait
   * for on every file; so the store keeps one empty file made ahead of need, moves it into the
   * partial folder when an upload starts, and begins the next at once.
   */
  async #newPartial(): Promise<{ path: string; fd: number; stem: string }> {
    const stem = randomBytes(16).toString('hex');
    const target = path.join(this.#partialDir, `${stem}.part`);
    // Marked as in use until the upload is in #active (begin() unmarks it), so the sweeper leaves it.
    this.#starting.add(stem);
    try {
      return { ...(await this.#openPartial(target)), stem };
    } catch (err) {
      this.#starting.delete(stem);
      throw err;
    }
  }

  async #openPartial(target: string): Promise<{ path: string; fd: number }> {
    const spare = this.#spare;
    this.#spare = this.#closed ? undefined : this.#makeSpare();
    if (spare) {
      let fd: number | undefined;
      try {
        fd = await spare.fd;
        await fs.promises.rename(spare.path, target);
        return { path: target, fd };
      } catch {
        // Not made, or taken away meanwhile: make one the slow way.
        if (fd !== undefined) fs.close(fd, noop);
        fs.unlink(spare.path, noop);
      }
    }
    return { path: target, fd: await openExclusive(target) };
  }

  #makeSpare(): { path: string; fd: Promise<number> } {
    const file = path.join(this.#spareDir, randomBytes(16).toString('hex') + '.part');
    const fd = openExclusive(file);
    fd.catch(noop);
    return { path: file, fd };
  }

  /** Removes spares left by an earlier run (a killed server cannot clean up after itself). */
  async #clearSpares(): Promise<void> {
    let entries: string[];
    try {
      entries = await fs.promises.readdir(this.#spareDir);
    } catch {
      return;
    }
    await Promise.all(entries.map((entry) => fs.promises.unlink(path.join(this.#spareDir, entry)).catch(noop)));
  }

  /** Closes and removes the spare file. Uploads still in progress are not affected. */
  async close(): Promise<void> {
    this.#closed = true;
    const spare = this.#spare;
    this.#spare = undefined;
    if (!spare) return;
    await spare.fd.then(
      (fd) => new Promise<void>((resolve) => fs.close(fd, () => resolve())),
      noop,
    );
    await fs.promises.unlink(spare.path).catch(noop);
  }

  /**
   * Begins or continues a resumable upload. The offset is what is really on disk, so it survives a
   * killed server; the running hash is rebuilt by reading that data once. An older connection still
   * attached to the key is cut off first, so bytes from two connections never interleave.
   */
  #resume(name: string, size: number, key: string): Promise<IncomingFile> {
    if (!/^[0-9a-f]{32}$/.test(key)) {
      return Promise.reject(new FerryError('E_BAD_FRAME', 'An upload key must be 32 lower-case hex digits.'));
    }
    const turn = (this.#keyTurns.get(key) ?? Promise.resolve()).then(
      () => this.#resumeInTurn(name, size, key),
      () => this.#resumeInTurn(name, size, key),
    );
    const settled = turn.then(noop, noop);
    this.#keyTurns.set(key, settled);
    void settled.then(() => {
      if (this.#keyTurns.get(key) === settled) this.#keyTurns.delete(key);
    });
    return turn;
  }

  async #resumeInTurn(name: string, size: number, key: string): Promise<IncomingFile> {
    // An earlier connection may still be finishing this upload: let it, before looking for its record.
    const previous = this.#byKey.get(key);
    if (previous) await previous.detach();
    const done = await readDone(path.join(this.#partialDir, `${key}.done`));
    if (done && done.bytes === size) {
      // Stored already, but the sender never heard: answer from the record instead of storing it twice.
      try {
        if ((await fs.promises.stat(done.path)).size === size) return new CompletedIncoming(name, done);
      } catch {
        // The stored file is gone: receive it again.
      }
    }
    const tempPath = path.join(this.#partialDir, `${key}.part`);
    const metaPath = path.join(this.#partialDir, `${key}.json`);
    let offset = 0;
    const hash = createHash('sha256');
    const meta = await readMeta(metaPath);
    if (meta && meta.size === size) {
      try {
        offset = (await fs.promises.stat(tempPath)).size;
      } catch {
        offset = 0;
      }
      if (offset > size) {
        throw new FerryError(
          'E_UPLOAD_SIZE',
          `The partial upload holds ${offset} bytes, more than the announced ${size}; it was left as it is, send the file as a new upload.`,
        );
      }
      if (offset > 0) await hashFilePrefix(tempPath, offset, hash);
    } else if (meta) {
      // The same key with another size is another file: start it over.
      await removeQuietly(tempPath);
    }
    await this.#checkFreeSpace(size - offset);
    if (!meta || meta.size !== size) await writeMeta(metaPath, { key, name, size, created: Date.now() });
    const stream = fs.createWriteStream(tempPath, { flags: offset > 0 ? 'a' : 'w', highWaterMark: WRITE_HIGH_WATER_MARK });
    const incoming: Incoming = new Incoming(name, size, tempPath, stream, hash, offset, metaPath, {
      place: (temp, wanted) => this.#place(temp, wanted),
      completed: (saved) => writeDone(path.join(this.#partialDir, `${key}.done`), saved),
      release: () => {
        this.#active.delete(incoming);
        if (this.#byKey.get(key) === incoming) this.#byKey.delete(key);
      },
    });
    try {
      await incoming.opened();
    } catch (err) {
      throw storeError(err, 'opening the partial upload');
    }
    this.#active.add(incoming);
    this.#byKey.set(key, incoming);
    return incoming;
  }

  /**
   * Deletes partial uploads untouched for longer than `maxAgeMs` (and anything in the partial folder
   * that is not an upload in progress). Returns how many uploads were removed.
   */
  async expirePartials(maxAgeMs: number, now = Date.now()): Promise<number> {
    await this.init();
    // An upload's files (data, record, completion) age together, by the newest of them.
    const groups = new Map<string, { files: string[]; newest: number }>();
    for (const entry of await fs.promises.readdir(this.#partialDir)) {
      const stem = entry.replace(/\.(part|json|done)$/, '');
      if (this.#inUse(stem)) continue;
      try {
        const stat = await fs.promises.stat(path.join(this.#partialDir, entry));
        const group = groups.get(stem) ?? { files: [], newest: 0 };
        group.files.push(entry);
        group.newest = Math.max(group.newest, stat.mtimeMs);
        groups.set(stem, group);
      } catch {
        // Gone meanwhile.
      }
    }
    let removed = 0;
    for (const [stem, { files, newest }] of groups) {
      // Asked again here: an upload may have begun while the folder was being read (a spare file
      // moved into place keeps the time it was made, which can look old).
      if (now - newest < maxAgeMs || this.#inUse(stem)) continue;
      for (const entry of files) await fs.promises.rm(path.join(this.#partialDir, entry), { force: true }).catch(noop);
      removed++;
    }
    return removed;
  }

  /** True while an upload uses the partial files of this stem, or is about to. */
  #inUse(stem: string): boolean {
    if (this.#starting.has(stem) || this.#keyTurns.has(stem)) return true;
    for (const incoming of this.#active) if (path.basename(incoming.tempPath, '.part') === stem) return true;
    return false;
  }

  /**
   * Gives the temp file its final name, numbering the name while it is taken. Creating the name
   * with link() or an exclusive copy fails if anything exists there, including a symlink, so
   * nothing is overwritten or followed, and concurrent uploads cannot collide.
   */
  /**
   * The path of a file already stored under exactly this name, for opening it again. Only plain
   * base names of regular files directly in the root qualify: no paths, no symlinks, nothing the
   * sanitiser would have changed, nothing in the state folder.
   */
  async existing(name: string): Promise<string> {
    let safe: string;
    try {
      safe = safeName(name);
    } catch {
      throw new FerryError('E_NOT_FOUND', `There is no file called "${name.slice(0, 80)}" in the upload folder; use the name the server stored it under.`);
    }
    if (safe !== name || name === STATE_DIR) {
      throw new FerryError('E_NOT_FOUND', `There is no file called "${name.slice(0, 80)}" in the upload folder; use the name the server stored it under.`);
    }
    const full = path.join(this.root, name);
    let stat: fs.Stats;
    try {
      stat = await fs.promises.lstat(full);
    } catch {
      throw new FerryError('E_NOT_FOUND', `There is no file called "${name}" in the upload folder; check the name the server reported.`);
    }
    if (!stat.isFile() || path.dirname(full) !== this.root) {
      throw new FerryError('E_NOT_FOUND', `"${name}" in the upload folder is not a regular file, so it is not opened.`);
    }
    return full;
  }

  async #place(tempPath: string, name: string): Promise<{ savedAs: string; path: string }> {
    for (let n = 0; n <= MAX_NUMBERED_NAMES; n++) {
      const candidate = n === 0 ? name : numberedName(name, n);
      const finalPath = path.join(this.root, candidate);
      if (path.dirname(finalPath) !== this.root || path.basename(finalPath) !== candidate) {
        throw new FerryError(
          'E_STORE_FAILED',
          `The name ${JSON.stringify(candidate)} would leave the upload folder, so the file was not stored; rename it and send it again.`,
        );
      }
      if (await this.#claim(tempPath, finalPath)) {
        return { savedAs: candidate, path: finalPath };
      }
    }
    throw new FerryError(
      'E_STORE_FAILED',
      `More than ${MAX_NUMBERED_NAMES} files named ${JSON.stringify(name)} already exist in the upload folder; rename the file or clean up the folder and send it again.`,
    );
  }

  /** Returns false when the name is taken. */
  async #claim(tempPath: string, finalPath: string): Promise<boolean> {
    if (this.#hardLinks) {
      try {
        await fs.promises.link(tempPath, finalPath);
        return true;
      } catch (err) {
        const code = errorCode(err);
        if (code === 'EEXIST') return false;
        if (code === undefined || !NO_HARD_LINKS.has(code)) throw storeError(err, 'naming the received file');
        this.#hardLinks = false;
      }
    }
    // Without hard links the name shows a growing file while the copy runs; a failed copy
    // is removed by copyFile itself.
    try {
      await fs.promises.copyFile(tempPath, finalPath, fs.constants.COPYFILE_EXCL);
      return true;
    } catch (err) {
      if (errorCode(err) === 'EEXIST') return false;
      throw storeError(err, 'copying the received file into place');
    }
  }

  async #checkFreeSpace(size: number): Promise<void> {
    let free: number;
    const recent = this.#freeSpace;
    if (recent && performance.now() - recent.at < FREE_SPACE_REUSE_MS && size < recent.free / 100) {
      // A reading a moment old will do for a file that needs a sliver of it: many small files in a
      // row are not slowed by one statfs each. (Should the disk fill up meanwhile, the write fails
      // with E_NO_SPACE and the partial is removed, as it would be anyway.)
      free = recent.free;
    } else {
      try {
        const stats = await fs.promises.statfs(this.root);
        free = stats.bavail * stats.bsize;
      } catch (err) {
        throw storeError(err, 'checking the free disk space');
      }
      this.#freeSpace = { free, at: performance.now() };
    }
    // Uploads in progress will still need the rest of their announced size.
    let reserved = 0;
    for (const incoming of this.#active) reserved += incoming.size - incoming.received;
    const available = Math.max(0, free - reserved);
    if (size > available) {
      throw new FerryError(
        'E_NO_SPACE',
        `The file is ${size} bytes but only ${available} bytes of disk space are free for uploads; free some space and send the file again.`,
      );
    }
  }
}

type State = 'open' | 'finishing' | 'aborted';

interface StoreHooks {
  place(tempPath: string, name: string): Promise<{ savedAs: string; path: string }>;
  /** A resumable upload was stored: remember it, in case the sender never hears and offers it again. */
  completed(saved: SavedFile): Promise<void>;
  /** The upload no longer needs disk space reserved. */
  release(): void;
}

class Incoming implements IncomingFile {
  readonly name: string;
  readonly size: number;
  readonly resumedFrom: number;
  readonly tempPath: string;
  #received: number;
  readonly #store: StoreHooks;
  readonly #tempPath: string;
  readonly #stream: fs.WriteStream;
  readonly #hash: Hash;
  /** Set for a resumable upload: its partial survives an abort. */
  readonly #metaPath: string | undefined;
  #state: State = 'open';
  #keep = false;
  #failure: FerryError | undefined;
  #drainListeners: (() => void)[] = [];
  #finishing: Promise<SavedFile> | undefined;
  #aborting: Promise<void> | undefined;

  constructor(name: string, size: number, tempPath: string, stream: fs.WriteStream, hash: Hash, offset: number, metaPath: string | undefined, store: StoreHooks) {
    this.#store = store;
    this.name = name;
    this.size = size;
    this.#tempPath = tempPath;
    this.tempPath = tempPath;
    this.#stream = stream;
    this.#hash = hash;
    this.#received = offset;
    this.resumedFrom = offset;
    this.#metaPath = metaPath;
    // A listener must be attached for the whole life of the stream: an unhandled
    // 'error' event would take the process down.
    stream.on('error', (err) => {
      this.#failure ??= storeError(err, 'writing the received file');
      this.#runDrainListeners();
    });
    stream.on('drain', () => this.#runDrainListeners());
  }

  get received(): number {
    return this.#received;
  }

  opened(): Promise<void> {
    // A stream made on a file that is open already has nothing to wait for.
    if (!this.#stream.pending) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onReady = (): void => {
        this.#stream.off('error', onError);
        resolve();
      };
      const onError = (err: Error): void => {
        this.#stream.off('ready', onReady);
        reject(err);
      };
      this.#stream.once('ready', onReady);
      this.#stream.once('error', onError);
    });
  }

  write(chunk: Buffer): boolean {
    if (this.#state !== 'open') {
      throw new FerryError(
        'E_STORE_FAILED',
        `The upload of ${JSON.stringify(this.name)} is already finished or aborted, so no more data can be written; start a new upload.`,
      );
    }
    if (this.#failure) throw this.#failure;
    if (this.#received + chunk.length > this.size) {
      throw new FerryError(
        'E_UPLOAD_SIZE',
        `The sender sent more than the announced ${this.size} bytes; send the file again with its real size.`,
      );
    }
    this.#hash.update(chunk);
    this.#received += chunk.length;
    return this.#stream.write(chunk);
  }

  onDrain(listener: () => void): void {
    if (this.#state === 'aborted') return;
    if (this.#failure || !this.#stream.writableNeedDrain) {
      // Keep the callback asynchronous in every case, so callers see one behaviour.
      process.nextTick(listener);
      return;
    }
    this.#drainListeners.push(listener);
  }

  finish(expectedSha256?: string): Promise<SavedFile> {
    if (this.#state === 'aborted') {
      return Promise.reject(
        new FerryError(
          'E_STORE_FAILED',
          `The upload of ${JSON.stringify(this.name)} was aborted, so it cannot be finished; send the file again.`,
        ),
      );
    }
    this.#finishing ??= this.#finish(expectedSha256);
    return this.#finishing;
  }

  async #finish(expectedSha256: string | undefined): Promise<SavedFile> {
    this.#state = 'finishing';
    this.#drainListeners = [];
    try {
      await this.#closeStream(false);
      if (this.#failure) throw this.#failure;
      if (this.#received !== this.size) {
        throw new FerryError(
          'E_UPLOAD_SIZE',
          `The file ended after ${this.#received} of the announced ${this.size} bytes; send it again.`,
        );
      }
      const sha256 = this.#hash.digest('hex');
      if (expectedSha256 !== undefined && expectedSha256.toLowerCase() !== sha256) {
        // A resumable partial is left as it is (it expires); the sender starts a new upload.
        if (this.#metaPath) this.#keep = true;
        throw new FerryError(
          'E_HASH_MISMATCH',
          `The received file has SHA-256 ${sha256} but the sender announced ${expectedSha256}, so it was not stored; send it again.`,
        );
      }
      // What is on disk must be what was hashed: nothing else may have written to the partial. (A
      // partial that is not resumable has a random name and was created by this upload alone.)
      const onDisk = this.#metaPath ? (await fs.promises.stat(this.#tempPath)).size : this.#received;
      if (onDisk !== this.#received) {
        throw new FerryError('E_STORE_FAILED', `The partial file holds ${onDisk} bytes where ${this.#received} were received, so it was not stored; send the file again.`);
      }
      const placed = await this.#store.place(this.#tempPath, this.name);
      const saved = { savedAs: placed.savedAs, path: placed.path, bytes: this.#received, sha256 };
      await this.#store.completed(saved);
      return saved;
    } finally {
      if (!this.#keep) {
        await removeQuietly(this.#tempPath);
        if (this.#metaPath) await removeQuietly(this.#metaPath);
      }
      this.#store.release();
    }
  }

  /** Another connection takes this resumable upload over: stop writing, keep what is on disk. */
  detach(): Promise<void> {
    if (this.#finishing) return this.#finishing.then(noop, noop);
    return this.abort();
  }

  abort(): Promise<void> {
    if (this.#finishing) return this.#finishing.then(noop, noop);
    this.#aborting ??= this.#abort();
    return this.#aborting;
  }

  async #abort(): Promise<void> {
    this.#state = 'aborted';
    this.#drainListeners = [];
    const resumable = this.#metaPath !== undefined;
    try {
      // A resumable partial is flushed, not thrown away: what reached the disk is the resume offset.
      await this.#closeStream(!resumable);
    } catch {
      // Aborting must never fail; the temp file is removed below either way.
    }
    if (!resumable) await removeQuietly(this.#tempPath);
    this.#store.release();
  }

  #closeStream(destroy: boolean): Promise<void> {
    const stream = this.#stream;
    return new Promise((resolve) => {
      if (stream.closed) {
        resolve();
        return;
      }
      stream.once('close', () => resolve());
      if (destroy) stream.destroy();
      else stream.end();
    });
  }

  #runDrainListeners(): void {
    const listeners = this.#drainListeners;
    this.#drainListeners = [];
    for (const listener of listeners) listener();
  }
}

function noop(): void {}

/** A resumable upload that was stored already: no bytes are expected, and finishing repeats the result. */
class CompletedIncoming implements IncomingFile {
  readonly size: number;
  readonly received: number;
  readonly resumedFrom: number;

  constructor(
    readonly name: string,
    private readonly saved: SavedFile,
  ) {
    this.size = saved.bytes;
    this.received = saved.bytes;
    this.resumedFrom = saved.bytes;
  }

  write(): boolean {
    throw new FerryError('E_UPLOAD_SIZE', 'This file was stored already; no more data was expected.');
  }

  onDrain(listener: () => void): void {
    process.nextTick(listener);
  }

  finish(expectedSha256?: string): Promise<SavedFile> {
    if (expectedSha256 !== undefined && expectedSha256.toLowerCase() !== this.saved.sha256) {
      return Promise.reject(new FerryError('E_HASH_MISMATCH', `The file stored under this upload has SHA-256 ${this.saved.sha256}, not ${expectedSha256}; send it again.`));
    }
    return Promise.resolve(this.saved);
  }

  abort(): Promise<void> {
    return Promise.resolve();
  }
}

async function readDone(file: string): Promise<SavedFile | undefined> {
  try {
    const value = JSON.parse(await fs.promises.readFile(file, 'utf8')) as SavedFile;
    return typeof value.bytes === 'number' && typeof value.sha256 === 'string' && typeof value.path === 'string' ? value : undefined;
  } catch {
    return undefined;
  }
}

async function writeDone(file: string, saved: SavedFile): Promise<void> {
  try {
    await fs.promises.writeFile(file, JSON.stringify(saved));
  } catch {
    // Without the record a repeated offer stores the file again; that costs space, not data.
  }
}

interface PartialMeta {
  key: string;
  name: string;
  size: number;
  created: number;
}

async function readMeta(file: string): Promise<PartialMeta | undefined> {
  try {
    const value = JSON.parse(await fs.promises.readFile(file, 'utf8')) as PartialMeta;
    return typeof value.size === 'number' ? value : undefined;
  } catch {
    return undefined;
  }
}

async function writeMeta(file: string, meta: PartialMeta): Promise<void> {
  try {
    await fs.promises.writeFile(file, JSON.stringify(meta));
  } catch (err) {
    throw storeError(err, 'recording the partial upload');
  }
}

/** Feeds the first `length` bytes of a file into `hash`, reading each byte once. */
async function hashFilePrefix(file: string, length: number, hash: Hash): Promise<void> {
  const stream = fs.createReadStream(file, { start: 0, end: length - 1, highWaterMark: 1024 * 1024 });
  for await (const chunk of stream as AsyncIterable<Buffer>) hash.update(chunk);
}

async function removeQuietly(file: string): Promise<void> {
  try {
    await fs.promises.unlink(file);
  } catch {
    // Already gone, or the folder is unusable; a leftover temp file does no harm.
  }
}

function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

function storeError(err: unknown, doing: string): FerryError {
  return storeFailure(err, doing);
}

/** Creates a file that must not exist yet, for writing; resolves with its descriptor. */
function openExclusive(file: string): Promise<number> {
  return new Promise((resolve, reject) => fs.open(file, 'wx', 0o666, (err, fd) => (err ? reject(err) : resolve(fd))));
}
