/**
 * XState inspection for ferry: sends the inspection events of the server, its sessions and the
 * client to a WebSocket in the format of @statelyai/inspect's WebSocket inspector, or to a local
 * relay page that shows them in the Stately inspector.
 *
 * The events are built by @statelyai/inspect's `createInspector` (so their shape is exactly the
 * library's) and sent by an adapter of our own, because the library's WebSocket adapter keeps the
 * process alive and retries forever when nobody listens, and cannot be stopped while it waits to
 * retry. Everything is sanitised before the library sees it: no Buffers, sockets, loggers, secrets
 * or huge strings leave the process.
 *
 * @example
 * ```ts
 * const inspection = await startInspection(true, [token]);
 * console.error(inspection.description);
 * const server = createServer({ port: 0, inspect: inspection.inspect });
 * // …
 * await server.close();
 * await inspection.stop();
 * ```
 */
import http from 'node:http';
import { createRequire } from 'node:module';
import net from 'node:net';
import tls from 'node:tls';
import { createInspector, type StatelyInspectionEvent } from '@statelyai/inspect';
import { StateNode, type AnyActorRef, type InspectionEvent } from 'xstate';

export interface Inspection {
  /** Pass as `inspect` to `createServer` / `createClient`. Never throws; a no-op once stopped. */
  inspect: (event: InspectionEvent) => void;
  /** Sends what is still queued (waiting at most about a second), then closes the connection and the local relay. */
  stop(): Promise<void>;
  /** What to tell the user: where the events go, and with `true` the page to open. */
  description: string;
  /** The WebSocket the events are sent to. */
  url: string;
  /** With `true`: the local page to open in a browser. */
  pageUrl?: string;
}

// --- Sanitising -------------------------------------------------------------------------------

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

/** Words that make a key secret wherever they appear in its name: `token`, `authToken`, `api_key`, `password`, `clientSecret`, `key`. */
const SECRET_WORDS = new Set(['token', 'password', 'passwd', 'secret', 'key', 'apikey', 'authorization', 'credential', 'credentials']);

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
  if (Buffer.isBuffer(obj)) return `<Buffer ${obj.length} bytes>`;
  if (ArrayBuffer.isView(obj)) return `<${className(obj)} ${obj.byteLength} bytes>`;
  if (obj instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && obj instanceof SharedArrayBuffer)) return `<${className(obj)} ${obj.byteLength} bytes>`;
  if (w.path.has(obj)) return '[Circular]';
  if (isHandleLike(obj)) return `<${className(obj)}>`;
  if (obj instanceof StateNode) return `#${obj.id}`;
  if (obj instanceof Map) return `<${className(obj)} ${obj.size} entries>`;
  if (obj instanceof Set) return `<${className(obj)} ${obj.size} items>`;
  if (depth >= w.maxDepth) return Array.isArray(obj) ? '[Array]' : '[Object]';

  w.path.add(obj);
  try {
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
  } finally {
    w.path.delete(obj);
  }
}

function putKey(out: Record<string, unknown>, key: string, value: unknown, depth: number, w: Walk): void {
  let name = key;
  if (w.secrets.some((secret) => key.includes(secret))) {
    name = REDACTED;
    for (let i = 2; name in out; i++) name = `${REDACTED} ${i}`;
  }
  if (isSecretKey(key) && value !== undefined && value !== null) {
    out[name] = REDACTED;
    return;
  }
  const clean = walk(value, depth + 1, w);
  if (clean !== undefined) out[name] = clean;
}

/**
 * Returns a JSON-safe copy of `value` with nothing secret or bulky in it: Buffers and typed arrays
 * become `"<Buffer 65536 bytes>"`; sockets, transports, streams, loggers and other class instances
 * become `"<ClassName>"` (Maps and Sets with their size; objects with a `toJSON`, such as machine
 * snapshots, actor refs and Dates, are replaced by what it returns); Errors keep name, message and
 * own fields but no stack; functions are dropped; strings containing a secret and values under
 * keys like `token`, `password`, `secret`, `key` become `"[redacted]"`; long strings, wide and
 * deep structures are cut; cycles become `"[Circular]"`. The input is not modified.
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

/**
 * The inspection event with its payloads sanitised, still in the shape @statelyai/inspect converts.
 * Only actor registrations, events and snapshots are passed on: the library drops the others.
 */
export function sanitizeInspectionEvent(event: InspectionEvent, clean: (value: unknown) => unknown): InspectionEvent | undefined {
  switch (event.type) {
    case '@xstate.event':
      return { ...event, event: asEventObject(clean(event.event)) };
    case '@xstate.snapshot':
      return { ...event, event: asEventObject(clean(event.event)), snapshot: clean(event.snapshot) as typeof event.snapshot };
    case '@xstate.actor':
      return { ...event, actorRef: shadowActorRef(event.actorRef, clean) as typeof event.actorRef };
    default:
      return undefined;
  }
}

