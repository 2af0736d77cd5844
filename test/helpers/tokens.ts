/** Feeding decoders in pieces, and comparing the tokens they give, for the codec tests. */

interface Decoder<T> {
  feed(chunk: Buffer): T[];
}

/** Feeds every chunk in order and returns all tokens (throws what the decoder throws). */
export function feedAll<T>(decoder: Decoder<T>, chunks: readonly Buffer[]): T[] {
  const out: T[] = [];
  for (const chunk of chunks) out.push(...decoder.feed(chunk));
  return out;
}

/** Cuts `buf` at the given positions (any order, duplicates and out-of-range values allowed). */
export function splitAt(buf: Buffer, cuts: readonly number[]): Buffer[] {
  const points = [...new Set(cuts.filter((c) => c > 0 && c < buf.length))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let start = 0;
  for (const p of points) {
    out.push(buf.subarray(start, p));
    start = p;
  }
  out.push(buf.subarray(start));
  return out;
}

/** One byte at a time. */
export function bytewise(buf: Buffer): Buffer[] {
  return Array.from({ length: buf.length }, (_, i) => buf.subarray(i, i + 1));
}

/** Buffers become `hex:…` strings, recursively, so tokens compare by content and diff readably. */
export function plain(value: unknown): unknown {
  if (Buffer.isBuffer(value)) return `hex:${value.toString('hex')}`;
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

/** Merges consecutive data tokens (how file data is chunked depends on how the bytes arrived), then `plain`s. */
export function normalise<T extends { type: string }>(tokens: readonly T[]): unknown[] {
  const merged: T[] = [];
  for (const token of tokens) {
    const last = merged[merged.length - 1];
    if (token.type === 'data' && last?.type === 'data') {
      const chunk = Buffer.concat([(last as unknown as { chunk: Buffer }).chunk, (token as unknown as { chunk: Buffer }).chunk]);
      merged[merged.length - 1] = { type: 'data', chunk } as unknown as T;
    } else {
      merged.push(token);
    }
  }
  return merged.map(plain);
}
