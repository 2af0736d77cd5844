import { fromCallback } from 'xstate';
import { FerryError, ProtocolError } from '../../transport/errors.js';
import type { ServerToken, Limits } from '../../transport/frames.js';
import { detectFormat, type WireFormat } from '../../transport/detect.js';
import { ServerDecoder, nativeConnectionReplies } from '../../transport/native-codec.js';
import { LegacyServerDecoder, legacyReplies } from '../../transport/legacy-codec.js';
import type { ReplyEncoder, SessionReply } from '../../transport/replies.js';
import type { Transport } from '../../transport/transport.js';
import { corkUntilLater } from '../../transport/corked-writer.js';
import { startHeartbeat, type Heartbeat } from '../../transport/heartbeat.js';

/** A server-side decoder of either wire format. */
export interface ServerTokenDecoder {
  feed(chunk: Buffer): ServerToken[];
  readonly idle: boolean;
}

export interface ServerCodec {
  decoder: ServerTokenDecoder;
  replies: ReplyEncoder;
}

/** Builds the codec for a detected format; returning an error refuses the connection. */
export type CodecFactory = (format: WireFormat, limits: Limits) => ServerCodec | FerryError;

export const nativeOnly: CodecFactory = (format, limits) =>
  format === 'native'
    ? { decoder: new ServerDecoder(limits), replies: nativeConnectionReplies() }
    : new FerryError('E_LEGACY_REFUSED', 'This server does not accept the original wire format; use a ferry client.');

/** Both formats: native clients and the original tool's clients alike. */
export function nativeAndLegacy(maxFile?: number): CodecFactory {
  return (format, limits) =>
    format === 'native'
      ? { decoder: new ServerDecoder(limits), replies: nativeConnectionReplies() }
      : { decoder: new LegacyServerDecoder({ ...limits, ...(maxFile !== undefined ? { maxFile } : {}) }), replies: legacyReplies };
}

export interface SessionConnectionInput {
  transport: Transport;
  limits: Limits;
  codecs: CodecFactory;
  /** Stop reading while this many reply bytes wait to be sent (a client that does not read its acks). */
  maxPendingReplyBytes?: number;
  /**
   * Native clients are pinged this often and dropped after two silent intervals (time spent not
   * reading, because of our own backpressure, does not count). 0 turns it off. The original format
   * has no pings, so its connections are never dropped for silence.
   */
  heartbeatMs?: number;
  /** A connection that sends nothing for this long (while we are reading) is closed. 0 = never. */
  idleMs?: number;
  /**
   * `handshake.expired` is reported this long after the connection opened, unless a welcome went out
   * first. 0 or absent: never.
   */
  handshakeMs?: number;
  /** Times the handshake (default: the global timers); a test passes XState's `SimulatedClock`. */
  clock?: Timers;
}

/** What times a handshake: the shape of XState's `Clock`, which its `SimulatedClock` has too. */
export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

type MessageToken = Extract<ServerToken, { type: 'message' }>;

/**
 * Events the connection sends to its session. Tokens are passed on as they are, except that a run
 * of two or more whole messages decoded from one read is handed over as one `messages` event.
 */
export type SessionConnectionEvent =
  | Exclude<ServerToken, { type: 'hello' }>
  /** The client's hello, with the wire format its first byte showed (the original format's is implied). */
  | (Extract<ServerToken, { type: 'hello' }> & { format?: WireFormat })
  | MessagesEvent
  | { type: 'protocol-error'; error: FerryError }
  /** The peer half-closed; `clean` is false when it stopped in the middle of a frame. */
  | { type: 'peer-ended'; clean: boolean }
  /** The connection is gone (closed, reset or destroyed). Sent once, last. */
  | { type: 'peer-gone'; error?: Error }
  /** `handshakeMs` passed since the connection opened and no welcome went out. */
  | { type: 'handshake.expired' };

/** Where the bytes of an upload can go: the session's file receiver. */
export interface DataReceiver {
  send(command: { type: 'data'; chunk: Buffer }): void;
}

/** Commands the session sends to its connection. */
export type SessionConnectionCommand =
  | { type: 'pause' }
  | { type: 'resume' }
  /**
   * While an upload streams, its `data` goes straight to the file receiver (`to`), as the session
   * would forward it, without a step of the session per socket read; without `to`, to the session again.
   */
  | { type: 'route-data'; to?: DataReceiver }
  | { type: 'reply'; reply: SessionReply }
  | { type: 'replies'; replies: SessionReply[] }
  | { type: 'close'; reply?: SessionReply };

/** What a callback actor is handed: its input, a way to report, and a way to take commands. */
export interface CallbackParams<Command, Input, Event> {
  input: Input;
  sendBack: (event: Event) => void;
  receive: (listener: (command: Command) => void) => void;
}

const CLOSE_GRACE_MS = 5_000;
/** The global timers (looked up at each call, so fake timers apply). */
const globalClock: Timers = { setTimeout: (callback, ms) => setTimeout(callback, ms), clearTimeout: (id) => clearTimeout(id as NodeJS.Timeout) };
const ignore = () => {};

