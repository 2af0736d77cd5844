/**
 * Turns any value (a snapshot, an event, a context) into plain data that is safe to show, judging
 * by shape alone: it knows nothing of ferry's machines or their context fields.
 *
 * @example
 * ```ts
 * sanitize({ token: 'abc', chunk: Buffer.alloc(65536), socket, note: 'hi' });
 * // → { token: '[redacted]', chunk: '<Buffer 65536 bytes>', socket: '<Socket>', note: 'hi' }
 * ```
 */
import { StateNode } from 'xstate';

export const REDACTED = '[redacted]';

export interface SanitizeOptions {
  /** Strings equal to or containing any of these become `[redacted]` (empty ones are ignored). */
  secrets?: readonly string[];
  /** Objects and arrays nested deeper than this become `'[Object]'` / `'[Array]'`. Default 8. */
  maxDepth?: number;
  /** Longer strings are cut to this many characters. Default 500. */
  maxString?: number;
  /** At most this many array items / object keys are kept. Default 100. */
  maxItems?: number;
}

/**
 * Words that make a key secret wherever they appear in its name (`token`, `authToken`, `api_key`,
 * `clientSecret`, `nonce`, `mac`), but not as part of a longer word (`keyframes`, `tokens`, `machine`).
 */
const SECRET_WORDS = new Set(['token', 'password', 'passwd', 'secret', 'key', 'apikey', 'authorization', 'credential', 'credentials', 'mac', 'hmac', 'nonce']);

const secretKeyCache = new Map<string, boolean>();

function isSecretKey(key: string): boolean {
  let secret = secretKeyCache.get(key);
  if (secret === undefined) {
    const words = key
      .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
      .toLowerCase()
      .split(/[^a-z0-9]+/);
    secret = words.some((word) => SECRET_WORDS.has(word));
    if (secretKeyCache.size < 10_000) secretKeyCache.set(key, secret);
  }
  return secret;
}

interface Walk {
  secrets: string[];
  maxDepth: number;
  maxString: number;
  maxItems: number;
  /** The objects on the path from the root to the current value (cycle detection). */
  path: Set<object>;
}

function className(value: object): string {
  const proto: unknown = Object.getPrototypeOf(value);
  const ctor = proto && typeof proto === 'object' ? (proto as { constructor?: unknown }).constructor : undefined;
  const name = typeof ctor === 'function' ? ctor.name : '';
  return name || 'Object';
}

function isPlain(value: object): boolean {
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Sockets, transports and streams (a `write` and an `on`), and pino-style loggers. */
function isHandleLike(value: object): boolean {
  const v = value as Record<string, unknown>;
  if (typeof v.write === 'function' && typeof v.on === 'function') return true;
  return typeof v.child === 'function' && typeof v.info === 'function' && typeof v.error === 'function' && typeof v.level === 'string';
}

/** Binary data of any kind: Buffers, typed arrays, DataViews, (Shared)ArrayBuffers. */
function byteLength(value: object): number | undefined {
  if (ArrayBuffer.isView(value)) return value.byteLength;
  if (value instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && value instanceof SharedArrayBuffer)) return value.byteLength;
  return undefined;
}

function read(value: object, key: string): unknown {
  try {
    return (value as Record<string, unknown>)[key];
  } catch {
    return '<unreadable>';
  }
}

function walkString(text: string, w: Walk): string {
  for (const secret of w.secrets) if (text.includes(secret)) return REDACTED;
  return text.length > w.maxString ? `${text.slice(0, w.maxString)}… (${text.length} chars)` : text;
}

