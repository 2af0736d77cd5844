/**
 * The library's server: `createServer()` wires a server machine to the world (the upload store, the
 * message journal, the listener, the media launcher) and gives it a small promise-based face.
 */
import path from 'node:path';
import { pino, type Logger } from 'pino';
import { createActor, waitFor, type Actor, type InspectionEvent } from 'xstate';
import { serverLogic, type serverMachine } from './machines/server.machine.js';
import { nativeAndLegacy, nativeOnly, type CodecFactory } from './machines/actors/session-connection.js';
import { UploadStore } from './media/upload-store.js';
import { defaultMediaApps, type MediaApps } from './media/launcher.js';
import { AuthThrottle, isLoopback, macMatches, newNonce } from './transport/auth.js';
import { MessageJournal } from './media/message-journal.js';
import { FerryError } from './transport/errors.js';
import { AGENT, DEFAULT_HOST, DEFAULT_LIMITS, DEFAULT_PORT } from './transport/frames.js';

export interface ServerOptions {
  /** Address to listen on. Default `127.0.0.1`. */
  host?: string;
  /** Port to listen on; 0 picks a free one. Default 9098. */
  port?: number;
  /** Where received files are saved. Default `./upload`. */
  uploadDir?: string;
  /** Largest message in bytes. Default 1 MiB. */
  maxMessage?: number;
  /** Largest control frame in bytes. Default 64 KiB. */
  maxFrame?: number;
  /** Largest file in bytes. Default: whatever free disk space allows. */
  maxFileSize?: number;
  /** A connection that has not completed its handshake by then is closed. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** On `close()`, how long transfers in flight may take to finish. Default 10 s. */
  graceMs?: number;
  /** pino logger to write the server's log lines to. Default: silent. */
  logger?: Logger;
  /** Accept clients of the original tool (recognised from their first byte). Default true. */
  legacy?: boolean;
  /** Receives XState inspection events of the server and every session (e.g. for the Stately inspector). */
  inspect?: (event: InspectionEvent) => void;
  /** Let clients ask for received images, audio and video to be opened on this machine. Default false. */
  open?: boolean;
  /** Command lines that open each kind; `{file}` stands for the file's path (else it is appended). Default: the platform's. */
  apps?: Partial<MediaApps>;
  /** Launches allowed per connection per minute. Default 10. */
  opensPerMinute?: number;
  /** Ping native clients this often and drop those silent for two intervals. Default 10 s; 0 = off. */
  heartbeatMs?: number;
  /** Close connections that send nothing for this long (original-format clients included). Default 10 min; 0 = off. */
  idleTimeoutMs?: number;
  /** Partial uploads untouched for this long are deleted (at start and hourly). Default 24 h. */
  partialTtlMs?: number;
  /** Clients must prove they hold this token (HMAC challenge and response; it never crosses the wire). */
  token?: string;
  /** With a token, still accept the original format (which cannot authenticate). Default false. */
  allowLegacy?: boolean;
  /** Listen beyond loopback without a token, knowingly. Default false: such a server refuses to start. */
  insecure?: boolean;
  /** Serve TLS with this PEM certificate chain and key. */
  tls?: { cert: Buffer | string; key: Buffer | string };
  /** Connections beyond this many are closed at once. Default 1000. */
  maxConnections?: number;
}

export interface FerryServer {
  /** Starts listening; resolves with the bound address. */
  listen(): Promise<{ host: string; port: number }>;
  /** Stops accepting, lets transfers in flight finish (up to the grace period), then closes. */
  close(): Promise<void>;
  /** The root XState actor (the server machine), for inspection. */
  readonly actor: Actor<typeof serverMachine>;
}

