/**
 * The library's client: `createClient()` runs a client machine over a link (native or original
 * format) and turns its emitted events into settled promises. It loads nothing of the server, so a
 * program that only sends starts quickly.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { createActor, waitFor, type Actor, type InspectionEvent } from 'xstate';
import { clientMachine, DEFAULT_MAX_QUEUED, type ClientEmitted } from './machines/client.machine.js';
import { clientLink } from './machines/actors/client-link.js';
import { legacyLink } from './machines/actors/legacy-link.js';
import { ResumeBook } from './media/resume-book.js';
import { FerryError } from './transport/errors.js';
import { AGENT, DEFAULT_HOST, DEFAULT_LIMITS, DEFAULT_PORT, PROTOCOL_VERSION, type OpenResultInfo } from './transport/frames.js';
import { dialNet, dialTls } from './transport/net-transport.js';
import type { Dialer } from './transport/transport.js';

export interface ClientOptions {
  /** Server address. Default `127.0.0.1`. */
  host?: string;
  /** Server port. Default 9098. */
  port?: number;
  /** Delay before the first reconnect attempt. Default 250 ms. */
  retryInitialMs?: number;
  /** Longest delay between attempts. Default 5 s. */
  retryMaxMs?: number;
  /** Give up when the server has been unreachable this long. Default: never (`undefined`). */
  retryForMs?: number;
  /** The server must complete the handshake within this time. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Upload rate limit in bytes per second. */
  rateLimit?: number;
  /** Opens the connection; replaces host/port, e.g. for tests over in-memory transports. */
  dial?: Dialer;
  /** Speak the original tool's format to an original server (no handshake, ids or hashes). */
  legacy?: boolean;
  /**
   * A folder where the client remembers unfinished uploads, so running it again for the same file
   * resumes instead of starting over. Default: remembered only while this client lives.
   */
  stateDir?: string;
  /** Ping the server this often; two silent intervals drop the connection and reconnect. Default 10 s; 0 = off. */
  heartbeatMs?: number;
  /** Receives XState inspection events of the client's actors (e.g. for the Stately inspector). */
  inspect?: (event: InspectionEvent) => void;
  /** The server's token, answered to its challenge (it never crosses the wire). */
  token?: string;
  /** Connect with TLS: `true` trusts the system's CAs; `{ ca }` trusts this PEM CA instead. The host name is verified. */
  tls?: boolean | { ca: Buffer | string };
}

export interface UploadOptions {
  /** Name to offer instead of the file's own base name. */
  name?: string;
  /** Ask the server to open the file in the app for its kind once it is stored. */
  open?: boolean;
  /**
   * Store a new copy even when the server already holds this very file. By default a file sent
   * again, unchanged (same path, size and modification time), to a server that stored it offers its
   * SHA-256, and the server skips it if the same name still holds exactly that file. A fresh copy is
   * numbered as usual when the name is taken.
   */
  fresh?: boolean;
  /** Called as bytes are sent. */
  onProgress?(sent: number, total: number): void;
}

export interface UploadResult {
  /** The local path that was sent. */
  file: string;
  /** The name the server stored it under. */
  savedAs: string;
  bytes: number;
  sha256: string;
  /** Offset the upload continued from (0 for a fresh upload, and for a skipped one). */
  resumedFrom: number;
  /** True when the server already held this very file under `savedAs`, so nothing was sent or stored. */
  skipped: boolean;
  /** Present when opening was asked for: what was launched, or why not. */
  opened?: OpenResultInfo;
}

export interface FerryClient {
  /** Connects (retrying per the options); resolves once the server has welcomed this client. */
  connect(): Promise<void>;
  /** Sends a message; resolves with the text the server echoed back once it acknowledged it. */
  message(text: string): Promise<string>;
  /** Uploads a file; resolves once the server has verified and stored it. */
  upload(filePath: string, options?: UploadOptions): Promise<UploadResult>;
  /**
   * Asks the server to open a file already in its upload folder, by the name it was stored under.
   * Resolves with the outcome either way (`opened: false` with a code and a sentence when not).
   */
  open(name: string): Promise<OpenResultInfo>;
  /**
   * Says goodbye and closes; anything not yet confirmed is rejected with E_CLOSED. With `legacy`,
   * `sayExit` sends the original `exit` command first, which stops an original server entirely.
   */
  close(options?: { sayExit?: boolean }): Promise<void>;
  /** The root XState actor (the client machine), for inspection and its emitted events. */
  readonly actor: Actor<typeof clientMachine>;
}

type Settle = { resolve(value: unknown): void; reject(error: Error): void; onProgress?: (sent: number, total: number) => void; file?: string };

