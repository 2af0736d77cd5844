/**
 * The Transport is the only thing the machines know about a connection: a duplex byte stream
 * with backpressure. It knows bytes, never meaning. Two adapters implement it: `net-transport.ts`
 * over `node:net`/`node:tls` sockets, and `memory-transport.ts`, an in-memory pair for tests that
 * can split, delay, stall, reset and half-close.
 */
export interface TransportEventMap {
  /** Bytes arrived. The buffer is owned by the receiver from now on. */
  data: [chunk: Buffer];
  /** The write buffer emptied after `write()` returned false. */
  drain: [];
  /** The peer half-closed: no more data will arrive. */
  end: [];
  /** The connection is gone; emitted exactly once, last. */
  close: [hadError: boolean];
  /** A transport error (reset, refused, TLS failure); `close` follows. */
  error: [err: Error];
}

export type TransportEvent = keyof TransportEventMap;

export interface Transport {
  /** `host:port` of the peer, for logs. */
  readonly remote: string;
  /**
   * Queue bytes; false means the peer is slow and the caller should wait for `drain`. `done`, when
   * given, runs once the transport holds `chunk` no longer (written, copied or dropped), so that its
   * memory may be reused; it runs exactly once, never inside `write()`.
   */
  write(chunk: Uint8Array, done?: () => void): boolean;
  /** Batch the writes that follow into one until `uncork()` (one syscall for header + payload). */
  cork(): void;
  uncork(): void;
  /** Stop and restart delivering `data` events (backpressure towards the peer). */
  pause(): void;
  resume(): void;
  /** Half-close: flush what is queued, then tell the peer no more data will come. */
  end(): void;
  /** Tear the connection down now. */
  destroy(err?: Error): void;
  /** True once `close` has been emitted or `destroy()` called. */
  readonly destroyed: boolean;
  /** Bytes queued for writing and not yet handed to the peer. */
  readonly writableLength: number;
  on<E extends TransportEvent>(event: E, listener: (...args: TransportEventMap[E]) => void): this;
  off<E extends TransportEvent>(event: E, listener: (...args: TransportEventMap[E]) => void): this;
  /**
   * For a plain connection the peer closed without sending a byte: resolves true when a TLS server
   * listens at the same address (a TLS server drops a plain client without a word). Optional.
   */
  probeTls?(): Promise<boolean>;
}

/** Opens a Transport to a server; injected into the client machine so tests can dial memory pairs. */
export type Dialer = (signal: AbortSignal) => Promise<Transport>;