function walk(value: unknown, depth: number, w: Walk): unknown {
  switch (typeof value) {
    case 'string':
      return walkString(value, w);
    case 'number':
    case 'boolean':
    case 'undefined':
      return value;
    case 'bigint':
      return value.toString();
    case 'function':
    case 'symbol':
      return undefined;
  }
  if (value === null) return null;
  const obj = value as object;
  const bytes = byteLength(obj);
  if (bytes !== undefined) return `<${Buffer.isBuffer(obj) ? 'Buffer' : className(obj)} ${bytes} bytes>`;
  if (w.path.has(obj)) return '[Circular]';
  if (isHandleLike(obj)) return `<${className(obj)}>`;
  if (obj instanceof StateNode) return `#${obj.id}`;
  if (obj instanceof Map) return `<${className(obj)} ${obj.size} entries>`;
  if (obj instanceof Set) return `<${className(obj)} ${obj.size} items>`;
  if (depth >= w.maxDepth) return Array.isArray(obj) ? '[Array]' : '[Object]';

  w.path.add(obj);
  try {
    return walkObject(obj, depth, w);
  } finally {
    w.path.delete(obj);
  }
}

/** An Error, an array, something with a `toJSON`, or a plain object; any other class instance is only named. */
function walkObject(obj: object, depth: number, w: Walk): unknown {
  if (obj instanceof Error) {
    const out: Record<string, unknown> = { name: walkString(obj.name, w), message: walkString(obj.message, w) };
    for (const key of Object.keys(obj)) if (key !== 'stack') putKey(out, key, read(obj, key), depth, w);
    if (obj.cause !== undefined && !('cause' in out)) putKey(out, 'cause', obj.cause, depth, w);
    return out;
  }
  if (Array.isArray(obj)) {
    const out: unknown[] = [];
    const n = Math.min(obj.length, w.maxItems);
    for (let i = 0; i < n; i++) {
      const item: unknown = obj[i];
      if (typeof item === 'function' || typeof item === 'symbol') continue;
      out.push(walk(item, depth + 1, w));
    }
    if (obj.length > n) out.push(`… ${obj.length - n} more items`);
    return out;
  }
  // Like JSON.stringify: machine snapshots, actor refs, Dates and URLs describe themselves.
  const toJSON = read(obj, 'toJSON');
  if (typeof toJSON === 'function') {
    let json: unknown;
    try {
      json = (toJSON as () => unknown).call(obj);
    } catch {
      return `<${className(obj)}>`;
    }
    if (json !== obj) return walk(json, depth, w);
  }
  if (!isPlain(obj)) return `<${className(obj)}>`;
  const out: Record<string, unknown> = {};
  const keys = Object.keys(obj);
  const n = Math.min(keys.length, w.maxItems);
  for (let i = 0; i < n; i++) putKey(out, keys[i]!, read(obj, keys[i]!), depth, w);
  if (keys.length > n) out['…'] = `${keys.length - n} more keys`;
  return out;
}

function putKey(out: Record<string, unknown>, key: string, value: unknown, depth: number, w: Walk): void {
  let name = key;
  if (w.secrets.some((secret) => key.includes(secret))) {
    name = REDACTED;
    for (let i = 2; name in out; i++) name = `${REDACTED} ${i}`;
  }
  const clean = isSecretKey(key) && value !== undefined && value !== null ? REDACTED : walk(value, depth + 1, w);
  if (clean === undefined) return;
  // A `__proto__` key stays data instead of becoming the prototype.
  if (name === '__proto__') Object.defineProperty(out, name, { value: clean, enumerable: true, writable: true, configurable: true });
  else out[name] = clean;
}

/**
 * Returns a JSON-safe copy of `value` with nothing secret or bulky in it: Buffers and typed arrays
 * become `"<Buffer 65536 bytes>"`; sockets, transports, streams, loggers and other class instances
 * become `"<ClassName>"` (Maps and Sets with their size; objects with a `toJSON`, such as machine
 * snapshots, actor refs and Dates, are replaced by what it returns); Errors keep name, message and
 * own fields but no stack; functions are dropped; strings containing a secret and values under
 * keys like `token`, `password`, `secret`, `key`, `mac`, `nonce` become `"[redacted]"`; long
 * strings, wide and deep structures are cut; cycles become `"[Circular]"`. The input is not modified.
 */
export function sanitize(value: unknown, options: SanitizeOptions = {}): unknown {
  return walk(value, 0, {
    secrets: (options.secrets ?? []).filter((secret) => secret.length > 0),
    maxDepth: options.maxDepth ?? 8,
    maxString: options.maxString ?? 500,
    maxItems: options.maxItems ?? 100,
    path: new Set(),
  });
}
