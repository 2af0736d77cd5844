import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { FerryError } from '../../transport/errors.js';
import { encode } from '../../transport/native-codec.js';
import type { Transport } from '../../transport/transport.js';

export interface FileSourceOptions {
  path: string;
  /** Upload id the frames belong to. */
  id: number;
  /** Announced size: the file must still have exactly this many bytes. */
  size: number;
  transport: Transport;
  /** Bytes per second; undefined for as fast as the wire and disk allow. */
  rateLimit?: number;
  signal: AbortSignal;
  onProgress(sent: number): void;
  /** `native` wraps chunks in DATA frames and ends with UPLOAD_END; `raw` sends the bytes alone (the original format). */
  framing?: 'native' | 'raw';
  /** Resume: the server already has this many bytes. They are read and hashed here, not sent. */
  offset?: number;
  /**
   * The file's content, read while the offer was on its way (small files only): then nothing waits
   * for the disk once the server accepts. Used when the upload starts from the beginning.
   */
  preloaded?: Promise<Buffer>;
}

/** Files up to this size are read into memory while their offer travels (see `preloaded`). */
export const PRELOAD_MAX_BYTES = 1024 * 1024;

const CHUNK = 256 * 1024;
const MAX_IN_FLIGHT = 4 * CHUNK;
/** Read buffers per upload: the chunks the socket may hold, plus one being hashed and one read ahead. */
const POOL_CHUNKS = MAX_IN_FLIGHT / CHUNK + 2;
/** Where in its allocation a read buffer starts (see `ChunkPool.take`). */
const READ_OFFSET = 64;

/**
 * Streams a file as DATA frames: each chunk is read once, hashed once and written behind a 5-byte
 * header in one corked write (no copy). Chunks are read into a few buffers that are reused as soon
 * as the socket has written them, so a file of any size makes no garbage, and the next chunk is
 * read while the current one is hashed. Reading waits while the socket is full, so a slow network
 * or server paces the disk, never memory. Ends with UPLOAD_END carrying the SHA-256 of everything
 * sent.
 */
export async function streamFile(opts: FileSourceOptions): Promise<{ sha256: string; bytes: number }> {
  const { transport, signal, rateLimit } = opts;
  const hash = createHash('sha256');
  const chunkSize = rateLimit ? Math.max(1024, Math.min(CHUNK, Math.floor(rateLimit / 20))) : CHUNK;
  const offset = opts.offset ?? 0;
  const started = performance.now();
  const raw = opts.framing === 'raw';
  let sent = offset;
  const send = (chunk: Buffer, done?: () => void): boolean => {
    if (raw) return transport.write(chunk, done);
    transport.cork();
    transport.write(encode.dataHeader(chunk.length));
    const more = transport.write(chunk, done);
    transport.uncork();
    return more;
  };
  const afterSend = async (chunk: Buffer, more: boolean) => {
    sent += chunk.length;
    opts.onProgress(sent);
    // A socket says "full" past 16 KiB; waiting for every drain would stall the disk read behind
    // each chunk. Allow a few chunks in flight, still bounded, then wait.
    if (!more && transport.writableLength >= MAX_IN_FLIGHT) await whileOpen(transport, signal, (wake) => {
      transport.on('drain', wake);
      return () => transport.off('drain', wake);
    });
    if (rateLimit) await pace(started + ((sent - offset) / rateLimit) * 1000, signal);
  };
  let handle: fs.promises.FileHandle | undefined;
  try {
    if (opts.preloaded && offset === 0) {
      const whole = (await opts.preloaded).subarray(0, opts.size);
      for (let at = 0; at < whole.length; at += chunkSize) {
        if (signal.aborted) throw signal.reason;
        const chunk = whole.subarray(at, at + chunkSize);
        hash.update(chunk);
        await afterSend(chunk, send(chunk));
      }
    } else {
      handle = await fs.promises.open(opts.path, 'r');
      const pool = new ChunkPool(chunkSize, POOL_CHUNKS);
      if (offset > 0) {
        // The SHA-256 covers the whole file, so the part the server already has is hashed too.
        const buffer = await pool.take(transport, signal);
        for (let at = 0; at < offset; ) {
          if (signal.aborted) throw signal.reason;
          const want = Math.min(chunkSize, offset - at);
          if ((await readFully(handle, buffer, want, at)) < want) {
            throw new FerryError('E_LOCAL_FILE', `${opts.path} is shorter than the part already sent; send it again once it stops changing.`);
          }
          hash.update(want === buffer.length ? buffer : buffer.subarray(0, want));
          at += want;
        }
        pool.give(buffer);
        opts.onProgress(sent);
      }
      // Exactly the announced bytes are read: no read that finds the end of the file (one more trip
      // to the disk per file, which adds up over many small files). Bytes appended after the file
      // was measured are not sent; a file that shrank fails below.
      let next = offset;
      const file = handle;
      const readAhead = async (): Promise<{ buffer: Buffer; chunk: Buffer } | undefined> => {
        if (next >= opts.size) return undefined;
        const at = next;
        const want = Math.min(chunkSize, opts.size - at);
        next += want;
        const buffer = await pool.take(transport, signal);
        const got = await readFully(file, buffer, want, at);
        if (got === 0) return undefined;
        return { buffer, chunk: got === buffer.length ? buffer : buffer.subarray(0, got) };
      };
      let ahead = readAhead();
      for (;;) {
        const current = await ahead;
        if (!current || signal.aborted) break;
        if (current.chunk.length < chunkSize && sent + current.chunk.length < opts.size) break; // the file shrank
        ahead = readAhead();
        // A read that is never awaited (the upload failed meanwhile) must not be an unhandled rejection.
        ahead.catch(ignore);
        hash.update(current.chunk);
        await afterSend(current.chunk, send(current.chunk, () => pool.give(current.buffer)));
      }
      if (signal.aborted) throw signal.reason;
    }
  } catch (err) {
    if (err instanceof FerryError || signal.aborted) throw err;
    throw new FerryError('E_LOCAL_FILE', `${opts.path} could not be read (${(err as Error).message}).`, { cause: err });
  } finally {
    // A read still under way is waited for by close(); its result is dropped.
    await handle?.close().catch(ignore);
  }
  if (sent !== opts.size) {
    throw new FerryError('E_LOCAL_FILE', `${opts.path} changed size while it was being sent; send it again once it stops changing.`);
  }
  const sha256 = hash.digest('hex');
  if (!raw) transport.write(encode.uploadEnd(opts.id, sha256));
  return { sha256, bytes: sent };
}

