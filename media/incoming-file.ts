/**
 * One file being received: bytes are hashed as they are written to a temp file, and finishing
 * checks the size and SHA-256 before the store gives the file its final name.
 */
import type { Hash } from 'node:crypto';
import fs from 'node:fs';
import { FerryError } from '../transport/errors.js';
import { noop, removeQuietly, storeError } from './store-io.js';

/** A file that was stored. */
export interface SavedFile {
  /** Name the file was saved under; differs from the offered name when that was taken or unsafe. */
  savedAs: string;
  /** Absolute path of the stored file. */
  path: string;
  bytes: number;
  /** Lower-case hex SHA-256 of the content. */
  sha256: string;
  /** True when the store already held this file under this name, and nothing new was written. */
  skipped?: boolean;
}

/** A file being received. Obtain one from `UploadStore.begin`. */
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
   * True when the store already holds this very file (same name, size and SHA-256): no bytes are
   * expected, and `finish()` answers at once with the stored file.
   */
  readonly skipped?: boolean;
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

/** What an incoming file asks of the store that made it. */
export interface StoreHooks {
  place(tempPath: string, name: string): Promise<{ savedAs: string; path: string }>;
  /** The file was stored: remember it (a resumable upload, in case the sender never hears and offers it again). */
  completed(saved: SavedFile): Promise<void>;
  /** The upload no longer needs disk space reserved. */
  release(): void;
  /** Bytes this upload may hold in memory now, waiting for the disk (see `UploadStore`'s buffer budget). */
  bufferLimit(): number;
}

/**
 * The most one upload holds in memory while the disk is behind, before it asks the writer to wait
 * (uploads at once share a budget, so each may get less: see `UploadStore`). 4 MiB rather than 1 for
 * an upload on its own: each pause and resume of reading costs two steps of the session, and larger
 * batches make fewer, larger writes; for a 1 GiB upload this took a quarter off the server's user
 * time (1.8 -> 1.3 s here).
 */
export const WRITE_HIGH_WATER_MARK = 4 * 1024 * 1024;

type State = 'open' | 'finishing' | 'aborted';

export interface IncomingSetup {
  name: string;
  size: number;
  tempPath: string;
  stream: fs.WriteStream;
  /** The running hash, already fed with the `offset` bytes on disk. */
  hash: Hash;
  offset: number;
  /** Set for a resumable upload: its partial survives an abort. */
  metaPath: string | undefined;
  store: StoreHooks;
}

/** The store's implementation of {@link IncomingFile}. */
export class Incoming implements IncomingFile {
  readonly name: string;
  readonly size: number;
  readonly resumedFrom: number;
  readonly tempPath: string;
  #received: number;
  readonly #store: StoreHooks;
  readonly #stream: fs.WriteStream;
  readonly #hash: Hash;
  readonly #metaPath: string | undefined;
  #state: State = 'open';
  #keep = false;
  #failure: FerryError | undefined;
  #drainListeners: (() => void)[] = [];
  /**
   * Writes that found the upload's buffer full and have not reached the file yet (chunks already on
   * their way keep coming after the writer was told to wait). Writing may go on once none is left.
   */
  #fullWrites = 0;
  readonly #flushed = (err?: Error | null): void => {
    // A failed write calls back before the stream's 'error' event: the writer must see the failure.
    // The stream's own error comes first: a later write's callback only says the stream was destroyed.
    if (err) this.#failure ??= storeError(this.#stream.errored ?? err, 'writing the received file');
    if (--this.#fullWrites > 0 && !this.#failure) return;
    this.#runDrainListeners();
  };
  #finishing: Promise<SavedFile> | undefined;
  #aborting: Promise<void> | undefined;

  constructor(setup: IncomingSetup) {
    this.#store = setup.store;
    this.name = setup.name;
    this.size = setup.size;
    this.tempPath = setup.tempPath;
    this.#stream = setup.stream;
    this.#hash = setup.hash;
    this.#received = setup.offset;
    this.resumedFrom = setup.offset;
    this.#metaPath = setup.metaPath;
    // A listener must be attached for the whole life of the stream: an unhandled
    // 'error' event would take the process down.
    this.#stream.on('error', (err) => {
      this.#failure ??= storeError(err, 'writing the received file');
      this.#runDrainListeners();
    });
  }

  get received(): number {
    return this.#received;
  }

  /** Resolves once the write stream has opened its file; rejects when it cannot. */
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
    const stream = this.#stream;
    if (stream.writableLength + chunk.length < this.#store.bufferLimit()) return stream.write(chunk);
    // Full: the writer waits until this chunk, and so everything before it, is in the file.
    this.#fullWrites++;
    stream.write(chunk, this.#flushed);
    return false;
  }

  onDrain(listener: () => void): void {
    if (this.#state === 'aborted') return;
    if (this.#failure || this.#fullWrites === 0) {
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
      const onDisk = this.#metaPath ? (await fs.promises.stat(this.tempPath)).size : this.#received;
      if (onDisk !== this.#received) {
        throw new FerryError('E_STORE_FAILED', `The partial file holds ${onDisk} bytes where ${this.#received} were received, so it was not stored; send the file again.`);
      }
      const placed = await this.#store.place(this.tempPath, this.name);
      const saved = { savedAs: placed.savedAs, path: placed.path, bytes: this.#received, sha256 };
      await this.#store.completed(saved);
      return saved;
    } finally {
      if (!this.#keep) {
        await removeQuietly(this.tempPath);
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
    if (!resumable) await removeQuietly(this.tempPath);
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

/**
 * A file that is stored already: no bytes are expected, and finishing repeats the result. Either a
 * resumable upload whose sender never heard that it was stored (`resumedFrom` is then the whole
 * file, and the sender's hash is checked at the end as usual), or, `skipped`, an offer whose
 * SHA-256 says it is the very file stored under that name (nothing is resumed, nothing to check).
 */
export class CompletedIncoming implements IncomingFile {
  readonly size: number;
  readonly received: number;
  readonly resumedFrom: number;
  readonly skipped: boolean;
  private readonly saved: SavedFile;

  constructor(
    readonly name: string,
    saved: SavedFile,
    skipped = false,
  ) {
    this.size = saved.bytes;
    this.received = saved.bytes;
    this.resumedFrom = skipped ? 0 : saved.bytes;
    this.skipped = skipped;
    this.saved = skipped ? { ...saved, skipped: true } : saved;
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

/** Feeds the first `length` bytes of a file into `hash`, reading each byte once. */
export async function hashFilePrefix(file: string, length: number, hash: Hash): Promise<void> {
  const stream = fs.createReadStream(file, { start: 0, end: length - 1, highWaterMark: 1024 * 1024 });
  for await (const chunk of stream as AsyncIterable<Buffer>) hash.update(chunk);
}
