/**
 * Sends @statelyai/inspect's events to a WebSocket, in place of the library's own WebSocket adapter,
 * which keeps the process alive and retries forever when nobody listens, and cannot be stopped
 * while it waits to retry.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { StatelyInspectionEvent } from '@statelyai/inspect';
import { corkUntilLater } from '../../transport/corked-writer.js';
import { WebSocket, stableStringify, type WsClient } from './ws.js';

/** The library's default `serializationDepthLimit`; its WebSocket adapter stringifies with it. */
export const DEPTH_LIMIT = 10;
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
export class SocketAdapter {
  private socket: WsClient | undefined;
  /**
   * Corks the TCP/TLS socket under `socket` until this turn of the event loop ends: the library
   * hands over each event from a timer of its own, and the timers of one turn leave in one write.
   */
  private hold: (() => void) | undefined;
  private deferred: StatelyInspectionEvent[] = [];
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = RETRY_MIN_MS;
  private stopped = false;
  private closing: Promise<void> | undefined;
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
      this.hold?.();
      socket.send(text);
    } catch {
      this.dropped++;
    }
  }

  private connect(): void {
    let socket: WsClient;
    try {
      socket = new WebSocket(this.url, {
        perMessageDeflate: false,
        handshakeTimeout: 10_000,
        createConnection: unrefConnect(this.secure, (stream) => (this.hold = corkUntilLater(stream, setImmediate))),
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
      this.hold = undefined;
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
