/**
 * Runs one real session machine over a memory transport while the test plays the client with raw
 * native frames. Side effects the tests need to time (the store's begin/finish, disk backpressure,
 * the media step, the handshake timer) are put under the test's control.
 */
import { pino, type Logger } from 'pino';
import { MessageJournal } from '../../media/message-journal.js';
import { createActor, fromPromise, SimulatedClock, waitFor, type Actor, type InspectionEvent, type SnapshotFrom, type StateValue } from 'xstate';
import {
  sessionLogic,
  type sessionMachine,
  type HandledMessages,
  type MediaOutcome,
  type MediaRequest,
  type SessionEmitted,
  type SessionMachine,
  type SessionSettings,
  type SessionTimeouts,
} from '../../machines/session.machine.js';
import { macMatches, newNonce } from '../../transport/auth.js';
import { nativeOnly, type CodecFactory } from '../../machines/actors/session-connection.js';
import type { FileSink } from '../../machines/actors/file-receiver.js';
import { UploadStore, type IncomingFile, type SavedFile } from '../../media/upload-store.js';
import { defaultMediaApps } from '../../media/launcher.js';
import type { OpenSettings } from '../../media/opener.js';
import { memoryPair, type MemoryTransport } from '../../transport/memory-transport.js';
import { ClientDecoder, encode, preamble } from '../../transport/native-codec.js';
import { DEFAULT_LIMITS, type ClientToken } from '../../transport/frames.js';
import { AsyncQueue, deferred, tempDir, within, type Deferred } from './async.js';

export type SessionSnapshot = SnapshotFrom<typeof sessionMachine>;
export type SessionActor = Actor<typeof sessionMachine>;

/** The client's end of a session: writes raw frames and decodes the server's replies. */
export class PeerClient {
  readonly tokens = new AsyncQueue<ClientToken>();
  readonly ended = deferred();
  readonly closed = deferred<boolean>();
  /** First byte the server sent; a native server starts with the preamble (0xF0). */
  firstByte: number | undefined;
  decodeError: Error | undefined;
  private readonly decoder = new ClientDecoder(DEFAULT_LIMITS);

  constructor(readonly transport: MemoryTransport) {
    transport.on('data', (chunk) => {
      // The server's preamble precedes its first reply, whatever that is: decoded as it comes.
      if (this.firstByte === undefined) this.firstByte = chunk[0];
      try {
        for (const token of this.decoder.feed(chunk)) this.tokens.push(token);
      } catch (err) {
        this.decodeError = err as Error;
      }
    });
    transport.on('end', () => this.ended.resolve());
    transport.on('close', (hadError) => this.closed.resolve(hadError));
    transport.on('error', () => {});
  }

  write(...chunks: Buffer[]): void {
    for (const chunk of chunks) this.transport.write(chunk);
  }

  hello(agent = 'test-client'): void {
    this.write(Buffer.concat([preamble(), encode.hello({ version: 1, agent })]));
  }

  /** One DATA frame, header and payload in one write. */
  data(chunk: Buffer): void {
    this.write(Buffer.concat([encode.dataHeader(chunk.length), chunk]));
  }

  /** The next reply, which must be of `type`. */
  async expect<K extends ClientToken['type']>(type: K): Promise<Extract<ClientToken, { type: K }>> {
    const token = await this.tokens.next(() => true, `a ${type} reply`);
    if (token.type !== type) throw new Error(`expected a ${type} reply, got ${JSON.stringify(token)}`);
    return token as Extract<ClientToken, { type: K }>;
  }
}

/** A file the {@link ControlledStore} handed out; delegates to the real store's file. */
export class ControlledFile implements IncomingFile {
  readonly finishCalled = deferred<string | undefined>();
  aborted: Promise<void> | undefined;
  private finishing: Promise<SavedFile> | undefined;
  private held = false;
  private drainListeners: (() => void)[] = [];

  constructor(
    readonly real: IncomingFile,
    private readonly store: ControlledStore,
  ) {}

  get name(): string {
    return this.real.name;
  }

  get size(): number {
    return this.real.size;
  }

  get resumedFrom(): number {
    return this.real.resumedFrom;
  }

  get received(): number {
    return this.real.received;
  }

  write(chunk: Buffer): boolean {
    const more = this.real.write(chunk);
    if (this.store.holdWrites) {
      this.held = true;
      return false;
    }
    return more;
  }

  onDrain(listener: () => void): void {
    if (this.held) this.drainListeners.push(listener);
    else this.real.onDrain(listener);
  }

  /** Ends a backpressure episode started by `store.holdWrites`. */
  releaseDrain(): void {
    this.held = false;
    this.store.holdWrites = false;
    const listeners = this.drainListeners;
    this.drainListeners = [];
    for (const listener of listeners) listener();
  }

