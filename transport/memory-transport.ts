/**
 * An in-memory Transport pair for tests, with the faults a real network produces: writes split
 * into small pieces, slow or frozen readers, resets and half-closes.
 *
 * Delivery semantics:
 * - Bytes move in microtasks (`queueMicrotask`), one piece per microtask, never inside `write()`.
 *   Microtasks rather than `setImmediate` so that tests using fake timers still see data flow
 *   without advancing the clock; one macrotask turn is enough for everything deliverable to arrive.
 * - Each write arrives as its own chunk (pieces of at most `split` bytes when set); writes are never
 *   merged, except those batched between `cork()` and `uncork()`, which arrive as one.
 * - Bytes are delivered only while the receiver has a `data` listener, is not paused, and its
 *   sender is not stalled; otherwise they wait in the sender's queue, which `writableLength`,
 *   `write()`'s return value and `drain` report.
 * - `write()` copies the chunk, so the writer may reuse its buffer and the receiver owns what it gets.
 */
import { EventEmitter } from 'node:events';
import type { Transport, TransportEvent, TransportEventMap } from './transport.js';

/** Options shared by both ends of a {@link memoryPair}. */
export interface MemoryPairOptions {
  /** Deliver each write as pieces of at most this many bytes (1 = byte by byte). Unset: whole writes. */
  splitAt?: number;
  /** `write()` returns false while more than this many bytes wait for the peer. Default 64 KiB. */
  highWaterMark?: number;
}

const DEFAULT_HIGH_WATER_MARK = 64 * 1024;

type AnyListener = (...args: unknown[]) => void;

let nextEndId = 1;

/**
 * One end of a {@link memoryPair}. Besides the {@link Transport} interface it offers fault controls
 * (`split`, `stall()`, `reset()`) and byte counters for assertions.
 */
export class MemoryTransport implements Transport {
  private readonly events = new EventEmitter();
  private readonly id: number;
  private readonly highWaterMark: number;
  // Set right after construction by `createPair`; the two ends are created together.
  private peer!: MemoryTransport;
  private splitAt: number | undefined;

  /** Pieces written by this end and not yet delivered to the peer. */
  private outbox: Buffer[] = [];
  private outboxBytes = 0;
  private corkDepth = 0;
  private corkQueue: Buffer[] = [];
  private corkBytes = 0;
  private needDrain = false;
  private pumpScheduled = false;

  private paused = false;
  private stalled = false;
  /** `end()` was called: no more writes. */
  private writeEnded = false;
  /** Our FIN waits behind the outbox. */
  private finPending = false;
  /** The peer's FIN reached us. */
  private readEnded = false;
  private isDestroyed = false;
  private closed = false;
  private written = 0;
  private received = 0;

  private constructor(highWaterMark: number, splitAt: number | undefined) {
    this.id = nextEndId++;
    this.highWaterMark = highWaterMark;
    this.splitAt = splitAt;
  }

  /** Use {@link memoryPair}. */
  static createPair(opts: MemoryPairOptions = {}): [MemoryTransport, MemoryTransport] {
    const highWaterMark = opts.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
    if (!Number.isFinite(highWaterMark) || highWaterMark < 0) {
      throw new RangeError(`highWaterMark must be a non-negative number, got ${highWaterMark}`);
    }
    checkSplit(opts.splitAt);
    const a = new MemoryTransport(highWaterMark, opts.splitAt);
    const b = new MemoryTransport(highWaterMark, opts.splitAt);
    a.peer = b;
    b.peer = a;
    return [a, b];
  }

  /** The peer's address, `memory:<n>`; unique per end within the process. */
  get remote(): string {
    return `memory:${this.peer.id}`;
  }

  get destroyed(): boolean {
    return this.isDestroyed;
  }

  get writableLength(): number {
    return this.outboxBytes + this.corkBytes;
  }

  /** Bytes accepted by `write()` on this end. */
  get writtenBytes(): number {
    return this.written;
  }

  /** Bytes delivered to this end's `data` listeners. */
  get receivedBytes(): number {
    return this.received;
  }

  /**
   * Maximum piece size for this end's writes towards the peer (`undefined`: whole writes). Changing
   * it also affects bytes already queued.
   */
  get split(): number | undefined {
    return this.splitAt;
  }

  set split(n: number | undefined) {
    checkSplit(n);
    this.splitAt = n;
  }

  /** Queues a copy of `chunk`. Ignored, returning false, after `end()`, `destroy()` or a reset. */
  write(chunk: Uint8Array, done?: () => void): boolean {
    // The chunk is copied (or dropped) at once, so it is free again as soon as this returns.
    if (done) queueMicrotask(done);
    if (this.writeEnded || this.isDestroyed) return false;
    if (chunk.byteLength > 0) {
      const copy = Buffer.from(chunk);
      this.written += copy.length;
      // A destroyed peer can never read these bytes; like a socket that has not yet seen the RST,
      // the write is accepted and the data vanishes.
      if (!this.peer.isDestroyed) {
        if (this.corkDepth > 0) {
          this.corkQueue.push(copy);
          this.corkBytes += copy.length;
        } else {
          this.enqueue(copy);
        }
      }
    }
    if (this.writableLength > this.highWaterMark) {
      this.needDrain = true;
      return false;
    }
    return true;
  }

  cork(): void {
    if (this.isDestroyed) return;
    this.corkDepth++;
  }

  uncork(): void {
    if (this.corkDepth === 0) return;
    this.corkDepth--;
    if (this.corkDepth > 0 || this.corkQueue.length === 0) return;
    const queued = this.corkQueue;
    const merged = queued.length === 1 ? queued[0]! : Buffer.concat(queued, this.corkBytes);
    this.corkQueue = [];
    this.corkBytes = 0;
    this.enqueue(merged);
  }

