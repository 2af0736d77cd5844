import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readHead, streamFile } from '../machines/actors/file-source.js';
import { FerryError } from '../transport/errors.js';
import { memoryPair } from '../transport/memory-transport.js';
import { DEFAULT_LIMITS, type ServerToken } from '../transport/frames.js';
import { ServerDecoder, encode, preamble } from '../transport/native-codec.js';
import { content, deferred, removeTempDirs, sha256, tempDir, within } from './helpers/async.js';

afterEach(() => removeTempDirs());

/** Streams `file` over a memory pair and decodes what arrives on the other end. */
async function streamed(file: string, size: number, offset = 0, preloaded?: Promise<Buffer>): Promise<{ result: { sha256: string; bytes: number }; data: Buffer; end: Extract<ServerToken, { type: 'upload-end' }> | undefined }> {
  const [near, far] = memoryPair();
  const decoder = new ServerDecoder(DEFAULT_LIMITS);
  decoder.feed(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'test' })]));
  const chunks: Buffer[] = [];
  let end: Extract<ServerToken, { type: 'upload-end' }> | undefined;
  const ended = deferred();
  far.on('data', (chunk: Buffer) => {
    for (const token of decoder.feed(chunk)) {
      if (token.type === 'data') chunks.push(Buffer.from(token.chunk));
      if (token.type === 'upload-end') {
        end = token;
        ended.resolve();
      }
    }
  });
  const result = await streamFile({ path: file, id: 3, size, offset, transport: near, signal: new AbortController().signal, onProgress: () => {}, ...(preloaded ? { preloaded } : {}) });
  // The memory transport delivers asynchronously; the UPLOAD_END is the last frame.
  await within(ended.promise, 'the UPLOAD_END frame');
  near.destroy();
  return { result, data: Buffer.concat(chunks), end };
}

function fileWith(data: Buffer): string {
  const file = path.join(tempDir('ferry-source-'), 'source.bin');
  fs.writeFileSync(file, data);
  return file;
}

describe('streamFile', () => {
  it('sends a file as DATA frames and ends with the SHA-256 of what it sent', async () => {
    const data = content(300_000, 8);
    const { result, data: received, end } = await streamed(fileWith(data), data.length);
    expect(received).toEqual(data);
    expect(result).toEqual({ sha256: sha256(data), bytes: data.length });
    expect(end).toEqual({ type: 'upload-end', id: 3, sha256: sha256(data) });
  });

  it('sends exactly the announced bytes of a file that grew after it was measured', async () => {
    const data = content(100_000, 9);
    const file = fileWith(Buffer.concat([data, Buffer.from('appended later')]));
    const { result, data: received } = await streamed(file, data.length);
    expect(received).toEqual(data);
    expect(result.sha256).toBe(sha256(data));
  });

  it('fails with E_LOCAL_FILE when the file shrank after it was measured', async () => {
    const data = content(1000, 10);
    const file = fileWith(data.subarray(0, 600));
    const failure = await streamed(file, data.length).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(FerryError);
    expect((failure as FerryError).code).toBe('E_LOCAL_FILE');
  });

  it('resumes from an offset: sends the rest, but the hash covers the whole file', async () => {
    const data = content(150_000, 11);
    const { result, data: received } = await streamed(fileWith(data), data.length, 60_000);
    expect(received).toEqual(data.subarray(60_000));
    expect(result.sha256).toBe(sha256(data));
  });

  it('sends a small file from the content read while its offer travelled, without reading it again', async () => {
    const data = content(40_000, 12);
    const file = fileWith(data);
    const preloaded = readHead(file, data.length);
    await preloaded;
    // Gone from the disk: only the preloaded bytes can be sent.
    fs.unlinkSync(file);
    const { result, data: received, end } = await streamed(file, data.length, 0, preloaded);
    expect(received).toEqual(data);
    expect(result.sha256).toBe(sha256(data));
    expect(end?.sha256).toBe(sha256(data));
  });

  it('readHead reads no more than it is asked for, and what there is of a shorter file', async () => {
    const data = content(10_000, 14);
    const file = fileWith(data);
    expect(await readHead(file, 4000)).toEqual(data.subarray(0, 4000));
    expect(await readHead(file, 20_000)).toEqual(data);
    await expect(readHead(path.join(path.dirname(file), 'missing'), 10)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('fails with E_LOCAL_FILE when the preloaded content is shorter than announced, or could not be read', async () => {
    const data = content(1000, 13);
    const file = fileWith(data);
    const short = await streamed(file, 2000, 0, Promise.resolve(data)).then(() => undefined, (err: unknown) => err);
    expect((short as FerryError).code).toBe('E_LOCAL_FILE');
    const unreadable = Promise.reject(Object.assign(new Error('permission denied'), { code: 'EACCES' }));
    unreadable.catch(() => undefined);
    const failed = await streamed(file, data.length, 0, unreadable as Promise<Buffer>).then(() => undefined, (err: unknown) => err);
    expect((failed as FerryError).code).toBe('E_LOCAL_FILE');
    expect((failed as FerryError).message).toContain('permission denied');
  });

  it('reuses a read buffer only once the transport has let go of the chunk in it', async () => {
    // A transport that keeps the chunks it is given (no copy) and reads them only when it lets go
    // of them, three chunks later, as a socket does while the kernel is busy: were a buffer reused
    // before that, what it finally sends would hold a later chunk's bytes.
    const data = content(3 * 1024 * 1024 + 1234, 15);
    const [near] = memoryPair();
    const held: { chunk: Uint8Array; done?: () => void }[] = [];
    const sent: Buffer[] = [];
    const release = () => {
      const oldest = held.shift()!;
      sent.push(Buffer.from(oldest.chunk));
      oldest.done?.();
    };
    const holding = () => held.filter((entry) => entry.done).length;
    const lazy = Object.assign(Object.create(near) as typeof near, {
      write(chunk: Uint8Array, done?: () => void) {
        held.push(done ? { chunk, done } : { chunk });
        setImmediate(() => {
          while (holding() > 3) release();
        });
        return true;
      },
      cork() {},
      uncork() {},
    });
    const result = await streamFile({ path: fileWith(data), id: 4, size: data.length, transport: lazy, signal: new AbortController().signal, onProgress: () => {} });
    while (held.length > 0) release();
    const decoder = new ServerDecoder(DEFAULT_LIMITS);
    decoder.feed(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'test' })]));
    const received = decoder.feed(Buffer.concat(sent)).flatMap((token) => (token.type === 'data' ? [Buffer.from(token.chunk)] : []));
    // Compared by hash: a deep comparison of megabytes is slow to run and to print.
    expect(sha256(Buffer.concat(received))).toBe(sha256(data));
    expect(result.sha256).toBe(sha256(data));
  });

  it('sends no DATA frame for an empty file, only the end', async () => {
    const { result, data: received, end } = await streamed(fileWith(Buffer.alloc(0)), 0);
    expect(received).toEqual(Buffer.alloc(0));
    expect(end?.sha256).toBe(sha256(Buffer.alloc(0)));
    expect(result.bytes).toBe(0);
  });
});