function asEventObject(value: unknown): { type: string } {
  return value && typeof value === 'object' && typeof (value as { type?: unknown }).type === 'string' ? (value as { type: string }) : { type: 'unknown' };
}

/**
 * What the library reads from an actor ref (its id, session id, parent, machine config, snapshot),
 * with the snapshot sanitised. The snapshot is read when the library gets to the event, as it
 * would read it from the real ref: at registration time it does not exist yet.
 */
function shadowActorRef(actorRef: object, clean: (value: unknown) => unknown): unknown {
  const ref = actorRef as AnyActorRef & { _parent?: AnyActorRef; logic?: { config?: unknown } };
  const shadow = {
    id: ref.id,
    sessionId: ref.sessionId,
    _parent: ref._parent ? { sessionId: ref._parent.sessionId } : undefined,
    logic: { config: ref.logic?.config },
    getSnapshot: () => {
      try {
        return clean(ref.getSnapshot());
      } catch {
        return { status: 'active' };
      }
    },
  };
  return shadow;
}

// --- Sending ----------------------------------------------------------------------------------

interface WsClient {
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: string): void;
  close(code?: number): void;
  terminate(): void;
  on(event: 'open', listener: () => void): this;
  on(event: 'close', listener: () => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
  on(event: 'message', listener: (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => void): this;
  once(event: 'open' | 'close', listener: () => void): this;
}

interface WsServer {
  readonly clients: Set<WsClient>;
  on(event: 'connection', listener: (socket: WsClient) => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
  close(): void;
}

interface WsModule {
  WebSocket: { new (url: string, options?: Record<string, unknown>): WsClient; readonly CONNECTING: 0; readonly OPEN: 1 };
  WebSocketServer: new (options: Record<string, unknown>) => WsServer;
}

type Stringify = (value: unknown) => string | undefined;

// `ws` and `safe-stable-stringify` are what @statelyai/inspect itself uses; load them from there.
const requireFromInspect = createRequire(createRequire(import.meta.url).resolve('@statelyai/inspect'));
const { WebSocket, WebSocketServer } = requireFromInspect('ws') as WsModule;
const stableStringify = requireFromInspect('safe-stable-stringify') as { configure(options: { maximumDepth: number }): Stringify };

/** The library's default `serializationDepthLimit`; its WebSocket adapter stringifies with it. */
const DEPTH_LIMIT = 10;
/** Events kept while not connected (the library's `maxDeferredEvents`). */
const MAX_DEFERRED = 200;
/** Events are dropped while this much is waiting to go out to a slow listener. */
const MAX_BUFFERED_BYTES = 8 * 1024 * 1024;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 5_000;
const STOP_GRACE_MS = 1_000;

/** A connection that never keeps the process alive by itself; `onSocket` gets the socket. */
function unrefConnect(secure: boolean, onSocket: (socket: net.Socket) => void) {
  return (options: Record<string, unknown>): net.Socket => {
    let socket: net.Socket;
    if (secure) {
      const host = options.host as string | undefined;
      const servername = options.servername ?? (host && !net.isIP(host) ? host : '');
      socket = tls.connect({ ...options, path: undefined, servername } as tls.ConnectionOptions);
    } else {
      socket = net.connect({ ...options, path: options.socketPath } as net.NetConnectOpts);
    }
    socket.unref();
    onSocket(socket);
    return socket;
  };
}

/**
 * Sends inspection events over a WebSocket like @statelyai/inspect's WebSocketAdapter (same
 * stringification, the last 200 events kept until connected), but with unref'd sockets and
 * timers, retries after the listener goes away or is not there yet, and a stop that flushes.
 */
class SocketAdapter {
  private socket: WsClient | undefined;
  /** The TCP/TLS socket under `socket`: corked while one turn of the event loop's events are written. */
  private stream: net.Socket | undefined;
  private corked = false;
  private deferred: StatelyInspectionEvent[] = [];
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = RETRY_MIN_MS;
  private stopped = false;
  private readonly stringify = stableStringify.configure({ maximumDepth: DEPTH_LIMIT });
  private readonly secure: boolean;
  /** Events dropped because the listener was too slow. */
  dropped = 0;

  constructor(private readonly url: string) {
    this.secure = new URL(url).protocol === 'wss:';
  }

  start(): void {
    if (!this.stopped && !this.socket) this.connect();
  }

  /** The library calls this synchronously from `stop()`; `close()` is the awaitable version. */
  stop(): void {
    void this.close();
  }

  send(event: StatelyInspectionEvent): void {
    if (this.stopped && !this.socket) return;
    const socket = this.socket;
    if (socket && socket.readyState === WebSocket.OPEN) {
      this.write(socket, event);
    } else if (!this.stopped) {
      this.deferred.push(event);
      if (this.deferred.length > MAX_DEFERRED) this.deferred.shift();
    }
  }

  private write(socket: WsClient, event: StatelyInspectionEvent): void {
    if (socket.bufferedAmount > MAX_BUFFERED_BYTES) {
      this.dropped++;
      return;
    }
    try {
      const text = this.stringify(event);
      if (text === undefined) return;
      this.cork();
      socket.send(text);
    } catch {
      this.dropped++;
    }
  }

  /** One write for all the frames of this turn instead of a system call per event. */
  private cork(): void {
    const stream = this.stream;
    if (this.corked || !stream) return;
    this.corked = true;
    stream.cork();
    setImmediate(() => {
      this.corked = false;
      stream.uncork();
    });
  }

  private connect(): void {
    let socket: WsClient;
    try {
      socket = new WebSocket(this.url, {
        perMessageDeflate: false,
        handshakeTimeout: 10_000,
        createConnection: unrefConnect(this.secure, (stream) => (this.stream = stream)),
      });
    } catch {
      this.retry();
      return;
    }
    this.socket = socket;
    socket.on('error', () => {}); // 'close' follows
    socket.on('message', () => {}); // a relay replays what it has; nothing to do with it
    socket.on('open', () => {
      this.retryMs = RETRY_MIN_MS;
      const deferred = this.deferred.splice(0);
      for (const event of deferred) this.write(socket, event);
    });
    socket.on('close', () => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      this.stream = undefined;
      this.retry();
    });
  }

  private retry(): void {
    if (this.stopped) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.start();
    }, this.retryMs);
    this.retryTimer.unref();
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
  }

  private closing: Promise<void> | undefined;

  /** Stops retrying; sends what is queued if the connection is (about to be) open; closes. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopped = true;
      clearTimeout(this.retryTimer);
      const socket = this.socket;
      if (!socket) {
        this.deferred = [];
        return;
      }
      if (socket.readyState === WebSocket.CONNECTING) await settle(socket, 'open', STOP_GRACE_MS);
      if (socket.readyState === WebSocket.OPEN) {
        const closed = settle(socket, 'close', STOP_GRACE_MS);
        socket.close(1000);
        await closed;
      }
      socket.terminate();
      this.socket = undefined;
      this.deferred = [];
    })();
    return this.closing;
  }
}

/** Resolves on `event` or when the socket closes, or after `ms` (a timer that holds the process only that long). */
function settle(socket: WsClient, event: 'open' | 'close', ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    socket.once(event, done);
    if (event !== 'close') socket.once('close', done);
  });
}

