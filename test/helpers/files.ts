import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A new empty folder under the system temp dir. */
export function tempDir(prefix = 'ferry-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A function that makes a new temp folder with one prefix each call, and can remove them all. */
export interface ScratchDirs {
  (): string;
  /** Removes every folder made so far; call from `afterAll`. */
  removeAll(): void;
}

export function scratchDirs(prefix: string): ScratchDirs {
  const made: string[] = [];
  const scratch = (): string => {
    const dir = tempDir(prefix);
    made.push(dir);
    return dir;
  };
  const removeAll = (): void => {
    for (const dir of made.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  };
  return Object.assign(scratch, { removeAll });
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** SHA-256 and size of a file, read as a stream (never whole in memory). */
export async function hashFile(file: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { sha256: hash.digest('hex'), size };
}

/**
 * Writes `size` pseudo-random bytes (xorshift32 from `seed`) to `file` chunk by chunk, hashing them
 * on the way, so a file of any size is made without holding it in memory. Same seed, same bytes.
 */
export async function writeSeededFile(file: string, size: number, seed: number, chunkSize = 1024 * 1024): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  const words = new Uint32Array(Math.ceil(chunkSize / 4));
  const bytes = Buffer.from(words.buffer);
  let state = seed >>> 0 || 0x9e3779b9;
  const handle = await fs.promises.open(file, 'w');
  try {
    for (let written = 0; written < size; ) {
      for (let i = 0; i < words.length; i++) {
        state ^= state << 13;
        state >>>= 0;
        state ^= state >>> 17;
        state ^= state << 5;
        state >>>= 0;
        words[i] = state;
      }
      const n = Math.min(chunkSize, size - written);
      const chunk = bytes.subarray(0, n);
      hash.update(chunk);
      for (let off = 0; off < n; ) off += (await handle.write(chunk, off, n - off)).bytesWritten;
      written += n;
    }
  } finally {
    await handle.close();
  }
  return { sha256: hash.digest('hex'), size };
}