type MessagesEvent = { type: 'messages'; messages: MessageToken[] };

/**
 * Folds each run of whole messages (a header token followed at once by its message) into one
 * `messages` event, so a message costs the session one step instead of two, and a client with many
 * messages in flight one step per read. Only a message split across reads goes through
 * `message-header` and `message`.
 */
export function batchMessages(tokens: ServerToken[]): (ServerToken | MessagesEvent)[] {
  if (tokens.length < 2) return tokens;
  const out: (ServerToken | MessagesEvent)[] = [];
  let i = 0;
  while (i < tokens.length) {
    const run: MessageToken[] = [];
    for (let next = tokens[i + 1]; tokens[i]?.type === 'message-header' && next?.type === 'message'; next = tokens[i + 1]) {
      run.push(next);
      i += 2;
    }
    if (run.length > 0) out.push({ type: 'messages', messages: run });
    else out.push(tokens[i++]!);
  }
  return out;
}

/**
 * Wires one server-side Transport to its session machine: detects the format from the first byte,
 * decodes tokens and hands them over one by one, stopping the moment the machine asks to pause (the
 * rest of a decoded batch waits), and writes the machine's replies in the detected format.
 *
 * While the session streams an upload it routes `data` to its file receiver (`route-data`): a
 * chunk then costs no step of the session, whose `streaming` state would only forward it, and which
 * still decides everything else (pausing on `file.busy`, the end, failures) and ends the route when
 * it leaves `streaming`. Order is kept: whatever waits in the queue goes first, by the same route.
 */
