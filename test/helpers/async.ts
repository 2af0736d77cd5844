/**
 * Small async tools for tests that synchronise on events and promises, never on sleeps.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// Captured at import time so that a guard still fires while a test uses fake timers.
const realSetTimeout = globalThis.setTimeout;
const realClearTimeout = globalThis.clearTimeout;

export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
  readonly settled: boolean;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  let settled = false;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A gate may be rejected that nobody ended up waiting for; that is not an unhandled rejection.
  promise.catch(() => {});
  return {
    promise,
    resolve: (value) => {
      settled = true;
      resolve(value);
    },
    reject: (error) => {
      settled = true;
      reject(error);
    },
    get settled() {
      return settled;
    },
  };
}

/**
 * Rejects with a readable message when `promise` has not settled within `ms` (real time), so a
 * missing event fails the test with a name instead of hanging until the test timeout. A guard only:
 * nothing waits for this timer to make progress.
 */
export function within<T>(promise: Promise<T>, what: string, ms = 3_000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = realSetTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    promise.then(
      (value) => {
        realClearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        realClearTimeout(timer);
        reject(err);
      },
    );
  });
}

/**
 * A queue that can be awaited: `next(pred)` takes the first item matching `pred`, leaving the
 * others in place, or waits for one to be pushed. `all` keeps everything ever pushed.
 */
export class AsyncQueue<T> {
  readonly all: T[] = [];
  private items: T[] = [];
  private waiters: { pred: (item: T) => boolean; resolve: (item: T) => void; dropBefore: boolean }[] = [];

  push(item: T): void {
    this.all.push(item);
    const i = this.waiters.findIndex((w) => w.pred(item));
    if (i >= 0) {
      const [waiter] = this.waiters.splice(i, 1);
      if (waiter!.dropBefore) this.items = [];
      waiter!.resolve(item);
      return;
    }
    this.items.push(item);
  }

  /** Like `next`, but also discards every item queued before the match. */
  skipTo(pred: (item: T) => boolean, what = 'a queued item', ms?: number): Promise<T> {
    const i = this.items.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.items.splice(0, i + 1)[i]!);
    return within(
      new Promise<T>((resolve) => this.waiters.push({ pred, resolve, dropBefore: true })),
      what,
      ms,
    );
  }

  next(pred: (item: T) => boolean = () => true, what = 'a queued item', ms?: number): Promise<T> {
    const i = this.items.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.items.splice(i, 1)[0]!);
    return within(
      new Promise<T>((resolve) => this.waiters.push({ pred, resolve, dropBefore: false })),
      what,
      ms,
    );
  }

  /** Items not yet taken by `next`. */
  get pending(): readonly T[] {
    return this.items;
  }
}

const made: string[] = [];

export function tempDir(prefix = 'ferry-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/** Removes every folder made by {@link tempDir}; call from `afterEach`/`afterAll`. */
export function removeTempDirs(): void {
  for (const dir of made.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Deterministic bytes that look random enough that misplaced bytes change the hash. */
export function content(size: number, seed = 1): Buffer {
  const buf = Buffer.alloc(size);
  let x = (seed * 2654435761) >>> 0;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    buf[i] = x >>> 24;
  }
  return buf;
}

/** Names in the upload root that are final files (not the `.ferry` working folder). */
export function finalFiles(root: string): string[] {
  return fs.existsSync(root) ? fs.readdirSync(root).filter((name) => name !== '.ferry').sort() : [];
}

/** Temp files left in the store's partial folder. */
/** Partial data and its records; the `.done` records of stored uploads are not partial data. */
export function partialFiles(root: string): string[] {
  const dir = path.join(root, '.ferry', 'partial');
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((name) => !name.endsWith('.done')) : [];
}

/** Closes and forgets everything in each list, one list after the other (clients before their servers). */
export async function closeAll(...lists: { close(): Promise<unknown> }[][]): Promise<void> {
  for (const list of lists) await Promise.allSettled(list.splice(0).map((item) => item.close()));
}