  finish(expectedSha256?: string): Promise<SavedFile> {
    this.finishCalled.resolve(expectedSha256);
    const gate = this.store.finishGate;
    this.finishing ??= (async () => {
      if (gate) {
        try {
          await gate.promise;
        } catch (err) {
          // A rejected gate fails the finish; the real file is closed and removed first.
          await this.real.abort();
          throw err;
        }
      }
      return this.real.finish(expectedSha256);
    })();
    return this.finishing;
  }

  abort(): Promise<void> {
    // Like the real store: once finish() was called, only wait for it, so a verified file is kept.
    this.aborted ??= this.finishing ? this.finishing.then(noop, noop) : this.real.abort();
    return this.aborted;
  }
}

function noop(): void {}

/**
 * A real {@link UploadStore} with gates: `beginGate` holds `begin()` (reject it to refuse the
 * offer), `finishGate` holds `finish()`, `holdWrites` makes the next write report backpressure.
 */
export class ControlledStore implements FileSink {
  beginGate: Deferred<void> | undefined;
  finishGate: Deferred<void> | undefined;
  holdWrites = false;
  readonly files: ControlledFile[] = [];
  /** Names of the offers that reached `begin()`. */
  readonly begins = new AsyncQueue<string>();

  constructor(readonly real: UploadStore) {}

  async begin(offer: { name: string; size: number }): Promise<IncomingFile> {
    const gate = this.beginGate;
    this.begins.push(offer.name);
    if (gate) await gate.promise;
    const file = new ControlledFile(await this.real.begin(offer), this);
    this.files.push(file);
    return file;
  }

  existing(name: string): Promise<string> {
    return this.real.existing(name);
  }

  /** Resolves once every file handed out has finished aborting (partials removed). */
  async settled(): Promise<void> {
    await Promise.all(this.files.map((f) => f.aborted ?? Promise.resolve()));
  }
}

/** Controls the session's media step. */
export class ControlledDispatch {
  hold = false;
  readonly calls: MediaRequest[] = [];
  readonly pending = new AsyncQueue<Deferred<MediaOutcome>>();

  readonly logic = fromPromise<MediaOutcome, MediaRequest>(async ({ input }) => {
    this.calls.push(input);
    if (!this.hold) return {};
    const gate = deferred<MediaOutcome>();
    this.pending.push(gate);
    return gate.promise;
  });
}

export interface SessionHarnessOptions {
  /** The record of handled messages; a fresh in-memory one by default. */
  journal?: MessageJournal;
  handshakeMs?: number;
  /** Require this token (challenge and response) before anything else. */
  token?: string;
  authFailureDelayMs?: number;
  /** Hand the session the bare UploadStore instead of the controlled wrapper. */
  rawStore?: boolean;
  /** A store of the test's own instead of either. */
  store?: FileSink;
  splitAt?: number;
  /** Use the machine's own dispatchMedia instead of the controlled one. */
  realDispatch?: boolean;
  /** Use the system clock instead of a simulated one (e.g. with vitest fake timers). */
  realClock?: boolean;
  /** Media opening settings; opening is off by default. */
  media?: Partial<OpenSettings>;
}

export interface ProcessedStep {
  event: { type: string };
  value: StateValue;
  status: string;
}

export class SessionHarness {
  readonly root: string;
  readonly uploads: UploadStore;
  readonly store: ControlledStore;
  readonly dispatch = new ControlledDispatch();
  readonly clock = new SimulatedClock();
  readonly serverEnd: MemoryTransport;
  readonly clientEnd: MemoryTransport;
  readonly client: PeerClient;
  readonly actor: SessionActor;
  readonly logs: Record<string, unknown>[] = [];
  readonly emitted: SessionEmitted[] = [];
  /** Every event the session processed, with the state it left the session in. */
  readonly steps: ProcessedStep[] = [];
  /** Of those, the `data` the connection handed straight to the file receiver (no step of the session itself). */
  routedData = 0;
  private waiters: { type: string; d: Deferred<SessionSnapshot> }[] = [];

