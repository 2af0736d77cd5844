import fs from 'node:fs/promises';
import path from 'node:path';
import { fromCallback } from 'xstate';
import { FerryError, ProtocolError } from '../../transport/errors.js';
import type { ClientToken, ErrorInfo, HelloInfo, Limits, OpenResultInfo, UploadResultInfo, WelcomeInfo } from '../../transport/frames.js';
import { ClientDecoder, encode, encodeMessages, preamble } from '../../transport/native-codec.js';
import type { Dialer, Transport } from '../../transport/transport.js';
import { PRELOAD_MAX_BYTES, readFailure, readHead, streamFile } from './file-source.js';
import { authMac } from '../../transport/auth.js';
import { describeNetworkError } from '../../transport/network-errors.js';
import { corkUntilLater } from '../../transport/corked-writer.js';
import { startHeartbeat, type Heartbeat } from '../../transport/heartbeat.js';
import type { LocalFile, ResumeBook } from '../../media/resume-book.js';

/** What one connection is opened with: plain data, which the client machine keeps in its settings. */
export interface ClientLinkInput {
  hello: HelloInfo;
  limits: Limits;
  /** The server must answer the hello within this time. */
  handshakeMs: number;
  /** Upload rate limit in bytes per second. */
  rateLimit?: number;
  /** Ping the server this often; two silent intervals mean it is gone. 0 turns heartbeats off. */
  heartbeatMs: number;
}

/**
 * What a link works with that is not data: the way to dial, the resume book and the token. They
 * are closed over when the link is made (`clientLink({ dial, book, server })`), so they never sit in
 * a machine's context or an actor's input, where the inspector would show them.
 */
export interface ClientLinkResources {
  dial: Dialer;
  /** Gives each file a stable key so an interrupted upload can resume, and remembers what was stored. */
  book: ResumeBook;
  /** Identifies the server in the book (`host:port`). */
  server: string;
  /** Answers the server's challenge when it asks for one. */
  token?: string;
}

export type ClientLinkEvent =
  | { type: 'link.up'; welcome: WelcomeInfo }
  /**
   * The connection is gone. `jitter`, uniform in [0, 1), spreads the next retry over half its delay:
   * chance comes in as data from the world, so the machine stays a function of its events.
   */
  | { type: 'link.down'; error: FerryError; jitter: number }
  /** Acknowledgements decoded from one read, in order. */
  | { type: 'server.ack'; acks: { id: number; text: string }[] }
  | { type: 'server.accept'; id: number; offset: number }
  | { type: 'server.done'; result: UploadResultInfo }
  | { type: 'server.opened'; id: number; result: OpenResultInfo }
  | { type: 'server.error'; error: ErrorInfo }
  | { type: 'upload.offered'; id: number; size: number }
  | { type: 'upload.progress'; id: number; sent: number; total: number }
  | { type: 'upload.sent'; id: number; sha256: string }
  | { type: 'upload.unreadable'; id: number; error: FerryError };

export type ClientLinkCommand =
  | { type: 'send-messages'; messages: { id: number; text: string }[] }
  /** `fresh`: store a new copy even if the server holds this very file already (no `sha256` in the offer). */
  | { type: 'offer-upload'; id: number; path: string; name: string; open?: boolean; fresh?: boolean }
  | { type: 'send-open'; id: number; name: string }
  | { type: 'stream-upload'; id: number; offset: number }
  /** `sayExit`: in the original format, send `exit` first (an original server then stops entirely). */
  | { type: 'close'; sayExit?: boolean };

const PROGRESS_STEP = 1024 * 1024;
/** Uploads smaller than this are not resumable: starting over costs less than the bookkeeping. */
export const RESUME_MIN_BYTES = 1024 * 1024;

interface OpenUpload {
  id: number;
  path: string;
  size: number;
  file: LocalFile;
  abort: AbortController;
  /** A small file's content, read while its offer is on the way. */
  preloaded?: Promise<Buffer>;
}

/**
 * The client's end of one connection: dials, says hello, turns the machine's commands into frames
 * and the server's frames into events. It is invoked for as long as the client is online, so when
 * it stops (a drop, a retry, a close) the socket and any upload in progress stop with it. The
 * client machine is given one with `.provide({ actors: { link: clientLink(resources) } })`.
 */