/** Creates a ferry client. It connects on `connect()` or on the first message or upload. */
export function createClient(options: ClientOptions = {}): FerryClient {
  const host = options.host ?? DEFAULT_HOST;
  const port = options.port ?? DEFAULT_PORT;
  const tlsOptions = options.tls;
  const dial: Dialer =
    options.dial ??
    (tlsOptions
      ? (signal) =>
          dialTls({ host, port, signal, timeoutMs: 10_000, ...(typeof tlsOptions === 'object' ? { ca: tlsOptions.ca } : {}) }).catch((err: NodeJS.ErrnoException) => {
            // A plain server drops a TLS hello without a word.
            if (err.code === 'ECONNRESET') throw new FerryError('E_TLS', 'The server closed the connection during the TLS handshake; it may not use TLS (leave out --tls and --tls-ca).', { cause: err });
            throw err;
          })
      : (signal) => dialNet({ host, port, signal, timeoutMs: 10_000 }));
  const book = new ResumeBook(options.stateDir ? path.join(options.stateDir, 'uploads.json') : undefined);
  // The dialler, the resume book and the token reach the link through its closure, never through
  // the machine's context or the link's input, which the inspector shows.
  const link = options.legacy
    ? legacyLink({ dial })
    : clientLink({
        dial,
        book,
        server: `${host}:${port}`,
        ...(options.token !== undefined ? { token: options.token } : {}),
      });
  const actor = createActor(clientMachine.provide({ actors: { link } }), {
    id: 'client',
    ...(options.inspect ? { inspect: options.inspect } : {}),
    input: {
      link: {
        // Fresh for every client: message ids start again at 1, so an old id would make new messages look handled.
        hello: { version: PROTOCOL_VERSION, agent: AGENT, clientId: randomUUID() },
        limits: DEFAULT_LIMITS,
        handshakeMs: options.handshakeTimeoutMs ?? 10_000,
        heartbeatMs: options.heartbeatMs ?? 10_000,
        ...(options.rateLimit ? { rateLimit: options.rateLimit } : {}),
      },
      retry: { initialMs: options.retryInitialMs ?? 250, maxMs: options.retryMaxMs ?? 5_000, forMs: options.retryForMs },
      maxQueued: DEFAULT_MAX_QUEUED,
      // The original server reads one command at a time, and the link makes up its answers.
      pipelineUploads: !options.legacy,
    },
  });
  const pending = new Map<number, Settle>();
  let nextId = 1;

  actor.on('replies', (e) => {
    for (const reply of e.replies) settle(reply.id, (p) => p.resolve(reply.text));
  });
  actor.on('uploaded', (e) =>
    settle(e.id, (p) => {
      const { savedAs, bytes, sha256, opened } = e.result;
      const skipped = e.result.skipped === true;
      const result: UploadResult = { file: p.file ?? '', savedAs, bytes, sha256, resumedFrom: skipped ? 0 : e.resumedFrom, skipped, ...(opened ? { opened } : {}) };
      p.resolve(result);
    }),
  );
  actor.on('opened', (e) => settle(e.id, (p) => p.resolve(e.result)));
  actor.on('failed', (e) => settle(e.id, (p) => p.reject(e.error)));
  actor.on('progress', (e) => pending.get(e.id)?.onProgress?.(e.sent, e.total));

  function settle(id: number, fn: (p: Settle) => void) {
    const p = pending.get(id);
    if (!p) return;
    pending.delete(id);
    fn(p);
  }

  let started = false;
  let closed = false;
  /** Starts the machine on first use; a finished client refuses new work instead of ignoring it. */
  function ensureStarted(): FerryError | undefined {
    if (closed || actor.getSnapshot().status === 'done') {
      return actor.getSnapshot().context.lastError ?? new FerryError('E_CLOSED', 'This client is closed; create a new one.');
    }
    if (!started) {
      started = true;
      actor.start();
    }
    return undefined;
  }

  // Messages made in one tick (say, as the acks of a batch resolve their promises) go to the
  // machine as one event; anything else handed over first sends them, so the order holds.
  let outbox: { id: number; text: string }[] = [];
  let outboxScheduled = false;
  function sendOutbox() {
    outboxScheduled = false;
    const messages = outbox;
    outbox = [];
    if (actor.getSnapshot().status !== 'active') {
      // The client finished in between (it gave up, or failed for good): these can go nowhere.
      const error = actor.getSnapshot().context.lastError ?? new FerryError('E_CLOSED', 'This client is closed; create a new one.');
      for (const m of messages) settle(m.id, (p) => p.reject(error));
      return;
    }
    if (messages.length === 1) actor.send({ type: 'message', ...messages[0]! });
    else if (messages.length > 1) actor.send({ type: 'messages', messages });
  }

  function track<T>(id: number, extra: Partial<Settle> = {}): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject, ...extra });
    });
  }

  return {
    actor,
    async connect() {
      const refused = ensureStarted();
      if (refused) throw refused;
      const snapshot = await waitFor(actor, (s) => s.matches({ online: 'connected' }) || s.status === 'done', { timeout: Infinity });
      if (snapshot.status === 'done') throw snapshot.context.lastError ?? new FerryError('E_CLOSED');
    },
    message(text: string) {
      const refused = ensureStarted();
      if (refused) return Promise.reject(refused);
      const id = nextId++;
      const result = track<string>(id);
      outbox.push({ id, text });
      if (!outboxScheduled) {
        outboxScheduled = true;
        queueMicrotask(sendOutbox);
      }
      return result;
    },
    upload(filePath: string, uploadOptions: UploadOptions = {}) {
      const refused = ensureStarted();
      if (refused) return Promise.reject(refused);
      const id = nextId++;
      const result = track<UploadResult>(id, { file: filePath, ...(uploadOptions.onProgress ? { onProgress: uploadOptions.onProgress } : {}) });
      sendOutbox();
      actor.send({
        type: 'upload',
        id,
        path: filePath,
        ...(uploadOptions.name ? { name: uploadOptions.name } : {}),
        ...(uploadOptions.open ? { open: true } : {}),
        ...(uploadOptions.fresh ? { fresh: true } : {}),
      });
      return result;
    },
    open(name: string) {
      const refused = ensureStarted();
      if (refused) return Promise.reject(refused);
      const id = nextId++;
      const result = track<OpenResultInfo>(id);
      sendOutbox();
      actor.send({ type: 'open', id, name });
      return result;
    },
    async close(closeOptions = {}) {
      closed = true;
      if (started && actor.getSnapshot().status === 'active') {
        sendOutbox();
        actor.send({ type: 'close', ...(closeOptions.sayExit ? { sayExit: true } : {}) });
        await waitFor(actor, (s) => s.status === 'done', { timeout: Infinity });
      }
      // What the servers stored is remembered across runs only once it is in the book's file.
      await book.flush();
    },
  };
}

export type { ClientEmitted };