// --- The local relay --------------------------------------------------------------------------

/**
 * The page the relay serves: like @statelyai/inspect/server's bridge page, it embeds the Stately
 * inspector and forwards what arrives on the relay's WebSocket into it.
 */
function bridgePage(inspectorUrl: string): string {
  return `<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <title>ferry – Stately Inspector</title>
  <style>
    * { margin: 0; padding: 0; }
    html, body { height: 100%; }
    iframe { width: 100%; height: 100%; border: none; }
  </style>
</head>
<body>
  <iframe id="inspector" src="${inspectorUrl}"></iframe>
  <script>
    const iframe = document.getElementById('inspector');
    const buffer = [];
    let connected = false;

    window.addEventListener('message', (e) => {
      if (e.data && e.data.type === '@statelyai.connected') {
        connected = true;
        buffer.forEach((event) => {
          iframe.contentWindow.postMessage(event, '*');
        });
        buffer.length = 0;
      }
    });

    const ws = new WebSocket('ws://' + location.host);
    ws.onmessage = (event) => {
      const data = JSON.parse(event.data);
      if (connected) {
        iframe.contentWindow.postMessage(data, '*');
      } else {
        buffer.push(data);
      }
    };
  </script>
</body>
</html>`;
}

const INSPECTOR_PAGE = 'https://stately.ai/inspect';
const RELAY_REPLAY = 200;

interface Relay {
  port: number;
  stop(): Promise<void>;
}

/**
 * A relay like `createInspectorServer` from @statelyai/inspect/server (the page above over HTTP; on
 * its WebSocket, every message is passed to the other clients and the last 200 are replayed to new
 * ones), but bound to 127.0.0.1 on a free port, answering only pages served by itself (Host and
 * Origin checked, so other web sites cannot read the events), and not keeping the process alive.
 */