  /** Stops delivering `data` to this end; the peer's writes queue up and it sees backpressure. */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.peer.schedulePump();
  }

  /**
   * Half-close: once everything written so far is delivered, the peer gets `end`. The peer may keep
   * writing to us; when both sides have ended, both get `close(false)`.
   */
  end(): void {
    if (this.writeEnded || this.isDestroyed) return;
    this.writeEnded = true;
    if (this.corkDepth > 0) {
      this.corkDepth = 1;
      this.uncork();
    }
    this.finPending = true;
    this.schedulePump();
  }

  /**
   * Closes this end at once: `error` (if `err` is given) then `close(hadError)` follow in a microtask,
   * and bytes the peer had queued for us are dropped. The peer sees what a TCP FIN would show: the
   * bytes we had already written, then `end`, then `close(false)`. Use {@link reset} for an abortive
   * close that the peer notices as an error.
   */
  destroy(err?: Error): void {
    if (this.isDestroyed) return;
    this.isDestroyed = true;
    this.dropCorked();
    const peer = this.peer;
    peer.dropOutbox();
    if (!peer.isDestroyed) {
      if (!peer.readEnded) {
        this.finPending = true;
        this.schedulePump();
      } else {
        queueMicrotask(() => peer.finishClose(false));
      }
    }
    queueMicrotask(() => {
      if (err !== undefined) this.emitError(err);
      this.finishClose(err !== undefined);
    });
  }

  /**
   * Drops the connection like a TCP RST: everything queued in either direction is discarded and
   * each end that is still open gets `error` (`code` `ECONNRESET`) then `close(true)`.
   */
  reset(): void {
    const ends: MemoryTransport[] = [this, this.peer];
    const open = ends.filter((end) => !end.isDestroyed);
    for (const end of ends) {
      end.isDestroyed = true;
      end.dropCorked();
      end.dropOutbox();
    }
    queueMicrotask(() => {
      for (const end of open) {
        end.emitError(connectionReset());
        end.finishClose(true);
      }
    });
  }

  /**
   * Freezes the peer for this end's data, like a process that stopped reading: nothing more is
   * delivered to it, this end's queue grows, and the peer's own `resume()` does not help. The
   * connection stays open. `a.stall()` therefore stalls `a`'s peer.
   */
  stall(): void {
    this.stalled = true;
  }

  /** Lifts {@link stall}; queued bytes flow again. */
  unstall(): void {
    this.stalled = false;
    this.schedulePump();
  }

  on<E extends TransportEvent>(event: E, listener: (...args: TransportEventMap[E]) => void): this {
    this.events.on(event, listener as AnyListener);
    // Bytes written before anyone listened have been waiting for this.
    if (event === 'data') this.peer.schedulePump();
    return this;
  }

  off<E extends TransportEvent>(event: E, listener: (...args: TransportEventMap[E]) => void): this {
    this.events.off(event, listener as AnyListener);
    return this;
  }

  private enqueue(buf: Buffer): void {
    this.outbox.push(buf);
    this.outboxBytes += buf.length;
    this.schedulePump();
  }

  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    queueMicrotask(this.pump);
  }

  /** Delivers one piece (or our FIN) to the peer, then reschedules itself while there is more. */
  private readonly pump = (): void => {
    this.pumpScheduled = false;
    const receiver = this.peer;
    if (this.stalled || receiver.paused || receiver.isDestroyed) return;
    const head = this.outbox[0];
    if (head === undefined) {
      if (this.finPending) {
        this.finPending = false;
        receiver.receiveEnd();
      }
      return;
    }
    if (receiver.events.listenerCount('data') === 0) return;

    let piece = head;
    const split = this.splitAt;
    if (split !== undefined && head.length > split) {
      piece = head.subarray(0, split);
      this.outbox[0] = head.subarray(split);
    } else {
      this.outbox.shift();
    }
    this.outboxBytes -= piece.length;
    receiver.received += piece.length;
    // Reschedule before handing the piece over, so a throwing listener cannot wedge the stream.
    if (this.outbox.length > 0 || this.finPending) this.schedulePump();
    receiver.events.emit('data', piece);
    if (this.needDrain && this.writableLength === 0 && !this.isDestroyed) {
      this.needDrain = false;
      this.events.emit('drain');
    }
  };

  private receiveEnd(): void {
    this.readEnded = true;
    this.events.emit('end');
    const sender = this.peer;
    if (sender.isDestroyed) {
      this.finishClose(false);
    } else if (sender.readEnded) {
      // Both FINs have now been delivered.
      this.finishClose(false);
      sender.finishClose(false);
    }
  }

  private finishClose(hadError: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.isDestroyed = true;
    this.events.emit('close', hadError);
  }

  private dropOutbox(): void {
    this.outbox = [];
    this.outboxBytes = 0;
    this.finPending = false;
    this.needDrain = false;
  }

  private dropCorked(): void {
    this.corkQueue = [];
    this.corkBytes = 0;
    this.corkDepth = 0;
  }

  // An unheard error is dropped: `close(true)` follows, as with NetTransport.
  private emitError(err: Error): void {
    if (this.events.listenerCount('error') > 0) this.events.emit('error', err);
  }
}

/**
 * Creates two connected in-memory transports; what one writes, the other receives. See the module
 * notes above for the delivery semantics.
 */
export function memoryPair(opts?: MemoryPairOptions): [MemoryTransport, MemoryTransport] {
  return MemoryTransport.createPair(opts);
}

function checkSplit(n: number | undefined): void {
  if (n !== undefined && (!Number.isInteger(n) || n < 1)) {
    throw new RangeError(`split must be a positive integer, got ${n}`);
  }
}

function connectionReset(): Error {
  return Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET', syscall: 'read' });
}