/** Creates a ferry server. Nothing listens until `listen()`. */
export function createServer(options: ServerOptions = {}): FerryServer {
  const limits = { maxMessage: options.maxMessage ?? DEFAULT_LIMITS.maxMessage, maxFrame: options.maxFrame ?? DEFAULT_LIMITS.maxFrame };
  const legacyAllowed = options.legacy !== false && (options.token === undefined || options.allowLegacy === true);
  const codecs: CodecFactory = legacyAllowed ? nativeAndLegacy(options.maxFileSize) : nativeOnly;
  const throttle = new AuthThrottle();
  const host = options.host ?? DEFAULT_HOST;
  const store = new UploadStore({
    root: path.resolve(options.uploadDir ?? 'upload'),
    ...(options.maxFileSize !== undefined ? { maxFileSize: options.maxFileSize } : {}),
  });
  const log = options.logger ?? pino({ level: 'silent' });
  const root = path.resolve(options.uploadDir ?? 'upload');
  const journal = new MessageJournal({ file: path.join(root, '.ferry', 'messages.journal') });
  const partialTtlMs = options.partialTtlMs ?? 24 * 3600_000;
  let sweeper: ReturnType<typeof setInterval> | undefined;
  const token = options.token;
  const logic = serverLogic({
    log,
    store,
    journal,
    codecs,
    now: () => Date.now(),
    ...(options.inspect ? { inspect: options.inspect } : {}),
    ...(options.tls ? { tls: { cert: Buffer.from(options.tls.cert), key: Buffer.from(options.tls.key) } } : {}),
    // The token stays in this closure: no machine holds it.
    ...(token !== undefined ? { admission: throttle, answerMatches: (nonce: string, mac: string) => macMatches(token, nonce, mac), newNonce } : {}),
  });
  const actor = createActor(logic, {
    id: 'server',
    ...(options.inspect ? { inspect: options.inspect } : {}),
    input: {
      host,
      port: options.port ?? DEFAULT_PORT,
      tls: options.tls !== undefined,
      maxConnections: options.maxConnections ?? 1000,
      graceMs: options.graceMs ?? 10_000,
      session: {
        limits,
        timeouts: {
          handshakeMs: options.handshakeTimeoutMs ?? 10_000,
          heartbeatMs: options.heartbeatMs ?? 10_000,
          idleMs: options.idleTimeoutMs ?? 600_000,
        },
        agent: AGENT,
        media: { enabled: options.open === true, apps: { ...defaultMediaApps(), ...options.apps }, perMinute: options.opensPerMinute ?? 10 },
        authRequired: token !== undefined,
        authFailureDelayMs: 1_000,
      },
    },
  });
  let listening: Promise<{ host: string; port: number }> | undefined;

  return {
    actor,
    listen() {
      listening ??= (async () => {
        if (!isLoopback(host) && options.token === undefined && options.insecure !== true) {
          throw new FerryError(
            'E_INSECURE',
            `Listening on ${host} would let anyone on the network send files${options.open ? ' and open apps' : ''}; set a token with --token (or FERRY_TOKEN), or pass --insecure to accept the risk.`,
          );
        }
        await store.init();
        journal.open();
        await store.expirePartials(partialTtlMs);
        sweeper = setInterval(() => void store.expirePartials(partialTtlMs).catch(() => undefined), Math.min(partialTtlMs, 3600_000));
        sweeper.unref();
        // The machine handles its sessions' failures; this is the last line of defence, so that no
        // error inside the server's actors can end the process.
        actor.subscribe({ error: (err) => log.error({ event: 'server-failed', err }, `the server failed: ${(err as Error)?.message ?? String(err)}`) });
        actor.start();
        const snapshot = await waitFor(actor, (s) => s.matches('listening') || s.status === 'done' || s.status === 'error');
        if (!snapshot.matches('listening')) {
          const error = snapshot.context.error as NodeJS.ErrnoException | undefined;
          const where = `${snapshot.context.settings.host}:${snapshot.context.settings.port}`;
          if (error?.code === 'EADDRINUSE') throw new FerryError('E_LISTEN', `Port ${snapshot.context.settings.port} is already in use; stop the other server or pick another --port.`, { cause: error });
          if (error?.code === 'EACCES') throw new FerryError('E_LISTEN', `Not allowed to listen on ${where}; pick a port above 1023.`, { cause: error });
          throw new FerryError('E_LISTEN', `Could not listen on ${where} (${error?.message ?? 'unknown error'}).`, { cause: error });
        }
        return snapshot.context.address!;
      })();
      return listening;
    },
    async close() {
      if (!listening) return;
      await listening.catch(() => undefined);
      clearInterval(sweeper);
      if (actor.getSnapshot().status === 'active') {
        actor.send({ type: 'stop' });
        await waitFor(actor, (s) => s.status === 'done', { timeout: Infinity });
      }
      journal.close();
      await store.close();
    },
  };
}
