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

/**
 * Streams a file as DATA frames: each chunk is read once, hashed once and written behind a 5-byte
 * header in one corked write (no copy). Reading stops while the socket is full and resumes on
 * `drain`, so a slow network or server paces the disk, never memory. Ends with UPLOAD_END carrying
 * the SHA-256 of everything sent.
 */
export async function streamFile(opts: FileSourceOptions): Promise<{ sha256: string; bytes: number }> {
  const { transport, signal, rateLimit } = opts;
  const hash = createHash('sha256');
  const chunkSize = rateLimit ? Math.max(1024, Math.min(CHUNK, Math.floor(rateLimit / 20))) : CHUNK;
  const offset = opts.offset ?? 0;
  const started = performance.now();
  const raw = opts.framing === 'raw';
  let sent = offset;
  let stream: fs.ReadStream | undefined;
  try {
    if (offset > 0) {
      // The SHA-256 covers the whole file, so the part the server already has is hashed too.
      const prefix = fs.createReadStream(opts.path, { start: 0, end: offset - 1, highWaterMark: CHUNK });
      let read = 0;
      for await (const chunk of prefix as AsyncIterable<Buffer>) {
        if (signal.aborted) throw signal.reason;
        hash.update(chunk);
        read += chunk.length;
      }
      if (read !== offset) throw new FerryError('E_LOCAL_FILE', `${opts.path} is shorter than the part already sent; send it again once it stops changing.`);
      opts.onProgress(sent);
    }
    // Exactly the announced bytes are read: the stream ends there, without a read that finds the
    // end of the file (one more trip to the disk per file, which adds up over many small files).
    // Bytes appended after the file was measured are not sent; a file that shrank fails below.
    let source: AsyncIterable<Buffer> | Iterable<Buffer>;
    if (opts.preloaded && offset === 0) {
      const whole = await opts.preloaded;
      source = chunksOf(whole.subarray(0, opts.size), chunkSize);
    } else {
      stream = opts.size > offset ? fs.createReadStream(opts.path, { start: offset, end: opts.size - 1, highWaterMark: chunkSize }) : undefined;
      source = (stream ?? []) as AsyncIterable<Buffer>;
    }
    for await (const chunk of source) {
      if (signal.aborted) throw signal.reason;
      hash.update(chunk);
      let more: boolean;
      if (raw) {
        more = transport.write(chunk);
      } else {
        transport.cork();
        transport.write(encode.dataHeader(chunk.length));
        more = transport.write(chunk);
        transport.uncork();
      }
      sent += chunk.length;
      opts.onProgress(sent);
      // A socket says "full" past 16 KiB; waiting for every drain would stall the disk read behind
      // each chunk. Allow a few chunks in flight, still bounded, then wait.
      if (!more && transport.writableLength >= MAX_IN_FLIGHT) await writable(transport, signal);
      if (rateLimit) await pace(started + ((sent - offset) / rateLimit) * 1000, signal);
    }
  } catch (err) {
    if (err instanceof FerryError || signal.aborted) throw err;
    throw new FerryError('E_LOCAL_FILE', `${opts.path} could not be read (${(err as Error).message}).`, { cause: err });
  } finally {
    stream?.destroy();
  }
  if (sent !== opts.size) {
    throw new FerryError('E_LOCAL_FILE', `${opts.path} changed size while it was being sent; send it again once it stops changing.`);
  }
  const sha256 = hash.digest('hex');
  if (!raw) transport.write(encode.uploadEnd(opts.id, sha256));
  return { sha256, bytes: sent };
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

function* chunksOf(data: Buffer, size: number): Iterable<Buffer> {
  for (let at = 0; at < data.length; at += size) yield data.subarray(at, at + size);
}

/** Resolves on `drain`; rejects when the connection closes or the upload is abandoned first. */
function writable(transport: Transport, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: unknown) => {
      transport.off('drain', onDrain).off('close', onClose);
      signal.removeEventListener('abort', onAbort);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onDrain = () => done();
    const onClose = () => done(new FerryError('E_CONNECTION_LOST', 'The connection closed during the upload.'));
    const onAbort = () => done(signal.reason);
    if (transport.destroyed) return onClose();
    transport.on('drain', onDrain).on('close', onClose);
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
