/**
 * Runs one real client machine whose dialer hands out memory transports, while the test plays the
 * server: it reads the client's frames with a ServerDecoder and answers with native replies.
 */
import { createActor, SimulatedClock, waitFor, type Actor, type InspectionEvent, type SnapshotFrom, type StateValue } from 'xstate';
import { ResumeBook } from '../../media/resume-book.js';
import { clientLink } from '../../machines/actors/client-link.js';
import { clientMachine, DEFAULT_MAX_QUEUED, type ClientEmitted, type RetryPolicy } from '../../machines/client.machine.js';
import { memoryPair, type MemoryTransport } from '../../transport/memory-transport.js';
import { ServerDecoder, nativeReplies } from '../../transport/native-codec.js';
import { DEFAULT_LIMITS, type Limits, type OpenResultInfo, type ServerToken, type UploadOffer, type UploadResultInfo } from '../../transport/frames.js';
import type { SessionReply } from '../../transport/replies.js';
import type { Dialer } from '../../transport/transport.js';
import { AsyncQueue, deferred, sha256, within, type Deferred } from './async.js';

export type ClientSnapshot = SnapshotFrom<typeof clientMachine>;

/** The server's end of one connection the client dialled. */
export class ServerConn {
  readonly tokens = new AsyncQueue<ServerToken>();
  readonly ended = deferred();
  readonly closed = deferred<boolean>();
  decodeError: Error | undefined;
  private readonly decoder = new ServerDecoder(DEFAULT_LIMITS);

  constructor(
    readonly transport: MemoryTransport,
    readonly clientEnd: MemoryTransport,
  ) {
    transport.on('data', (chunk) => {
      try {
        for (const token of this.decoder.feed(chunk)) {
          // DATA tokens are slices of the incoming chunk; keep a copy of our own.
          this.tokens.push(token.type === 'data' ? { type: 'data', chunk: Buffer.from(token.chunk) } : token);
        }
      } catch (err) {
        this.decodeError = err as Error;
      }
    });
    transport.on('end', () => this.ended.resolve());
    transport.on('close', (hadError) => this.closed.resolve(hadError));
    transport.on('error', () => {});
  }

  /** The next token, which must be of `type`. */
  async expect<K extends ServerToken['type']>(type: K): Promise<Extract<ServerToken, { type: K }>> {
    const token = await this.tokens.next(() => true, `a ${type} frame from the client`);
    if (token.type !== type) throw new Error(`expected a ${type} frame, got ${JSON.stringify(token)}`);
    return token as Extract<ServerToken, { type: K }>;
  }

  reply(reply: SessionReply): void {
    this.transport.write(nativeReplies.encode(reply)!);
  }

  welcome(session = 'session-1', limits: Limits = DEFAULT_LIMITS): void {
    this.reply({ type: 'welcome', info: { version: 1, agent: 'fake-server', session, maxMessage: limits.maxMessage, maxFrame: limits.maxFrame } });
  }

  /** Reads the hello and answers with a welcome. */
  async handshake(session?: string, limits?: Limits): Promise<Extract<ServerToken, { type: 'hello' }>> {
    const hello = await this.expect('hello');
    this.welcome(session, limits);
    return hello;
  }

  ack(id: number, text: string): void {
    this.reply({ type: 'message-ack', id, text, raw: Buffer.from(text) });
  }

  openResult(id: number, result: OpenResultInfo): void {
    this.reply({ type: 'open-result', id, result });
  }

  accept(id: number, offset = 0): void {
    this.reply({ type: 'upload-accept', id, offset });
  }

  done(result: UploadResultInfo): void {
    this.reply({ type: 'upload-done', result });
  }

  error(code: string, message: string, id?: number): void {
    this.reply({ type: 'error', error: id === undefined ? { code, message } : { code, message, id } });
  }

  /** Reads the DATA frames of an accepted upload up to its UPLOAD_END. */
  async receiveUpload(): Promise<{ bytes: Buffer; end: Extract<ServerToken, { type: 'upload-end' }> }> {
    const chunks: Buffer[] = [];
    for (;;) {
      const token = await this.tokens.next(() => true, 'DATA or UPLOAD_END');
      if (token.type === 'data') chunks.push(token.chunk);
      else if (token.type === 'upload-end') return { bytes: Buffer.concat(chunks), end: token };
      else throw new Error(`unexpected ${token.type} frame during an upload`);
    }
  }

  /** Offer → accept → data → end → done, checking the hash; returns the offer and bytes. */
  async takeUpload(savedAs?: string): Promise<{ offer: UploadOffer; bytes: Buffer }> {
    const { offer } = await this.expect('upload-offer');
    this.accept(offer.id);
    const { bytes, end } = await this.receiveUpload();
    if (end.id !== offer.id) throw new Error(`upload-end for ${end.id}, offer was ${offer.id}`);
    if (end.sha256 !== sha256(bytes)) throw new Error('upload-end carries a wrong sha256');
    this.done({ id: offer.id, savedAs: savedAs ?? offer.name, bytes: bytes.length, sha256: sha256(bytes) });
    return { offer, bytes };
  }
}

/** Hands out one memory pair per dial, or refuses dials on request. */
export class FakeServer {
  readonly conns = new AsyncQueue<ServerConn>();
  dials = 0;
  /** The next dials reject with these errors, in order. */
  readonly refusals: Error[] = [];
  /** Refuse every dial. */
  refuseAll: Error | undefined;
  /** A dial that waits for the test: set to a deferred before the dial happens. */
  dialGate: Deferred<void> | undefined;