export const clientLink = (resources: ClientLinkResources) => fromCallback<ClientLinkCommand, ClientLinkInput, ClientLinkEvent>(({ input, sendBack, receive }) => {
  const dialing = new AbortController();
  const decoder = new ClientDecoder(input.limits);
  /** Resume keys of uploads offered on this connection, by upload id. */
  const uploadKeys = new Map<number, string>();
  /** The local files of uploads offered and not yet answered, by upload id. */
  const offeredFiles = new Map<number, LocalFile>();
  /** SHA-256 of each file sent in full on this connection (by path, size and mtime), for a repeat that follows it. */
  const sentHashes = new Map<string, string>();
  let transport: Transport | undefined;
  let up = false;
  let down = false;
  let fatal: FerryError | undefined;
  let upload: OpenUpload | undefined;
  let handshakeTimer: ReturnType<typeof setTimeout> | undefined;
  let heartbeat: Heartbeat | undefined;
  let holdWrites: (() => void) | undefined;

  const goDown = (error: FerryError) => {
    if (down) return;
    down = true;
    clearTimeout(handshakeTimer);
    heartbeat?.stop();
    upload?.abort.abort(error);
    upload = undefined;
    transport?.destroy();
    sendBack({ type: 'link.down', error: fatal ?? error, jitter: Math.random() });
  };

  let acks: { id: number; text: string }[] = [];
  const flushAcks = () => {
    if (acks.length === 0) return;
    const batch = acks;
    acks = [];
    sendBack({ type: 'server.ack', acks: batch });
  };

  const onToken = (token: ClientToken) => {
    switch (token.type) {
      case 'welcome':
        up = true;
        decoder.setLimits({ maxMessage: Math.max(token.info.maxMessage, input.limits.maxMessage), maxFrame: Math.max(token.info.maxFrame, input.limits.maxFrame) });
        clearTimeout(handshakeTimer);
        beginHeartbeat();
        return sendBack({ type: 'link.up', welcome: token.info });
      case 'message-ack':
        // Consecutive acks are collected by the reader and handed over together.
        acks.push({ id: token.id, text: token.text });
        return;
      case 'upload-accept':
        return sendBack({ type: 'server.accept', id: token.id, offset: token.offset });
      case 'upload-done': {
        const stored = offeredFiles.get(token.result.id);
        offeredFiles.delete(token.result.id);
        if (stored) void resources.book.rememberStored(stored, resources.server, { sha256: token.result.sha256, savedAs: token.result.savedAs });
        // A skipped upload is over without a byte sent.
        if (upload?.id === token.result.id) upload = undefined;
        if (uploadKeys.has(token.result.id)) {
          void resources.book.forget(uploadKeys.get(token.result.id)!);
          uploadKeys.delete(token.result.id);
        }
        return sendBack({ type: 'server.done', result: token.result });
      }
      case 'open-result':
        return sendBack({ type: 'server.opened', id: token.id, result: token.result });
      case 'error':
        if (token.error.id === undefined) {
          // A connection-level error: the server closes next; report this instead of a bare drop.
          fatal = new FerryError(knownCode(token.error.code), `The server refused the connection: ${token.error.message}`);
          return;
        }
        if (upload?.id === token.error.id) {
          upload.abort.abort(new FerryError('E_CONNECTION_LOST', 'The upload was refused.'));
          upload = undefined;
        }
        offeredFiles.delete(token.error.id);
        if (uploadKeys.has(token.error.id)) {
          // Refused or corrupt: the next attempt must start from scratch under a new key.
          void resources.book.forget(uploadKeys.get(token.error.id)!);
          uploadKeys.delete(token.error.id);
        }
        return sendBack({ type: 'server.error', error: token.error });
      case 'challenge':
        if (resources.token === undefined) {
          fatal = new FerryError('E_AUTH_REQUIRED', 'The server requires a token; pass --token or set FERRY_TOKEN.');
          return goDown(fatal);
        }
        transport?.write(encode.auth(authMac(resources.token, token.nonce)));
        return;
      case 'ping':
        transport?.write(encode.pong(token.payload));
        return;
      case 'pong':
      case 'bye':
        return;
    }
  };

  /** Pings every interval; any bytes from the server count as a sign of life (the welcome, first). */
  const beginHeartbeat = () => {
    if (input.heartbeatMs <= 0) return;
    heartbeat = startHeartbeat({
      everyMs: input.heartbeatMs,
      ping: () => transport?.write(encode.ping()),
      onSilent: (ms) => goDown(new FerryError('E_TIMEOUT', `The server stopped answering (nothing for ${Math.round(ms / 1000)} s); reconnecting.`)),
    });
    heartbeat.heard();
  };

  const attach = (t: Transport) => {
    transport = t;
    // Messages handed over in one tick leave in one write: corked until the tick ends.
    holdWrites = corkUntilLater(t);
    let received = false;
    t.on('data', (chunk) => {
      if (down) return;
      heartbeat?.heard();
      let tokens: ClientToken[];
      try {
        tokens = decoder.feed(chunk);
      } catch (err) {
        const error = err instanceof ProtocolError && err.code === 'E_BAD_PREAMBLE' && !received ? notFerry(chunk, t.remote) : describeNetworkError(err);
        fatal = error;
        return goDown(error);
      } finally {
        received = true;
      }
      for (const token of tokens) {
        if (down) return;
        if (token.type !== 'message-ack') flushAcks();
        onToken(token);
      }
      if (!down) flushAcks();
    });
    t.on('error', (err) => goDown(describeNetworkError(err)));
    t.on('end', () => t.end());
    t.on('close', () => {
      if (down) return;
      if (up) return goDown(new FerryError('E_CONNECTION_LOST', 'The server closed the connection.'));
      const closed = new FerryError('E_CONNECTION_LOST', 'The server closed the connection during the handshake (if it uses TLS, add --tls or --tls-ca).');
      // A TLS server drops a plain hello without a word; a ferry server that is restarting does the
      // same, so ask: only a TLS server is a mistake that retrying will not fix.
      if (received || !t.probeTls) return goDown(closed);
      void t.probeTls().then(
        (isTls) => {
          if (isTls) fatal = tlsServer(t.remote);
          goDown(closed);
        },
        () => goDown(closed),
      );
    });
    t.cork();
    t.write(preamble());
    t.write(encode.hello(input.hello));
    t.uncork();
    handshakeTimer = setTimeout(() => {
      goDown(new FerryError('E_TIMEOUT', `The server did not complete the handshake within ${input.handshakeMs} ms; is it a ferry server (for the original tool, add --legacy)?`));
    }, input.handshakeMs);
  };

  resources.dial(dialing.signal).then(
    (t) => {
      if (down) return t.destroy();
      attach(t);
    },
    (err: unknown) => goDown(describeNetworkError(err)),
  );

  const offer = async (id: number, filePath: string, name: string, open: boolean, fresh: boolean) => {
    let size: number;
    let key: string | undefined;
    let file: LocalFile;
    let sha256: string | undefined;
    try {
      const stat = await fs.stat(filePath);
      if (!stat.isFile()) throw new Error('not a regular file');
      size = stat.size;
      file = { path: filePath, size, mtimeMs: stat.mtimeMs };
      // Small files are cheaper to send again than to keep books on.
      key = size >= RESUME_MIN_BYTES ? await resources.book.keyFor(file, resources.server) : undefined;
      // The same file offered again while its first upload is in flight: a fresh copy must not take
      // over that upload's key (the server would answer from the first one's record).
      if (fresh && key !== undefined && [...uploadKeys.values()].includes(key)) key = undefined;
      // An unchanged file this server stored before offers its hash, so the server can skip it.
      sha256 = fresh ? undefined : (sentHashes.get(fileKey(file)) ?? (await resources.book.storedCopy(file, resources.server))?.sha256);
    } catch (err) {
      sendBack({ type: 'upload.unreadable', id, error: new FerryError('E_LOCAL_FILE', `${filePath} cannot be read (${(err as Error).message}); check the path.`) });
      return;
    }
    if (down || !transport) return;
    // A small file is read while the offer travels and the server opens its side, so that the
    // accept finds it ready to send. (A read error surfaces when the upload streams, as it would.)
    const preloaded = size > 0 && size <= PRELOAD_MAX_BYTES ? readHead(filePath, size) : undefined;
    preloaded?.catch(() => undefined);
    upload = { id, path: filePath, size, file, abort: new AbortController(), ...(preloaded ? { preloaded } : {}) };
    if (key !== undefined) uploadKeys.set(id, key);
    offeredFiles.set(id, file);
    transport.write(
      encode.uploadOffer({
        id,
        name: name || path.basename(filePath),
        size,
        ...(key !== undefined ? { key } : {}),
        ...(sha256 !== undefined ? { sha256 } : {}),
        ...(open ? { open: true } : {}),
      }),
    );
    sendBack({ type: 'upload.offered', id, size });
  };

  const stream = (id: number, offset: number) => {
    const current = upload;
    let reported = -PROGRESS_STEP;
    if (!current || current.id !== id || !transport) return;
    if (offset > current.size) {
      sendBack({ type: 'upload.unreadable', id, error: new FerryError('E_UPLOAD_SIZE', `The server reports ${offset} bytes of a ${current.size}-byte file; send it again as a new upload.`) });
      return;
    }
    streamFile({
      offset,
      path: current.path,
      id,
      size: current.size,
      transport,
      signal: current.abort.signal,
      onProgress: (sent) => {
        // Progress is for people: at most every 1 MiB (and the end), not every chunk.
        if (sent - reported < PROGRESS_STEP && sent !== current.size) return;
        reported = sent;
        sendBack({ type: 'upload.progress', id, sent, total: current.size });
      },
      ...(input.rateLimit ? { rateLimit: input.rateLimit } : {}),
      ...(current.preloaded ? { preloaded: current.preloaded } : {}),
    }).then(
      ({ sha256 }) => {
        if (current.abort.signal.aborted) return;
        // Everything is on the wire: from here on the connection is between frames again.
        if (upload === current) upload = undefined;
        sentHashes.set(fileKey(current.file), sha256);
        sendBack({ type: 'upload.sent', id, sha256 });
      },
      (err: unknown) => {
        if (current.abort.signal.aborted) return;
        const { error, reset } = readFailure(err);
        sendBack({ type: 'upload.unreadable', id, error });
        goDown(reset);
      },
    );
  };

  receive((command) => {
    if (down) return;
    switch (command.type) {
      case 'send-messages':
        if (!transport) break;
        holdWrites?.();
        // A batch leaves as one buffer: one write for the socket, not one per message.
        transport.write(encodeMessages(command.messages));
        break;
      case 'offer-upload':
        void offer(command.id, command.path, command.name, command.open === true, command.fresh === true);
        break;
      case 'send-open':
        transport?.write(encode.open(command.id, command.name));
        break;
      case 'stream-upload':
        stream(command.id, command.offset);
        break;
      case 'close':
        if (transport && !transport.destroyed) {
          if (upload) {
            // Mid-upload a BYE would land between DATA frames: stop at a frame boundary and just end.
            upload.abort.abort(new FerryError('E_CLOSED', 'The client was closed during the upload.'));
            upload = undefined;
          } else {
            transport.write(encode.bye());
          }
          transport.end();
        } else {
          goDown(new FerryError('E_CLOSED', 'The client was closed.'));
        }
        break;
    }
  });

  return () => {
    down = true;
    clearTimeout(handshakeTimer);
    heartbeat?.stop();
    dialing.abort();
    upload?.abort.abort(new FerryError('E_CLOSED', 'The client was closed.'));
    transport?.destroy();
  };
});