export function runSessionConnection({ input, sendBack, receive }: CallbackParams<SessionConnectionCommand, SessionConnectionInput, SessionConnectionEvent>) {
  const { transport, limits } = input;
  const maxPending = input.maxPendingReplyBytes ?? 1024 * 1024;
  let codec: ServerCodec | undefined;
  let queue: SessionConnectionEvent[] = [];
  let machinePaused = false;
  let writeBlocked = false;
  let gone = false;
  let failed = false;
  let ending: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  let dataRoute: DataReceiver | undefined;

  const reading = () => !machinePaused && !writeBlocked;
  const applyFlow = () => (reading() ? transport.resume() : transport.pause());

  const hand = (event: SessionConnectionEvent) => {
    if (dataRoute && event.type === 'data') dataRoute.send(event);
    else sendBack(event);
  };

  const deliver = () => {
    let i = 0;
    while (i < queue.length && !machinePaused) hand(queue[i++]!);
    queue = i === queue.length ? [] : queue.slice(i);
  };

  let deliveryScheduled = false;
  const scheduleDelivery = () => {
    if (deliveryScheduled) return;
    deliveryScheduled = true;
    queueMicrotask(() => {
      deliveryScheduled = false;
      if (stopped) return;
      deliver();
      applyFlow();
    });
  };

  const push = (events: SessionConnectionEvent[]) => {
    if (queue.length === 0 && !machinePaused) {
      for (let i = 0; i < events.length; i++) {
        if (machinePaused) {
          queue = events.slice(i);
          return;
        }
        hand(events[i]!);
      }
    } else {
      for (const event of events) queue.push(event);
    }
  };

  const fail = (error: FerryError) => {
    // Later bytes are ignored, but reading goes on so that the peer's close is still noticed.
    failed = true;
    push([{ type: 'protocol-error', error }]);
  };

  let wireFormat: WireFormat = 'native';
  let helloSeen = false;
  const onData = (chunk: Buffer) => {
    if (failed || chunk.length === 0) return;
    lastData = Date.now();
    if (!codec) {
      const format = detectFormat(chunk[0]!);
      const made = format === undefined
        ? new ProtocolError(
            'E_BAD_PREAMBLE',
            chunk[0] === 0x16 ? 'A TLS client connected, but this server does not use TLS (start it with --tls-cert and --tls-key).' : 'The peer does not speak a protocol ferry knows; use a ferry client.',
          )
        : input.codecs(format, limits);
      if (made instanceof FerryError) return fail(made);
      codec = made;
      wireFormat = format!;
      if (format === 'native') beginHeartbeat();
    }
    heartbeat?.heard();
    let tokens: ServerToken[];
    try {
      tokens = codec.decoder.feed(chunk);
    } catch (err) {
      return fail(err instanceof FerryError ? err : new ProtocolError('E_BAD_FRAME', 'The peer sent bytes ferry cannot read.'));
    }
    if (tokens.length === 0) return;
    const events: SessionConnectionEvent[] = batchMessages(tokens);
    // The session learns the wire format from the hello, which comes first (the original format's is implied).
    if (!helloSeen) {
      for (let i = 0; i < events.length; i++) {
        const event = events[i]!;
        if (event.type === 'hello') {
          events[i] = { format: wireFormat, ...event };
          helloSeen = true;
        }
      }
    }
    push(events);
  };

  let lastError: Error | undefined;
  let heartbeat: Heartbeat | undefined;
  let lastData = Date.now();
  const idleMs = input.idleMs ?? 0;
  // One coarse timer per connection, not one per chunk: it looks at when data last came.
  const idleCheck =
    idleMs > 0
      ? setInterval(
          () => {
            if (!reading()) lastData = Date.now();
            else if (Date.now() - lastData >= idleMs) {
              clearInterval(idleCheck);
              lastError = new FerryError('E_TIMEOUT', `The client sent nothing for ${Math.round(idleMs / 1000)} s.`);
              transport.destroy();
            }
          },
          Math.max(250, Math.min(idleMs / 4, 30_000)),
        )
      : undefined;
  idleCheck?.unref?.();
  const beginHeartbeat = () => {
    const every = input.heartbeatMs ?? 0;
    if (every <= 0) return;
    heartbeat = startHeartbeat({
      everyMs: every,
      ping: () => write({ type: 'ping' }),
      // Time in which we were not reading (our own backpressure) says nothing about the client.
      counts: reading,
      onSilent: (ms) => {
        lastError = new FerryError('E_TIMEOUT', `The client went silent for ${Math.round(ms / 1000)} s.`);
        transport.destroy();
      },
    });
  };
  const onEnd = () => {
    if (failed) return;
    push([{ type: 'peer-ended', clean: codec === undefined || codec.decoder.idle }]);
  };
  const onClose = () => {
    if (gone) return;
    gone = true;
    push([lastError ? { type: 'peer-gone', error: lastError } : { type: 'peer-gone' }]);
  };
  const onError = (err: Error) => {
    lastError = err;
  };
  const onDrain = () => {
    if (writeBlocked && transport.writableLength <= maxPending) {
      writeBlocked = false;
      applyFlow();
    }
  };

  transport.on('data', onData).on('end', onEnd).on('close', onClose).on('error', onError).on('drain', onDrain);

  // One plain timer per connection for its handshake, not an XState delayed event: every session
  // shares one XState system, whose scheduler looks through all pending delayed events each time an
  // actor stops, so n sessions waiting for their hello made closing them cost n².
  const clock = input.clock ?? globalClock;
  let handshakeTimer: unknown = input.handshakeMs ? clock.setTimeout(() => {
    handshakeTimer = undefined;
    push([{ type: 'handshake.expired' }]);
  }, input.handshakeMs) : undefined;
  const endHandshakeTimer = () => {
    if (handshakeTimer === undefined) return;
    clock.clearTimeout(handshakeTimer);
    handshakeTimer = undefined;
  };

  // Replies made while handling one batch of input leave in one write, when the tick ends.
  const holdWrites = corkUntilLater(transport);
  const write = (reply: SessionReply) => {
    if (reply.type === 'welcome') endHandshakeTimer();
    if (transport.destroyed || !codec) return;
    const bytes = codec.replies.encode(reply);
    if (bytes !== undefined) send(bytes);
  };
  /** Several replies (the acknowledgements of a batch) as one buffer: one write instead of one each. */
  const writeAll = (replies: SessionReply[]) => {
    if (transport.destroyed || !codec) return;
    const bytes = codec.replies.encodeAll(replies);
    if (bytes !== undefined) send(bytes);
  };
  const send = (bytes: Buffer) => {
    holdWrites();
    transport.write(bytes);
    if (transport.writableLength > maxPending && !writeBlocked) {
      writeBlocked = true;
      applyFlow();
    }
  };

  receive((command) => {
    switch (command.type) {
      case 'pause':
        machinePaused = true;
        applyFlow();
        break;
      case 'resume':
        machinePaused = false;
        // Commands arrive while the session is mid-transition, when events sent to it only queue up
        // and a pause they cause would come too late; hand the held tokens over once it is done.
        scheduleDelivery();
        break;
      case 'route-data':
        dataRoute = command.to;
        break;
      case 'reply':
        write(command.reply);
        break;
      case 'replies':
        writeAll(command.replies);
        break;
      case 'close':
        // From here on the session only waits for the socket to close: let everything through.
        machinePaused = false;
        writeBlocked = false;
        scheduleDelivery();
        if (command.reply) write(command.reply);
        if (!transport.destroyed) {
          transport.end();
          // A peer that never closes its side must not hold the socket open forever.
          ending = setTimeout(() => transport.destroy(), CLOSE_GRACE_MS);
          ending.unref?.();
        }
        break;
    }
  });

  return () => {
    stopped = true;
    endHandshakeTimer();
    heartbeat?.stop();
    clearInterval(idleCheck);
    transport.off('data', onData).off('end', onEnd).off('error', onError).off('drain', onDrain);
    transport.off('close', onClose);
    // The socket may still report a late reset while it flushes; it must never become an uncaught error.
    transport.on('error', ignore);
    if (ending === undefined && !transport.destroyed) transport.destroy();
  };
}

/** The connection as an actor, for a session given its Transport in its input. */
export const sessionConnection = fromCallback<SessionConnectionCommand, SessionConnectionInput, SessionConnectionEvent>(runSessionConnection);