  readonly dial: Dialer = async () => {
    this.dials++;
    const gate = this.dialGate;
    if (gate) await gate.promise;
    const refusal = this.refusals.shift() ?? this.refuseAll;
    if (refusal) throw refusal;
    const [clientEnd, serverEnd] = memoryPair();
    this.conns.push(new ServerConn(serverEnd, clientEnd));
    return clientEnd;
  };

  next(): Promise<ServerConn> {
    return this.conns.next(() => true, 'the client to dial');
  }
}

export function refused(): Error {
  return Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9098'), { code: 'ECONNREFUSED' });
}

export interface ClientHarnessOptions {
  /** The id the client says hello with. Default `client-1`. */
  clientId?: string;
  retry?: Partial<RetryPolicy>;
  handshakeMs?: number;
  /** Heartbeat interval; off unless a test sets it. */
  heartbeatMs?: number;
  maxQueued?: number;
  /** Offer the next upload before the current one is confirmed (the default) or not. */
  pipelineUploads?: boolean;
  /** Drive the retry timer with a simulated clock instead of the real one. */
  simulated?: boolean;
}

export class ClientHarness {
  readonly server = new FakeServer();
  readonly clock = new SimulatedClock();
  readonly actor: Actor<typeof clientMachine>;
  readonly emitted = new AsyncQueue<ClientEmitted>();
  /** Every acknowledged message, one item each, from the `replies` events (one per read). */
  readonly replies = new AsyncQueue<{ id: number; text: string }>();
  readonly steps: { event: { type: string }; value: StateValue }[] = [];
  private waiters: { type: string; d: Deferred<ClientSnapshot> }[] = [];

  constructor(opts: ClientHarnessOptions = {}) {
    const link = clientLink({ dial: this.server.dial, book: new ResumeBook(), server: 'memory' });
    this.actor = createActor(clientMachine.provide({ actors: { link } }), {
      input: {
        link: { hello: { version: 1, agent: 'test-client', clientId: opts.clientId ?? 'client-1' }, limits: DEFAULT_LIMITS, handshakeMs: opts.handshakeMs ?? 10_000, heartbeatMs: opts.heartbeatMs ?? 0 },
        retry: { initialMs: 5, maxMs: 20, forMs: undefined, ...opts.retry },
        maxQueued: opts.maxQueued ?? DEFAULT_MAX_QUEUED,
        pipelineUploads: opts.pipelineUploads ?? true,
      },
      ...(opts.simulated ? { clock: this.clock } : {}),
      inspect: (ev: InspectionEvent) => {
        if (ev.type !== '@xstate.snapshot' || ev.actorRef !== this.actor) return;
        const snapshot = ev.snapshot as ClientSnapshot;
        this.steps.push({ event: ev.event, value: snapshot.value });
        const type = ev.event.type;
        const matching = this.waiters.filter((w) => w.type === type || (w.type.endsWith('*') && type.startsWith(w.type.slice(0, -1))));
        this.waiters = this.waiters.filter((w) => !matching.includes(w));
        for (const w of matching) w.d.resolve(snapshot);
      },
    });
    this.actor.on('*', (e) => this.emitted.push(e as ClientEmitted));
    this.actor.on('replies', (e) => {
      for (const reply of e.replies) this.replies.push(reply);
    });
  }

  start(): this {
    this.actor.start();
    return this;
  }

  /** Resolves right after the client processes the next event of `type`; call before causing it. */
  processed(type: string, ms?: number): Promise<ClientSnapshot> {
    const d = deferred<ClientSnapshot>();
    this.waiters.push({ type, d });
    return within(d.promise, `the client to process ${type}`, ms);
  }

  /** The next emitted event of `type` (matching `pred`). */
  next<K extends ClientEmitted['type']>(type: K, pred: (e: Extract<ClientEmitted, { type: K }>) => boolean = () => true): Promise<Extract<ClientEmitted, { type: K }>> {
    return this.emitted.next((e) => e.type === type && pred(e as Extract<ClientEmitted, { type: K }>), `a ${type} event`) as Promise<Extract<ClientEmitted, { type: K }>>;
  }

  /** The next acknowledged message (matching `pred`), whichever `replies` event carried it. */
  nextReply(pred: (reply: { id: number; text: string }) => boolean = () => true): Promise<{ id: number; text: string }> {
    return this.replies.next(pred, 'an acknowledged message');
  }

  /** Every event of `type` emitted so far. */
  all<K extends ClientEmitted['type']>(type: K): Extract<ClientEmitted, { type: K }>[] {
    return this.emitted.all.filter((e) => e.type === type) as Extract<ClientEmitted, { type: K }>[];
  }

  value(): StateValue {
    return this.actor.getSnapshot().value;
  }

  async reach(pred: (s: ClientSnapshot) => boolean, what: string, ms = 3_000): Promise<ClientSnapshot> {
    return within(waitFor(this.actor, pred, { timeout: Infinity }), what, ms);
  }

  connected(): Promise<ClientSnapshot> {
    return this.reach((s) => s.matches({ online: 'connected' }), 'the client to connect');
  }

  done(ms?: number): Promise<ClientSnapshot> {
    return this.reach((s) => s.status === 'done', 'the client to finish', ms);
  }

  /** Dials, handshakes, and waits until the client is connected. */
  async connect(session?: string, limits?: Limits): Promise<ServerConn> {
    const conn = await this.server.next();
    const up = this.processed('link.up');
    await conn.handshake(session, limits);
    await up;
    return conn;
  }

  dispose(): void {
    this.actor.stop();
  }
}
