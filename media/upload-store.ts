/**
 * Stores files sent by peers. Bytes go to a temp file under `<root>/.ferry/partial/` and only a
 * complete, verified file is given its final name, which is created without ever replacing or
 * following anything that already exists in the root.
 *
 * The parts: `incoming-file.ts` receives one file (writing, hashing, verifying), `partial-records.ts`
 * keeps the records of resumable uploads and sweeps old ones, `spare-file.ts` has an empty partial
 * ready ahead of need, `stored-records.ts` remembers what each stored file holds, `folders.ts` walks
 * (and makes) the folders of a relative name, `free-space.ts` checks the disk; this file decides
 * where an upload begins and where it ends up.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { FerryError } from '../transport/errors.js';
import { CompletedIncoming, hashFilePrefix, Incoming, WRITE_HIGH_WATER_MARK, type IncomingFile, type SavedFile } from './incoming-file.js';
import { numberedName, safeName, safeRelativePath } from './names.js';
import { checkKey, PartialRecords } from './partial-records.js';
import { folderFor, lastSegment } from './folders.js';
import { FreeSpace } from './free-space.js';
import { SpareFile } from './spare-file.js';
import { StoredRecords } from './stored-records.js';
import { errorCode, noop, removeQuietly, storeError } from './store-io.js';

export type { IncomingFile, SavedFile } from './incoming-file.js';

/** How the store is set up. */
export interface UploadStoreOptions {
  /** Folder the files are saved in; created if missing. */
  root: string;
  /** Largest accepted file in bytes; undefined means only free disk space limits it. */
  maxFileSize?: number;
  /**
   * Bytes all uploads together may hold in memory while the disk is behind (default 64 MiB). Each
   * upload gets an equal share, between 256 KiB and 4 MiB; offers still being set up count too.
   */
  bufferBudget?: number;
}

const DEFAULT_BUFFER_BUDGET = 64 * 1024 * 1024;
/** The least an upload may buffer however many run at once: four socket reads. */
const MIN_UPLOAD_BUFFER = 256 * 1024;

/** What a peer announces before sending a file. */
export interface Offer {
  name: string;
  size: number;
  /**
   * A resumable upload's key (32 hex digits, chosen by the sender). Its partial data is kept when
   * the connection drops, and a later offer with the same key continues where it stopped.
   */
  key?: string;
  /**
   * The file's SHA-256 (64 lower-case hex digits), when the sender knows it: if the file stored under
   * exactly this name is this very file, nothing is received and the upload is `skipped`.
   */
  sha256?: string;
  /**
   * The name may be a relative path (`photos/2024/a.jpg`): the file is stored in those folders under
   * the root, created as needed. Without it only the last segment of the name is kept.
   */
  folders?: boolean;
}

/** The state folder inside the root: partial uploads live here, never under a final name. */
const STATE_DIR = '.ferry';
const PARTIAL_DIR = path.join(STATE_DIR, 'partial');
/** Holds the one empty file made ahead of need (see `SpareFile`). */
const SPARE_DIR = path.join(STATE_DIR, 'spare');
/** What each stored file holds (see `StoredRecords`). */
const STORED_LOG = path.join(STATE_DIR, 'stored.log');
const MAX_NUMBERED_NAMES = 10_000;
// Codes with which link() says the file system has no hard links, rather than that something is wrong.
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'ENOSYS']);