  constructor(opts: SessionHarnessOptions = {}) {
    this.root = tempDir();
    this.uploads = new UploadStore({ root: this.root });
    this.store = new ControlledStore(this.uploads);
    [this.serverEnd, this.clientEnd] = memoryPair(opts.splitAt === undefined ? {} : { splitAt: opts.splitAt });
    this.client = new PeerClient(this.clientEnd);
    const log = pino({ level: 'debug' }, { write: (line: string) => void this.logs.push(JSON.parse(line) as Record<string, unknown>) });
    const token = opts.token;
    const logic = sessionLogic({
      store: opts.store ?? (opts.rawStore ? this.uploads : this.store),
      journal: opts.journal ?? new MessageJournal(),
      codecs: nativeOnly,
      log,
      linkOf: () => ({ transport: this.serverEnd, log }),
      now: () => (opts.realClock ? Date.now() : this.clock.now()),
      // The handshake is timed by the connection, on the same clock as the machine's own delays.
      ...(opts.realClock ? {} : { clock: this.clock }),
      ...(token !== undefined ? { answerMatches: (nonce: string, mac: string) => macMatches(token, nonce, mac) } : {}),
    });
    const machine = opts.realDispatch ? logic : logic.provide({ actors: { dispatchMedia: this.dispatch.logic } });
    this.actor = createActor(machine, {
      input: {
        id: 'session-1',
        remote: this.serverEnd.remote,
        limits: DEFAULT_LIMITS,
        timeouts: { handshakeMs: opts.handshakeMs ?? 10_000 },
        authRequired: token !== undefined,
        authFailureDelayMs: opts.authFailureDelayMs ?? 1_000,
        ...(token !== undefined ? { nonce: newNonce() } : {}),
        agent: 'test',
        media: { enabled: false, apps: defaultMediaApps(), perMinute: 10, ...opts.media },
      },
      ...(opts.realClock ? {} : { clock: this.clock }),
      inspect: (ev: InspectionEvent) => {
        let snapshot: SessionSnapshot;
        if (ev.type === '@xstate.snapshot' && ev.actorRef === this.actor) snapshot = ev.snapshot as SessionSnapshot;
        // While an upload streams, the connection hands its data straight to the file receiver (no
        // sender): the session's step for it, which would only forward it and stay where it is.
        else if (ev.type === '@xstate.event' && ev.event.type === 'data' && ev.sourceRef === undefined && ev.actorRef === (this.actor as SessionActor | undefined)?.getSnapshot().children.receiver) {
          snapshot = this.actor.getSnapshot();
          this.routedData++;
        } else return;
        this.steps.push({ event: ev.event, value: snapshot.value, status: snapshot.status });
        const type = ev.event.type;
        const matching = this.waiters.filter((w) => w.type === type || (w.type.endsWith('*') && type.startsWith(w.type.slice(0, -1))));
        this.waiters = this.waiters.filter((w) => !matching.includes(w));
        for (const w of matching) w.d.resolve(snapshot);
      },
    });
    this.actor.on('*', (e) => void this.emitted.push(e as SessionEmitted));
    this.actor.start();
  }

  /**
   * Resolves with the session's snapshot right after it processes the next event of `type`
   * (`prefix*` matches a prefix). Call it before causing the event.
   */
  processed(type: string, ms?: number): Promise<SessionSnapshot> {
    const d = deferred<SessionSnapshot>();
    this.waiters.push({ type, d });
    return within(d.promise, `the session to process ${type}`, ms);
  }

  value(): StateValue {
    return this.actor.getSnapshot().value;
  }

  /** The distinct state values the session went through, in order, as strings. */
  trace(): string[] {
    const out: string[] = [];
    for (const step of this.steps) {
      const v = valueString(step.value);
      if (out[out.length - 1] !== v) out.push(v);
    }
    return out;
  }

  async reach(state: string | Record<string, string>, ms = 3_000): Promise<SessionSnapshot> {
    return within(waitFor(this.actor, (s) => s.matches(state as never), { timeout: Infinity }), `the session to reach ${JSON.stringify(state)}`, ms);
  }

  async done(ms = 3_000): Promise<SessionSnapshot> {
    return within(waitFor(this.actor, (s) => s.status === 'done', { timeout: Infinity }), 'the session to end', ms);
  }

  /** Log lines with this `event` field. */
  logged(event: string): Record<string, unknown>[] {
    return this.logs.filter((line) => line.event === event);
  }

  /** Client says hello and waits for the welcome. */
  async handshake(): Promise<void> {
    const hello = this.processed('hello');
    this.client.hello();
    await hello;
    await this.client.expect('welcome');
  }

  /** Tears everything down (safe to call twice). */
  dispose(): void {
    this.actor.stop();
    this.clientEnd.destroy();
  }
}

export function valueString(value: StateValue): string {
  if (typeof value === 'string') return value;
  return Object.entries(value)
    .map(([k, v]) => (v === undefined ? k : `${k}.${valueString(v)}`))
    .join(',');
}

export interface SoloSessionOptions {
  id: string;
  transport: MemoryTransport;
  store: FileSink;
  log: Logger;
  codecs: CodecFactory;
  timeouts: SessionTimeouts;
  journal?: HandledMessages;
  media?: OpenSettings;
}

/** The logic and input of one session on its own connection, the way a server's pool would start it. */
export function soloSession(opts: SoloSessionOptions): { logic: SessionMachine; input: SessionSettings } {
  const link = { transport: opts.transport, log: opts.log };
  const logic = sessionLogic({
    store: opts.store,
    journal: opts.journal ?? new MessageJournal(),
    codecs: opts.codecs,
    log: opts.log,
    linkOf: () => link,
    now: () => Date.now(),
  });
  const input: SessionSettings = {
    id: opts.id,
    remote: opts.transport.remote,
    limits: DEFAULT_LIMITS,
    timeouts: opts.timeouts,
    agent: 'test',
    media: opts.media ?? { enabled: false, apps: defaultMediaApps(), perMinute: 10 },
    authRequired: false,
    authFailureDelayMs: 1_000,
  };
  return { logic, input };
}