const ignore = () => {};

/** Reads `length` bytes at `position` into the start of `buffer`; fewer only where the file ends. */
async function readFully(handle: fs.promises.FileHandle, buffer: Buffer, length: number, position: number): Promise<number> {
  let filled = 0;
  while (filled < length) {
    const { bytesRead } = await handle.read(buffer, filled, length - filled, position + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return filled;
}

/**
 * The read buffers of one upload. A buffer is taken for each chunk and given back once the
 * transport no longer holds it; when all are out, `take` waits for one to come back, which is
 * also what keeps reading from running ahead of the network.
 */
class ChunkPool {
  private readonly free: Buffer[] = [];
  private made = 0;
  private wake: (() => void) | undefined;

  constructor(
    private readonly size: number,
    private readonly max: number,
  ) {}

  async take(transport: Transport, signal: AbortSignal): Promise<Buffer> {
    for (;;) {
      const buffer = this.free.pop();
      if (buffer) return buffer;
      if (this.made < this.max) {
        this.made++;
        // The kernel copies page-aligned file pages into this buffer. On the AMD EPYC machine the
        // benchmarks run on, that copy was two to three times slower into a buffer starting where
        // the allocator put it (a fixed offset in a page) than into one starting 16 or more bytes
        // further on: 1 GiB of reads took 0.9 s of system time against 0.35 s.
        return Buffer.allocUnsafeSlow(this.size + READ_OFFSET).subarray(READ_OFFSET);
      }
      await whileOpen(transport, signal, (wake) => {
        this.wake = wake;
        return () => (this.wake = undefined);
      });
    }
  }

  give(buffer: Buffer): void {
    this.free.push(buffer);
    this.wake?.();
  }
}

/**
 * Reads the first `size` bytes of a file into memory (fewer if it is shorter): what `preloaded`
 * expects. A file that grew since it was measured is not read past `size`.
 */
export async function readHead(file: string, size: number): Promise<Buffer> {
  const handle = await fs.promises.open(file, 'r');
  try {
    const buffer = Buffer.allocUnsafe(size);
    let filled = 0;
    while (filled < size) {
      const { bytesRead } = await handle.read(buffer, filled, size - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    return buffer.subarray(0, filled);
  } finally {
    await handle.close();
  }
}

/**
 * Resolves when `arm`'s wake-up is called; rejects when the connection closes or the upload is
 * abandoned first. `arm` starts listening and returns how to stop.
 */
function whileOpen(transport: Transport, signal: AbortSignal, arm: (wake: () => void) => () => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let disarm = ignore;
    const done = (err?: unknown) => {
      disarm();
      transport.off('close', onClose);
      signal.removeEventListener('abort', onAbort);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onClose = () => done(new FerryError('E_CONNECTION_LOST', 'The connection closed during the upload.'));
    const onAbort = () => done(signal.reason);
    if (transport.destroyed) return onClose();
    if (signal.aborted) return onAbort();
    disarm = arm(() => done());
    transport.on('close', onClose);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Waits until `due` (a performance.now() time) so the average rate stays at the limit. */
function pace(due: number, signal: AbortSignal): Promise<void> {
  const wait = due - performance.now();
  if (wait <= 1) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, wait);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A read of the local file failed while it was being sent: the upload's own error, and why the
 * connection goes (the stream stopped mid-frame, so it cannot be reused).
 */
export function readFailure(err: unknown): { error: FerryError; reset: FerryError } {
  return {
    error: err instanceof FerryError ? err : new FerryError('E_LOCAL_FILE', String(err)),
    reset: new FerryError('E_CONNECTION_LOST', 'The connection was reset after a local read failure.'),
  };
}
