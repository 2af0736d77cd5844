/**
 * The Transport adapter over real sockets. It sits on the hot path of large uploads, so it adds
 * nothing per chunk: `data` listeners are handed straight to the socket and writes go straight
 * through, without copies or wrapper allocations.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import type { Transport, TransportEvent, TransportEventMap } from './transport.js';

/** Options for wrapping a socket in a {@link NetTransport}. */
export interface NetTransportOptions {
  /**
   * Disable Nagle's algorithm (default true). Frames are small and latency-bound; writes that
   * belong together are already batched with `cork()`.
   */
  noDelay?: boolean;
}

/** Options for {@link dialNet}. */
export interface DialNetOptions extends NetTransportOptions {
  host: string;
  port: number;
  /** Aborting rejects the pending dial with an `AbortError` and discards the socket. */
  signal?: AbortSignal;
  /** Reject with an `ETIMEDOUT` error if the connection is not established within this time. */
  timeoutMs?: number;
  /**
   * Keep our sending side open after the peer half-closes (default false, like `node:net`).
   * Off by default so that a peer's FIN always leads to `close` even if nobody calls `end()`.
   */
  allowHalfOpen?: boolean;
}

type AnyListener = (...args: unknown[]) => void;

/**
 * A {@link Transport} over a connected `net.Socket` or `tls.TLSSocket`.
 *
 * `data` buffers are the socket's own, passed through untouched. Until the first `data` listener is
 * attached the socket stays paused, so bytes that arrive early wait in the socket instead of being
 * lost. An `error` with no listener is dropped rather than thrown: `close(true)` always follows, and a
 * broken connection must not take the process down.
 */
export class NetTransport implements Transport {
  /** The wrapped socket, for TLS details and socket options this interface does not cover. */
  readonly socket: net.Socket;
  private readonly events = new EventEmitter();
  private closed = false;
  private remoteText: string | undefined;
  /** Where the socket is connected, kept for {@link probeTls} (Node forgets it once the socket closes). */
  private readonly peer: { address: string; port: number } | undefined;

  constructor(socket: net.Socket, options: NetTransportOptions = {}) {
    this.socket = socket;
    if (options.noDelay ?? true) socket.setNoDelay(true);
    // Capture the address now: once the socket is closed Node can no longer report it.
    this.remoteText = formatRemote(socket);
    this.peer = socket.remoteAddress !== undefined && socket.remotePort !== undefined ? { address: socket.remoteAddress, port: socket.remotePort } : undefined;
    socket.on('drain', () => this.events.emit('drain'));
    socket.on('end', () => this.events.emit('end'));
    socket.on('error', (err: Error) => {
      if (this.events.listenerCount('error') > 0) this.events.emit('error', err);
    });
    socket.on('close', (hadError: boolean) => {
      if (this.closed) return;
      this.closed = true;
      this.events.emit('close', hadError);
    });
  }

  /** `host:port` of the peer; IPv6 addresses are bracketed (`[::1]:4000`). */
  get remote(): string {
    this.remoteText ??= formatRemote(this.socket);
    return this.remoteText ?? 'unknown';
  }

  get destroyed(): boolean {
    return this.closed || this.socket.destroyed;
  }

  get writableLength(): number {
    return this.socket.writableLength;
  }

  /** Writes after `end()` or `destroy()` are ignored and return false, as with the memory transport. */
  write(chunk: Uint8Array, done?: () => void): boolean {
    const socket = this.socket;
    if (socket.writableEnded || socket.destroyed) {
      if (done) queueMicrotask(done);
      return false;
    }
    // The socket calls back once the bytes are written, or with an error once they never will be.
    return done ? socket.write(chunk, () => done()) : socket.write(chunk);
  }

  cork(): void {
    this.socket.cork();
  }