function tlsServer(remote: string): FerryError {
  return new FerryError('E_TLS', `The server at ${remote} speaks TLS; add --tls (or --tls-ca with its certificate authority).`);
}

/** The first bytes of a server that is not ferry, in one sentence saying what it seems to be. */
function notFerry(chunk: Buffer, remote: string): FerryError {
  if (chunk[0] === 0x15 || chunk[0] === 0x16) return tlsServer(remote);
  const text = chunk.subarray(0, 60).toString('latin1').split(/\r?\n/)[0]!;
  if (text.startsWith('HTTP/')) {
    return new ProtocolError('E_BAD_PREAMBLE', `The server at ${remote} does not speak the ferry protocol: it is a web server (it answered "${text}"); check --host and --port.`);
  }
  const said = /^[\x20-\x7e]{3,}$/.test(text) ? ` (it answered "${text}")` : '';
  return new ProtocolError('E_BAD_PREAMBLE', `The server at ${remote} does not speak the ferry protocol${said}; check --host and --port, or add --legacy if it is the original tool.`);
}

function fileKey(file: LocalFile): string {
  return `${path.resolve(file.path)}\n${file.size}\n${file.mtimeMs}`;
}

function knownCode(code: string): FerryError['code'] {
  return /^E_[A-Z0-9_]+$/.test(code) ? (code as FerryError['code']) : 'E_CONNECTION_LOST';
}