/** Saves incoming files inside `root` and nowhere else. */
export class UploadStore {
  /** Absolute path of the folder files are saved in. */
  readonly root: string;
  readonly #partialDir: string;
  readonly #records: PartialRecords;
  readonly #spare: SpareFile;
  readonly #spareDir: string;
  readonly #stored: StoredRecords;
  readonly #maxFileSize: number | undefined;
  readonly #active = new Set<Incoming>();
  /** Resumable uploads being received, by key: a newer connection for the same key takes over. */
  readonly #byKey = new Map<string, Incoming>();
  /** Offers for one key are handled one after another, so two can never both claim the partial. */
  readonly #keyTurns = new Map<string, Promise<unknown>>();
  #initialising: Promise<void> | undefined;
  #hardLinks = true;
  /** Stems of partial files being made for uploads that have not started yet. */
  readonly #starting = new Set<string>();
  readonly #freeSpace: FreeSpace;
  readonly #bufferBudget: number;
  /**
   * An upload's share of the buffer budget. Many uploads at once each buffer less: beyond about the
   * size of the CPU's caches, data waiting for the disk is cold again by the time it is written, and
   * with 100 uploads of 4 MiB each the server spent twice the pipe's system time copying it.
   */
  readonly #bufferLimit = (): number =>
    Math.min(WRITE_HIGH_WATER_MARK, Math.max(MIN_UPLOAD_BUFFER, Math.floor(this.#bufferBudget / Math.max(1, this.#active.size + this.#beginning))));
  /** Offers being set up (`begin` not yet settled). */
  #beginning = 0;

  constructor(opts: UploadStoreOptions) {
    if (opts.maxFileSize !== undefined && !(Number.isSafeInteger(opts.maxFileSize) && opts.maxFileSize >= 0)) {
      throw new RangeError(`maxFileSize must be a non-negative integer, got ${opts.maxFileSize}.`);
    }
    this.root = path.resolve(opts.root);
    this.#partialDir = path.join(this.root, PARTIAL_DIR);
    this.#records = new PartialRecords(this.#partialDir);
    this.#spareDir = path.join(this.root, SPARE_DIR);
    this.#spare = new SpareFile(this.#spareDir);
    this.#stored = new StoredRecords(path.join(this.root, STORED_LOG));
    this.#freeSpace = new FreeSpace(this.root);
    this.#maxFileSize = opts.maxFileSize;
    if (opts.bufferBudget !== undefined && !(Number.isSafeInteger(opts.bufferBudget) && opts.bufferBudget > 0)) {
      throw new RangeError(`bufferBudget must be a positive integer, got ${opts.bufferBudget}.`);
    }
    this.#bufferBudget = opts.bufferBudget ?? DEFAULT_BUFFER_BUDGET;
  }

  /** Creates the root and the folder for partial uploads. Safe to call repeatedly. */
  init(): Promise<void> {
    this.#initialising ??= Promise.all([fs.promises.mkdir(this.#partialDir, { recursive: true }), this.#spare.clear()]).then(
      () => Promise.all([fs.promises.mkdir(this.#spareDir, { recursive: true }), this.#stored.init()]),
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
   * Starts receiving a file after checking its name, its size and the free disk space. When the
   * offer's SHA-256 shows that the file is stored already, the incoming file is `skipped` instead.
   *
   * @throws FerryError `E_BAD_NAME`, `E_UPLOAD_SIZE` (size not a non-negative integer),
   *   `E_FILE_TOO_LARGE`, `E_NO_SPACE`, `E_STORE_FAILED`, or `E_BAD_FRAME` (a key or SHA-256 of the
   *   wrong form).
   */
  async begin(offer: Offer): Promise<IncomingFile> {
    // An upload counts for the buffer shares from its offer on: when many start together, the first
    // ones to get going must not take 4 MiB each while the others are still being set up.
    this.#beginning++;
    try {
      return await this.#begin(offer);
    } finally {
      this.#beginning--;
    }
  }

  async #begin(offer: Offer): Promise<IncomingFile> {
    const name = offer.folders === true ? safeRelativePath(offer.name) : safeName(offer.name);
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

    const sha256 = offer.sha256;
    if (sha256 !== undefined && (typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sha256))) {
      throw new FerryError('E_BAD_FRAME', 'An offered SHA-256 must be 64 lower-case hex digits.');
    }

    await this.init();
    // Refused now rather than after the bytes came: a folder on the way that is a file or a link.
    await folderFor(this.root, name, false);
    if (sha256 !== undefined) {
      const held = await this.#heldAs(name, size, sha256);
      if (held) return new CompletedIncoming(name, held, true);
    }
    if (offer.key !== undefined) return this.#resume(name, size, offer.key, sha256);
    await this.#checkFreeSpace(size);

    let partial: { path: string; fd: number; stem: string };
    try {
      partial = await this.#newPartial();
    } catch (err) {
      // The exclusive open failed, so the path is not ours to delete.
      throw storeError(err, 'creating a temporary file');
    }
    const stream = fs.createWriteStream(partial.path, { fd: partial.fd, highWaterMark: WRITE_HIGH_WATER_MARK });
    const incoming: Incoming = new Incoming({
      name,
      size,
      tempPath: partial.path,
      stream,
      hash: createHash('sha256'),
      offset: 0,
      metaPath: undefined,
      store: {
        place: (temp, wanted) => this.#place(temp, wanted),
        completed: (saved) => this.#stored.remember(saved),
        release: () => this.#active.delete(incoming),
        bufferLimit: this.#bufferLimit,
      },
    });
    this.#active.add(incoming);
    this.#starting.delete(partial.stem);
    return incoming;
  }

  /** Opens a new, empty partial file for an upload that is not resumable (the spare, when ready). */
  async #newPartial(): Promise<{ path: string; fd: number; stem: string }> {
    const stem = randomBytes(16).toString('hex');
    const target = path.join(this.#partialDir, `${stem}.part`);
    // Marked as in use until the upload is in #active (begin() unmarks it), so the sweeper leaves it.
    this.#starting.add(stem);
    try {
      return { ...(await this.#spare.take(target)), stem };
    } catch (err) {
      this.#starting.delete(stem);
      throw err;
    }
  }

  /** Closes and removes the spare file, and closes the records of stored files. Uploads still in progress are not affected. */
  async close(): Promise<void> {
    await Promise.all([this.#spare.close(), this.#stored.close()]);
  }

  /**
   * Begins or continues a resumable upload. The offset is what is really on disk, so it survives a
   * killed server; the running hash is rebuilt by reading that data once. An older connection still
   * attached to the key is cut off first, so bytes from two connections never interleave.
   */
  #resume(name: string, size: number, key: string, sha256: string | undefined): Promise<IncomingFile> {
    try {
      checkKey(key);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const turn = (this.#keyTurns.get(key) ?? Promise.resolve()).then(
      () => this.#resumeInTurn(name, size, key, sha256),
      () => this.#resumeInTurn(name, size, key, sha256),
    );
    const settled = turn.then(noop, noop);
    this.#keyTurns.set(key, settled);
    void settled.then(() => {
      if (this.#keyTurns.get(key) === settled) this.#keyTurns.delete(key);
    });
    return turn;
  }

  async #resumeInTurn(name: string, size: number, key: string, sha256: string | undefined): Promise<IncomingFile> {
    // An earlier connection may still be finishing this upload: let it, before looking for its record.
    const previous = this.#byKey.get(key);
    if (previous) await previous.detach();
    const done = await this.#records.readDone(key);
    // Stored already, but the sender never heard: answer from the record instead of storing it twice,
    // as long as the stored file is still the one recorded (else it is received again). A sender
    // that names the hash, and names this one, is told at once; any other checks it at the end.
    if (done && done.bytes === size && (sha256 === undefined || sha256 === done.sha256)) {
      const held = await this.#heldAs(done.savedAs, size, done.sha256);
      if (held) return new CompletedIncoming(name, held, sha256 !== undefined);
    }
    const tempPath = this.#records.partPath(key);
    const metaPath = this.#records.metaPath(key);
    let offset = 0;
    const hash = createHash('sha256');
    const meta = await this.#records.readMeta(key);
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
    if (!meta || meta.size !== size) await this.#records.writeMeta({ key, name, size, created: Date.now() });
    const stream = fs.createWriteStream(tempPath, { flags: offset > 0 ? 'a' : 'w', highWaterMark: WRITE_HIGH_WATER_MARK });
    const incoming: Incoming = new Incoming({
      name,
      size,
      tempPath,
      stream,
      hash,
      offset,
      metaPath,
      store: {
        place: (temp, wanted) => this.#place(temp, wanted),
        completed: async (saved) => {
          await Promise.all([this.#stored.remember(saved), this.#records.writeDone(key, saved)]);
        },
        release: () => {
          this.#active.delete(incoming);
          if (this.#byKey.get(key) === incoming) this.#byKey.delete(key);
        },
        bufferLimit: this.#bufferLimit,
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
    return this.#records.expire(maxAgeMs, now, (stem) => this.#inUse(stem));
  }

  /** Checks that `size` more bytes fit; uploads in progress will still need the rest of their announced size. */
  #checkFreeSpace(size: number): Promise<void> {
    let reserved = 0;
    for (const incoming of this.#active) reserved += incoming.size - incoming.received;
    return this.#freeSpace.check(size, reserved);
  }

  /** True while an upload uses the partial files of this stem, or is about to. */
  #inUse(stem: string): boolean {
    if (this.#starting.has(stem) || this.#keyTurns.has(stem)) return true;
    for (const incoming of this.#active) if (path.basename(incoming.tempPath, '.part') === stem) return true;
    return false;
  }

  /** The file stored under this (safe) name, if it is still exactly the one recorded with this size and hash. */
  async #heldAs(name: string, size: number, sha256: string): Promise<SavedFile | undefined> {
    let folder: string;
    try {
      folder = await folderFor(this.root, name, false);
    } catch {
      return undefined;
    }
    return this.#stored.match(name, path.join(folder, lastSegment(name)), size, sha256);
  }

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

  /**
   * Gives the temp file its final name, numbering the name while it is taken. Creating the name
   * with link() or an exclusive copy fails if anything exists there, including a symlink, so
   * nothing is overwritten or followed, and concurrent uploads cannot collide.
   */
  async #place(tempPath: string, name: string): Promise<{ savedAs: string; path: string }> {
    // Folders are made only now, for a file that passed its checks; a number goes on the file's name.
    const folder = await folderFor(this.root, name, true);
    const prefix = name.slice(0, name.length - lastSegment(name).length);
    const base = lastSegment(name);
    for (let n = 0; n <= MAX_NUMBERED_NAMES; n++) {
      const candidate = n === 0 ? base : numberedName(base, n);
      const finalPath = path.join(folder, candidate);
      const inside = path.relative(this.root, finalPath);
      if (path.dirname(finalPath) !== folder || path.basename(finalPath) !== candidate || inside === '..' || inside.startsWith(`..${path.sep}`) || path.isAbsolute(inside)) {
        throw new FerryError(
          'E_STORE_FAILED',
          `The name ${JSON.stringify(prefix + candidate)} would leave the upload folder, so the file was not stored; rename it and send it again.`,
        );
      }
      if (await this.#claim(tempPath, finalPath)) {
        return { savedAs: prefix + candidate, path: finalPath };
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
}