async function startRelay(): Promise<Relay> {
  let port = 0;
  const allowedHosts = () => [`127.0.0.1:${port}`, `localhost:${port}`];
  const server = http.createServer((req, res) => {
    if (!allowedHosts().includes(req.headers.host ?? '')) {
      res.writeHead(421, { 'Content-Type': 'text/plain' }).end('Misdirected request\n');
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' }).end(bridgePage(INSPECTOR_PAGE));
  });
  server.on('connection', (socket) => socket.unref());
  const wss = new WebSocketServer({
    server,
    perMessageDeflate: false,
    maxPayload: 16 * 1024 * 1024,
    verifyClient: (info: { origin?: string; req: http.IncomingMessage }) => {
      if (!allowedHosts().includes(info.req.headers.host ?? '')) return false;
      // Browsers always send an Origin; node clients (ferry itself) send none.
      return info.origin === undefined || allowedHosts().some((host) => info.origin === `http://${host}`);
    },
  });
  wss.on('error', () => {});
  const replay: string[] = [];
  wss.on('connection', (client) => {
    client.on('error', () => {});
    for (const message of replay) client.send(message);
    client.on('message', (data) => {
      const message = Array.isArray(data) ? Buffer.concat(data).toString() : Buffer.from(data as ArrayBuffer).toString();
      replay.push(message);
      if (replay.length > RELAY_REPLAY) replay.shift();
      for (const other of wss.clients) if (other !== client && other.readyState === WebSocket.OPEN) other.send(message);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.unref();
  port = (server.address() as net.AddressInfo).port;
  let stopping: Promise<void> | undefined;
  return {
    port,
    stop() {
      stopping ??= new Promise<void>((resolve) => {
        for (const client of wss.clients) client.terminate();
        wss.close();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return stopping;
    },
  };
}

// --- Starting ---------------------------------------------------------------------------------

/** Events that happen once per chunk of an upload. */
const CHUNK_EVENTS = new Set(['data', 'upload.progress', 'file.busy', 'file.writable']);
const CHUNK_SAMPLE = 256;

/**
 * Starts sending XState inspection events, sanitised, in @statelyai/inspect's WebSocket format:
 * to `target` (a `ws://` or `wss://` URL where something like a `createWebSocketReceiver` or a
 * Stately inspector relay listens), or with `true` to a relay started here on 127.0.0.1 whose page
 * shows them in the Stately inspector. Strings containing any of `secrets` are redacted.
 *
 * Nobody listening is fine: events are kept (the last 200) and sent once something does; nothing
 * here keeps the process alive or throws. Rejects only for a malformed URL or if the relay cannot
 * listen.
 */
export async function startInspection(target: string | true, secrets: readonly string[] = []): Promise<Inspection> {
  let relay: Relay | undefined;
  let url: string;
  if (target === true) {
    relay = await startRelay();
    url = `ws://127.0.0.1:${relay.port}`;
  } else {
    let parsed: URL;
    try {
      parsed = new URL(target);
    } catch {
      throw new TypeError(`Not an inspector URL: "${target}" (expected ws://host:port or wss://host:port).`);
    }
    if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') throw new TypeError(`The inspector URL must start with ws:// or wss:// (got "${target}").`);
    if (parsed.hash) throw new TypeError(`The inspector URL cannot have a #fragment (got "${target}").`);
    url = parsed.href;
  }

  const adapter = new SocketAdapter(url);
  const inspector = createInspector(adapter, { serializationDepthLimit: DEPTH_LIMIT });
  inspector.start();
  const options: SanitizeOptions = { secrets: [...secrets] };
  const clean = (value: unknown) => sanitize(value, options);
  let stopped = false;

  let chunkEvents = 0;
  const inspect = (event: InspectionEvent): void => {
    if (stopped) return;
    // An upload makes a handful of events per chunk; showing one in CHUNK_SAMPLE keeps the
    // inspector's picture of progress while costing the transfer almost nothing.
    if ('event' in event && CHUNK_EVENTS.has(event.event.type) && ++chunkEvents % CHUNK_SAMPLE !== 0) return;
    try {
      const prepared = sanitizeInspectionEvent(event, clean);
      if (prepared) inspector.inspect.next?.(prepared);
    } catch {
      // Inspection must never disturb the machines.
    }
  };

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      stopped = true;
      // The library converts each event on a setTimeout(0) of its own; let those run first.
      await new Promise((resolve) => setTimeout(resolve, 0));
      await adapter.close();
      await relay?.stop();
    })();
    return stopping;
  };

  const pageUrl = relay ? `http://127.0.0.1:${relay.port}` : undefined;
  const description = pageUrl
    ? `Inspector: open ${pageUrl} in a browser on this computer while ferry runs. The page loads the Stately inspector from ${INSPECTOR_PAGE}, so the browser needs internet access; ferry sends the (sanitised) events only to this local page.`
    : `Inspector: sending XState inspection events to ${url} (Stately inspector WebSocket format).`;
  return { inspect, stop, description, url, ...(pageUrl ? { pageUrl } : {}) };
}