  uncork(): void {
    this.socket.uncork();
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  end(): void {
    this.socket.end();
  }

  destroy(err?: Error): void {
    this.socket.destroy(err);
  }

  on<E extends TransportEvent>(event: E, listener: (...args: TransportEventMap[E]) => void): this {
    // `data` goes straight to the socket: no forwarding hop per chunk, and the socket only starts
    // flowing once someone is listening.
    if (event === 'data') this.socket.on('data', listener as AnyListener);
    else this.events.on(event, listener as AnyListener);
    return this;
  }

  off<E extends TransportEvent>(event: E, listener: (...args: TransportEventMap[E]) => void): this {
    if (event === 'data') this.socket.off('data', listener as AnyListener);
    else this.events.off(event, listener as AnyListener);
    return this;
  }

  /**
   * Opens a second, TLS connection to the same address and resolves true if a TLS handshake starts
   * there (the server's certificate is not checked: nothing is sent over it). False for a TLS socket,
   * and when nothing answers within `timeoutMs`.
   */
  probeTls(timeoutMs = 1_000): Promise<boolean> {
    const peer = this.peer;
    if (this.socket instanceof tls.TLSSocket || peer === undefined) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const probe = tls.connect({ host: peer.address, port: peer.port, rejectUnauthorized: false });
      const done = (answer: boolean): void => {
        clearTimeout(timer);
        probe.removeAllListeners();
        probe.on('error', () => undefined);
        probe.destroy();
        resolve(answer);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      probe.once('secureConnect', () => done(true));
      // A TLS alert (a client certificate demanded, no common cipher) is also a TLS server talking.
      probe.once('error', (err: NodeJS.ErrnoException) => done(/^ERR_SSL_.*ALERT/.test(err.code ?? '')));
      probe.once('close', () => done(false));
    });
  }
}

/**
 * Connects to `host:port` and resolves with a {@link NetTransport} once the connection is up.
 *
 * Rejects with the socket's own error (`ECONNREFUSED`, `ENOTFOUND`, ...), with an `AbortError`
 * (`code` `ABORT_ERR`, the signal's reason as `cause`) when `signal` aborts, or with an `ETIMEDOUT`
 * error after `timeoutMs`. On rejection the socket is destroyed.
 */
export function dialNet(opts: DialNetOptions): Promise<NetTransport> {
  return dialWith(opts, 'connect', () => net.connect({ host: opts.host, port: opts.port, allowHalfOpen: opts.allowHalfOpen ?? false }));
}

/**
 * Opens a socket with `open` and resolves once it emits `ready` (connect, or secureConnect for
 * TLS). Every way out goes through one place, so no listener or timer outlives the dial.
 */
function dialWith(opts: DialNetOptions, ready: 'connect' | 'secureConnect', open: () => net.Socket): Promise<NetTransport> {
  const { host, port, signal, timeoutMs } = opts;
  return new Promise<NetTransport>((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(signal));
      return;
    }
    const socket = open();
    let timer: NodeJS.Timeout | undefined;
    const settle = (err: Error | undefined): void => {
      socket.off(ready, onReady);
      socket.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
      if (timer !== undefined) clearTimeout(timer);
      if (err === undefined) {
        resolve(new NetTransport(socket, opts.noDelay === undefined ? {} : { noDelay: opts.noDelay }));
      } else {
        socket.destroy();
        reject(err);
      }
    };
    const onReady = (): void => settle(undefined);
    const onError = (err: Error): void => settle(err);
    const onAbort = (): void => settle(abortError(signal));

    socket.once(ready, onReady);
    socket.once('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => settle(timeoutError(host, port)), timeoutMs);
    }
  });
}

function formatRemote(socket: net.Socket): string | undefined {
  const address = socket.remoteAddress;
  if (address === undefined) return undefined;
  // An IPv6 address (IPv4-mapped ones too) is the only kind with a colon: no need for net.isIPv6's regex per connection.
  const host = address.includes(':') ? `[${address}]` : address;
  return `${host}:${socket.remotePort ?? 0}`;
}

function abortError(signal: AbortSignal | undefined): Error {
  return Object.assign(new Error('The connection attempt was aborted', { cause: signal?.reason }), {
    name: 'AbortError',
    code: 'ABORT_ERR',
  });
}

function timeoutError(host: string, port: number): Error {
  return Object.assign(new Error(`connect ETIMEDOUT ${host}:${port}`), {
    code: 'ETIMEDOUT',
    syscall: 'connect',
  });
}

/** Options for {@link dialTls}. */
export interface DialTlsOptions extends DialNetOptions {
  /** Trust these CA certificates (PEM) instead of the system's. */
  ca?: Buffer | string;
}

/**
 * Connects with TLS, verifying the server's certificate and its host name against `host`, and
 * resolves once the TLS handshake is done. Rejects with the TLS error (e.g.
 * `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, `ERR_TLS_CERT_ALTNAME_INVALID`) or the socket's.
 */
export function dialTls(opts: DialTlsOptions): Promise<NetTransport> {
  const { host, port } = opts;
  return dialWith(opts, 'secureConnect', () =>
    tls.connect({
      host,
      port,
      ...(net.isIP(host) ? {} : { servername: host }),
      ...(opts.ca ? { ca: opts.ca } : {}),
    }),
  );
}
