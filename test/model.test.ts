/**
 * Model-based tests: the session and client machine definitions are walked with xstate/graph, and
 * every path found is replayed against the REAL machine over memory transports. A driver knows how
 * to cause each event the way the world would (write a frame, reset the link, let the store answer,
 * advance the clock); after every step the real actor must be in the state the path says.
 *
 * The graph comes from the machines' own definitions; what the driver can cause in each state is
 * listed here (a new state without a list fails the "every state in the graph" check), and the
 * suite fails when some state node of either machine is never reached by the real actors. After
 * each path a probe checks that the real system still works where the path left it (hidden state,
 * such as reading left paused, does not show in the graph).
 */
import { authMac, macMatches } from '../transport/auth.js';
import { MessageJournal } from '../media/message-journal.js';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import type { AnyStateMachine, AnyStateNode, StateValue } from 'xstate';
import { getAdjacencyMap, getShortestPaths, getSimplePaths } from 'xstate/graph';
import { sessionLogic, sessionMachine, type SessionEvent } from '../machines/session.machine.js';
import { clientMachine, type ClientEvent } from '../machines/client.machine.js';
import { nativeOnly } from '../machines/actors/session-connection.js';
import { FerryError } from '../transport/errors.js';
import { encode, frameHeader, preamble } from '../transport/native-codec.js';
import { DEFAULT_LIMITS } from '../transport/frames.js';
import { defaultMediaApps } from '../media/launcher.js';
import { content, deferred, finalFiles, partialFiles, removeTempDirs, sha256, tempDir } from './helpers/async.js';
import { SessionHarness, valueString, type SessionSnapshot } from './helpers/session-harness.js';
import { ClientHarness, type ClientSnapshot, type ServerConn } from './helpers/client-harness.js';

afterAll(() => removeTempDirs());

// ---------------------------------------------------------------------------------------------
// Graph helpers

interface StateNodeInfo {
  id: string;
  value: StateValue;
}

/** Every state node of a machine (compound ones included), from its definition. */
function allStateNodes(machine: AnyStateMachine): StateNodeInfo[] {
  const out: StateNodeInfo[] = [];
  const walk = (node: AnyStateNode) => {
    for (const child of Object.values(node.states) as AnyStateNode[]) {
      out.push({ id: child.id, value: toValue(child.path) });
      walk(child);
    }
  };
  walk(machine.root);
  return out;
}

function toValue(keys: readonly string[]): StateValue {
  const [head, ...rest] = keys;
  return rest.length === 0 ? head! : { [head!]: toValue(rest) };
}

/** Records which state nodes a real actor was seen in. */
class Coverage {
  readonly nodes: StateNodeInfo[];
  readonly seen = new Set<string>();

  constructor(machine: AnyStateMachine) {
    this.nodes = allStateNodes(machine);
  }

  visit(snapshot: { matches(value: never): boolean }): void {
    for (const node of this.nodes) if (snapshot.matches(node.value as never)) this.seen.add(node.id);
  }

  missing(): string[] {
    return this.nodes.map((n) => n.id).filter((id) => !this.seen.has(id));
  }
}

/** An event of either model, with whatever payload it carries. */
type ModelEvent = { type: string; [key: string]: unknown };

/** A path as xstate/graph returns it; steps[0] is the initial state, each later step the state after its event. */
interface ModelSnapshot {
  value: StateValue;
  context: unknown;
  status: string;
}
interface AnyPath {
  state: ModelSnapshot;
  steps: { event: ModelEvent; state: ModelSnapshot }[];
  weight: number;
}

/**
 * One path per transition: the shortest path to each state the graph reaches, extended by each
 * event that state takes. Covers every reachable state and every (state, event) edge.
 */
function transitionPaths<TLogic extends AnyStateMachine>(logic: TLogic, options: Parameters<typeof getShortestPaths<TLogic>>[1], serialize: (s: never) => string): AnyPath[] {
  const shortest = getShortestPaths(logic, options) as unknown as AnyPath[];
  const bySerial = new Map(shortest.map((p) => [serialize(p.state as never), p]));
  const adjacency = getAdjacencyMap(logic, options as never) as unknown as Record<string, { transitions: Record<string, { event: ModelEvent; state: ModelSnapshot }> }>;
  const out: AnyPath[] = [];
  for (const [serial, { transitions }] of Object.entries(adjacency)) {
    const head = bySerial.get(serial);
    if (!head) throw new Error(`no shortest path to ${serial}`);
    for (const { event, state } of Object.values(transitions)) {
      out.push({ state, weight: head.weight + 1, steps: [...head.steps, { event, state }] });
    }
  }
  return out;
}

function describeEvent(event: ModelEvent): string {
  const e = event as ModelEvent & { id?: number; error?: { code: string; id?: number } };
  const type = e.type.replace(/^xstate\.(after|done\.actor|error\.actor)\.([^.]+).*/, '$1:$2');
  if (e.type === 'link.down') return `${type}(${e.error!.code})`;
  if (e.type === 'auth') return `auth(${(e as { mac?: string }).mac === WRONG_MAC ? 'wrong' : 'right'})`;
  if (e.type === 'server.error') return `${type}(#${e.error!.id})`;
  if (e.type === 'server.ack') return `${type}(${(e as { acks?: { id: number }[] }).acks!.map((a) => `#${a.id}`).join(',')})`;
  if (e.type === 'server.opened' || e.type === 'server.accept' || e.type === 'upload.sent' || e.type === 'upload') return `${type}(#${e.id})`;
  if (e.type === 'server.done') return `${type}(#${(e as { result?: { id: number } }).result!.id})`;
  return type;
}

/** Test names for paths, unique even where two paths show the same event types. */
function named(paths: AnyPath[]): (readonly [string, AnyPath])[] {
  const seen = new Map<string, number>();
  return paths.map((p) => {
    const name = p.steps.slice(1).map((s) => describeEvent(s.event)).join(' → ') || '(start)';
    const n = (seen.get(name) ?? 0) + 1;
    seen.set(name, n);
    return [n === 1 ? name : `${name} [${n}]`, p] as const;
  });
}

// ---------------------------------------------------------------------------------------------
// The session model

const HANDSHAKE_MS = 1_000;
/** The model's sessions require a token, so the walk covers authentication too. */
const TOKEN = 'model-token';
const AUTH_DELAY_MS = 500;
const WRONG_MAC = '0'.repeat(64);
const OFFER = { id: 7, name: 'model.bin', size: 4 };
const UPLOAD_BODY = Buffer.from('abcd');
const DISPATCH_ID = sessionMachine.root.states.dispatchingMedia!.invoke[0]!.id;

const S = {
  hello: { type: 'hello', info: { version: 1, agent: 'model' } },
  ping: { type: 'ping', payload: Buffer.from('p') },
  pong: { type: 'pong', payload: Buffer.alloc(0) },
  messageHeader: { type: 'message-header', length: 2 },
  message: { type: 'message', id: 1, text: 'hi', raw: Buffer.from('hi') },
  // Two whole messages in one read reach the session as one event.
  messages: {
    type: 'messages',
    messages: [
      { type: 'message', id: 2, text: 'm2', raw: Buffer.from('m2') },
      { type: 'message', id: 3, text: 'm3', raw: Buffer.from('m3') },
    ],
  },
  offer: { type: 'upload-offer', offer: OFFER },
  // The same upload, asking for the file to be opened once stored: only then is there a media step.
  offerToOpen: { type: 'upload-offer', offer: { ...OFFER, open: true } },
  openRequest: { type: 'open-request', id: 60, name: OFFER.name },
  data: { type: 'data', chunk: Buffer.from('ab') },
  end: { type: 'upload-end', id: OFFER.id, sha256: sha256(UPLOAD_BODY) },
  bye: { type: 'bye' },
  shutdown: { type: 'shutdown' },
  peerGone: { type: 'peer-gone' },
  peerEnded: { type: 'peer-ended', clean: true },
  protocolError: { type: 'protocol-error', error: new FerryError('E_BAD_FRAME') },
  timeout: { type: 'handshake.expired' },
  authTimeout: { type: 'handshake.expired' },
  wrongAuth: { type: 'auth', mac: WRONG_MAC },
  authDelay: { type: 'xstate.after.authFailureDelay.session.refusing' },
  fileReady: { type: 'file.ready', name: OFFER.name, offset: 0 },
  fileRefused: { type: 'file.refused', error: new FerryError('E_NO_SPACE') },
  fileSaved: { type: 'file.saved', saved: { savedAs: OFFER.name, path: '/model/model.bin', bytes: 4, sha256: sha256(UPLOAD_BODY) } },
  fileFailed: { type: 'file.failed', error: new FerryError('E_HASH_MISMATCH') },
  mediaDone: { type: `xstate.done.actor.${DISPATCH_ID}`, output: {} },
  mediaError: { type: `xstate.error.actor.${DISPATCH_ID}`, error: new Error('no app') },
} as const;

/**
 * What the driver can make happen in each state. Frames cannot reach the machine while it has
 * paused reading (opening, verifying, dispatchingMedia: they wait in the connection, and so does
 * the news of a vanished peer, see the session tests), and nothing can interrupt a message body on
 * the wire. In closing the client may already have ended or broken its stream, so the no-op
 * events there are injected directly (marked with `inject`).
 */
const sessionEvents: Record<string, readonly ModelEvent[]> = {
  handshaking: [S.shutdown, S.hello, S.ping, S.pong, S.messageHeader, S.messages, S.offer, S.openRequest, S.data, S.end, S.bye, S.peerGone, S.peerEnded, S.protocolError, S.timeout],
  // The right answer depends on the challenge's nonce, so it is added per state (see sessionTraversal).
  authenticating: [S.wrongAuth, S.shutdown, S.hello, S.messageHeader, S.ping, S.peerGone, S.peerEnded, S.protocolError, S.authTimeout],
  refusing: [S.authDelay],
  awaitingHeader: [S.shutdown, S.messageHeader, S.messages, S.offer, S.offerToOpen, S.openRequest, S.bye, S.hello, S.data, S.end, S.ping, S.pong, S.peerGone, S.peerEnded, S.protocolError],
  receivingBody: [S.message, S.shutdown, S.peerGone, S.peerEnded, S.protocolError],
  'receivingFile.opening': [S.fileReady, S.fileRefused, S.shutdown],
  'receivingFile.streaming': [S.data, S.end, S.fileFailed, S.hello, S.messageHeader, S.messages, S.offer, S.openRequest, S.bye, S.ping, S.pong, S.shutdown, S.peerGone, S.peerEnded, S.protocolError],
  'receivingFile.verifying': [S.fileSaved, S.fileFailed, S.shutdown],
  dispatchingMedia: [S.mediaDone, S.mediaError, S.shutdown],
  closing: [S.peerGone, S.shutdown, S.peerEnded, S.protocolError, S.ping],
  closed: [],
};
const injectedInClosing = new Set(['peer-ended', 'protocol-error', 'ping']);

/** The state value plus the context that changes what a state does next. */
function sessionModelState(s: SessionSnapshot) {
  const request = s.context.openRequest ? 'open' : s.context.upload ? (s.context.upload.offer.open ? 'upload+open' : 'upload') : null;
  return { value: s.value, draining: s.context.draining, request, status: s.status };
}
const serializeSession = (s: SessionSnapshot) => JSON.stringify(sessionModelState(s));

/** The nonce of the walk's own challenge; the replay answers whatever challenge the real session sends. */
const MODEL_NONCE = '0123456789abcdef0123456789abcdef';

/** The session as the walk sees it: the real machine, with a token to check and nothing connected. */
const sessionModel = sessionLogic({
  store: { begin: () => Promise.reject(new Error('not used')), existing: () => Promise.reject(new Error('not used')) },
  journal: new MessageJournal(),
  codecs: nativeOnly,
  log: pino({ level: 'silent' }),
  linkOf: () => undefined,
  now: () => 0,
  answerMatches: (nonce, mac) => macMatches(TOKEN, nonce, mac),
});

function sessionTraversal(events: Record<string, readonly ModelEvent[]>) {
  return {
    input: {
      id: 'model',
      remote: 'model:1',
      limits: DEFAULT_LIMITS,
      timeouts: { handshakeMs: HANDSHAKE_MS },
      agent: 'model',
      media: { enabled: false, apps: defaultMediaApps(), perMinute: 10 },
      authRequired: true,
      authFailureDelayMs: AUTH_DELAY_MS,
      nonce: MODEL_NONCE,
    },
    serializeState: serializeSession as never,
    events: ((s: SessionSnapshot) => {
      const here = events[valueString(s.value)] ?? [];
      return valueString(s.value) === 'authenticating' && s.context.settings.nonce ? [{ type: 'auth', mac: authMac(TOKEN, s.context.settings.nonce) }, ...here] : here;
    }) as never,
  };
}

/** Causes session events over the wire (or through the store, the media step and the clock). */
class SessionDriver {
  private preambleSent = false;
  private pendingMessage: Buffer | undefined;
  private sent = 0;
  saved = 0;

  constructor(readonly h: SessionHarness) {}

  private write(...chunks: Buffer[]): void {
    if (!this.preambleSent) {
      this.preambleSent = true;
      chunks.unshift(preamble());
    }
    this.h.client.write(Buffer.concat(chunks));
  }

  async cause(from: string, event: ModelEvent, rest: readonly ModelEvent[]): Promise<void> {
    const { h } = this;
    if (from === 'closing' && injectedInClosing.has(event.type)) {
      h.actor.send(event as SessionEvent);
      return;
    }
    switch (event.type) {
      case 'hello':
        return this.write(encode.hello({ version: 1, agent: 'model' }));
      case 'auth': {
        const mac = (event as { mac: string }).mac;
        if (mac === WRONG_MAC) return this.write(encode.auth(WRONG_MAC));
        // The right answer to the real session's own challenge.
        const challenge = await h.client.tokens.skipTo((t) => t.type === 'challenge', 'the challenge');
        return this.write(encode.auth(authMac(TOKEN, (challenge as { nonce: string }).nonce)));
      }
      case S.authTimeout.type:
        h.clock.increment(HANDSHAKE_MS);
        return;
      case S.authDelay.type:
        h.clock.increment(AUTH_DELAY_MS);
        return;
      case 'ping':
        return this.write(encode.ping(Buffer.from('p')));
      case 'pong':
        return this.write(encode.pong());
      case 'message-header': {
        const frame = encode.message(1, 'hi');
        this.pendingMessage = frame.subarray(6);
        return this.write(frame.subarray(0, 6));
      }
      case 'message':
        return this.write(this.pendingMessage!);
      case 'messages':
        return this.write(encode.message(2, 'm2'), encode.message(3, 'm3'));
      case 'open-request':
        return this.write(encode.open(60, OFFER.name));
      case 'upload-offer':
        this.sent = 0;
        h.store.beginGate = deferred();
        h.store.finishGate = deferred();
        return this.write(encode.uploadOffer((event as typeof S.offer | typeof S.offerToOpen).offer));
      case 'file.ready':
        return h.store.beginGate!.resolve();
      case 'file.refused':
        return h.store.beginGate!.reject(new FerryError('E_NO_SPACE', 'Full.'));
      case 'data':
        if (from !== 'receivingFile.streaming') return this.write(encode.dataHeader(2), Buffer.from('ab'));
        this.sent += 2;
        return this.write(encode.dataHeader(2), UPLOAD_BODY.subarray(0, 2));
      case 'upload-end': {
        if (from !== 'receivingFile.streaming') return this.write(encode.uploadEnd(OFFER.id, '0'.repeat(64)));
        const outcome = rest.find((e) => e.type === 'file.saved' || e.type === 'file.failed');
        const remaining = UPLOAD_BODY.subarray(this.sent);
        this.sent = UPLOAD_BODY.length;
        const hash = outcome?.type === 'file.failed' ? sha256(Buffer.from('not it')) : sha256(UPLOAD_BODY);
        return this.write(encode.dataHeader(remaining.length), remaining, encode.uploadEnd(OFFER.id, hash));
      }
      case 'file.failed':
        if (from === 'receivingFile.verifying') return h.store.finishGate!.resolve();
        // Streaming: more bytes than were offered.
        return this.write(encode.dataHeader(UPLOAD_BODY.length + 1), Buffer.alloc(UPLOAD_BODY.length + 1));
      case 'file.saved':
        this.saved++;
        return h.store.finishGate!.resolve();
      case S.mediaDone.type:
        return (await h.dispatch.pending.next()).resolve({});
      case S.mediaError.type:
        return (await h.dispatch.pending.next()).reject(new Error('no app'));
      case 'bye':
        return this.write(encode.bye());
      case 'shutdown':
        h.actor.send({ type: 'shutdown' });
        return;
      case 'peer-gone':
        return h.clientEnd.reset();
      case 'peer-ended':
        // Keep the server's FIN from completing the close, so closing stays observable.
        h.serverEnd.stall();
        return h.clientEnd.end();
      case 'protocol-error':
        if (from === 'receivingBody') {
          const body = Buffer.from(this.pendingMessage!);
          body.fill(0xff, body.length - 2);
          return this.write(body);
        }
        if (!this.preambleSent) {
          this.preambleSent = true;
          return this.h.client.write(Buffer.from([0x00]));
        }
        return this.write(frameHeader(0x7f, 0));
      case S.timeout.type:
        h.clock.increment(HANDSHAKE_MS);
        return;
      default:
        throw new Error(`the session driver cannot cause ${event.type}`);
    }
  }

  /**
   * Checks that the session still listens where the path left it: between commands a message
   * round trip, while streaming a ping. Catches hidden state the graph does not show, such as
   * reading left paused after an upload.
   */
  async probe(): Promise<void> {
    const { h } = this;
    const state = valueString(h.value());
    if (state === 'awaitingHeader') {
      const acked = h.processed('messages');
      this.write(encode.message(99, 'probe'));
      expect((await acked).value).toBe('awaitingHeader');
      expect(await h.client.tokens.skipTo((t) => t.type === 'message-ack' && t.id === 99, 'the probe ack')).toEqual({ type: 'message-ack', id: 99, text: 'probe' });
    } else if (state === 'receivingFile.streaming') {
      const pinged = h.processed('ping');
      this.write(encode.ping(Buffer.from('probe')));
      expect((await pinged).value).toEqual({ receivingFile: 'streaming' });
      expect(await h.client.tokens.skipTo((t) => t.type === 'pong' && t.payload.toString() === 'probe', 'the probe pong')).toEqual({ type: 'pong', payload: Buffer.from('probe') });
    }
  }

  /** Stops the session, lets the store settle, and checks what is left on disk. */
  async finish(): Promise<void> {
    const { h } = this;
    h.actor.stop();
    if (h.store.beginGate && !h.store.beginGate.settled) h.store.beginGate.reject(new FerryError('E_STORE_FAILED', 'test over'));
    if (h.store.finishGate && !h.store.finishGate.settled) h.store.finishGate.reject(new FerryError('E_STORE_FAILED', 'test over'));
    await h.store.settled();
    h.clientEnd.destroy();
    // Only uploads the session confirmed as saved leave a file; nothing half-written survives.
    expect(finalFiles(h.root)).toHaveLength(this.saved);
    expect(partialFiles(h.root)).toEqual([]);
  }
}

async function replaySession(p: AnyPath, coverage: Coverage): Promise<void> {
  const h = new SessionHarness({ handshakeMs: HANDSHAKE_MS, token: TOKEN, authFailureDelayMs: AUTH_DELAY_MS });
  h.dispatch.hold = true;
  const driver = new SessionDriver(h);
  try {
    expect(h.value()).toEqual(p.steps[0]!.state.value);
    coverage.visit(h.actor.getSnapshot());
    for (let i = 1; i < p.steps.length; i++) {
      const { event, state } = p.steps[i]!;
      const from = valueString(p.steps[i - 1]!.state.value);
      const processed = h.processed(event.type);
      await driver.cause(from, event, p.steps.slice(i + 1).map((s) => s.event));
      const snapshot = await processed;
      const expected = state as unknown as SessionSnapshot;
      expect({ step: i, event: event.type, ...sessionModelState(snapshot) }).toEqual({ step: i, event: event.type, ...sessionModelState(expected) });
      coverage.visit(snapshot);
    }
    await driver.probe();
  } finally {
    await driver.finish();
  }
}

const sessionCoverage = new Coverage(sessionModel);
const sessionPaths = transitionPaths(sessionModel, sessionTraversal(sessionEvents), serializeSession as never);

/**
 * Longer journeys: every simple path (no state visited twice) from the start to any state, over
 * the same events. With the states told apart by `draining`, these include shutdowns at each step
 * of an upload and every way a session can end.
 */
const sessionJourneys = getSimplePaths(sessionModel, sessionTraversal(sessionEvents)) as unknown as AnyPath[];

describe('session model', () => {
  it('has every state of the machine in the graph', () => {
    const reachable = new Set(sessionPaths.flatMap((p) => p.steps.map((s) => valueString(s.state.value))));
    expect([...reachable].sort()).toEqual(Object.keys(sessionEvents).sort());
  });

  it.each(named(sessionPaths))('transition: %s', async (_name, p) => {
    await replaySession(p, sessionCoverage);
  });

  it.each(named(sessionJourneys))('journey: %s', async (_name, p) => {
    await replaySession(p, sessionCoverage);
  });

  it('reached every state node of the real session machine', () => {
    expect(sessionPaths.length).toBeGreaterThan(50);
    expect(sessionJourneys.length).toBeGreaterThan(100);
    expect(sessionCoverage.missing()).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// The client model

const MESSAGE_ID = 1;
const UPLOAD_ID = 2;
const OPEN_ID = 3;
/** A second upload, so that one can be offered while the first is being confirmed. */
const NEXT_UPLOAD_ID = 4;
const uploadDir = tempDir('ferry-model-');
/**
 * Large enough that, while the fake server does not read, the link stops in the middle of the
 * file (it waits for `drain` past 1 MiB on the wire): `streaming` lasts until the driver lets the
 * bytes through, so the graph's events in that phase can really happen in it.
 */
const UPLOAD_SIZE = 1_100_000;
const FILES = new Map(
  [UPLOAD_ID, NEXT_UPLOAD_ID].map((id) => {
    const file = path.join(uploadDir, `model-upload-${id}.bin`);
    const bytes = content(UPLOAD_SIZE, 20 + id);
    fs.writeFileSync(file, bytes);
    return [id, { file, name: path.basename(file), sha256: sha256(bytes) }] as const;
  }),
);
const fileOf = (id: number) => FILES.get(id)!;

const C = {
  linkUp: { type: 'link.up', welcome: { version: 1, agent: 'model', session: 's', maxMessage: DEFAULT_LIMITS.maxMessage, maxFrame: DEFAULT_LIMITS.maxFrame } },
  linkDown: { type: 'link.down', error: new FerryError('E_CONNECTION_LOST'), jitter: 0.5 },
  linkFatal: { type: 'link.down', error: new FerryError('E_BAD_PREAMBLE'), jitter: 0.5 },
  message: { type: 'message', id: MESSAGE_ID, text: 'm1' },
  upload: { type: 'upload', id: UPLOAD_ID, path: fileOf(UPLOAD_ID).file },
  nextUpload: { type: 'upload', id: NEXT_UPLOAD_ID, path: fileOf(NEXT_UPLOAD_ID).file },
  open: { type: 'open', id: OPEN_ID, name: 'stored.png' },
  close: { type: 'close' },
  backoff: { type: 'xstate.after.backoff.client.retrying' },
} as const;

const accept = (id: number) => ({ type: 'server.accept', id, offset: 0 });
const sent = (id: number) => ({ type: 'upload.sent', id, sha256: fileOf(id).sha256 });
const done = (id: number) => ({ type: 'server.done', result: { id, savedAs: fileOf(id).name, bytes: UPLOAD_SIZE, sha256: fileOf(id).sha256 } });
const refuse = (id: number) => ({ type: 'server.error', error: { code: 'E_NO_SPACE', message: 'Full.', id } });

function clientEvents(s: ClientSnapshot): ModelEvent[] {
  const { queue, inflight, uploads } = s.context;
  const jobs = [...queue, ...inflight, ...uploads].map((j) => j.id);
  const newWork = [C.message, C.upload, C.open].filter((e) => !jobs.includes(e.id));
  const acks = inflight.flatMap((job) => [
    job.kind === 'message' ? { type: 'server.ack', acks: [{ id: job.id, text: job.text }] } : { type: 'server.opened', id: job.id, result: { opened: false, code: 'E_NOT_FOUND', message: 'No such file.' } },
    { type: 'server.error', error: { code: 'E_BAD_UTF8', message: 'Refused.', id: job.id } },
  ]);
  const always = [...newWork, ...acks, C.linkDown, C.linkFatal, C.close];
  const current = uploads[0]?.id ?? -1;
  // Queueing work and settling answers are the same transitions in every phase of an upload: they
  // are walked in `offering`. Later phases take what moves the upload on, the second upload (to
  // offer it early), and the ways a connection ends.
  const later = [...(jobs.includes(NEXT_UPLOAD_ID) ? [] : [C.nextUpload]), C.linkDown, C.linkFatal, C.close];
  switch (valueString(s.value)) {
    case 'online.connecting':
      return [C.linkUp, C.linkDown, C.linkFatal, C.close, ...newWork];
    case 'online.connected.idle':
      return always;
    case 'online.connected.uploading.offering':
      return [accept(current), refuse(current), ...always];
    case 'online.connected.uploading.streaming':
      return [sent(current), refuse(current), ...later];
    case 'online.connected.uploading.confirming.alone':
    case 'online.connected.uploading.confirming.withNext':
      return [done(current), refuse(current), ...later];
    case 'online.closing':
      return [...acks.filter((e) => e.type !== 'server.error'), C.linkDown, C.linkFatal];
    case 'retrying':
      return [C.backoff, ...newWork, C.close];
    default:
      return [];
  }
}

const serializeClient = (s: ClientSnapshot) =>
  JSON.stringify({
    value: s.value,
    queue: s.context.queue.map((j) => j.id),
    inflight: s.context.inflight.map((j) => j.id),
    uploads: s.context.uploads.map((j) => j.id),
    status: s.status,
  });

function clientTraversal(events: (s: ClientSnapshot) => ModelEvent[]) {
  return {
    input: {
      link: { hello: { version: 1, agent: 'model', clientId: 'model' }, limits: DEFAULT_LIMITS, handshakeMs: 10_000, heartbeatMs: 0 },
      retry: { initialMs: 5, maxMs: 20, forMs: undefined },
      maxQueued: 100,
      pipelineUploads: true,
    },
    serializeState: serializeClient as never,
    events: events as never,
  };
}

/** Plays the server for the client machine, causing each event the way a server would. */
class ClientDriver {
  private consumed = 0;
  private conn: ServerConn | undefined;
  private helloSeen = false;
  /** The server is not reading: the upload being streamed stops in the middle. */
  private holding = false;

  constructor(readonly h: ClientHarness) {}

  private async current(): Promise<ServerConn> {
    while (this.consumed < this.h.server.dials) {
      this.conn = await this.h.server.next();
      this.consumed++;
      this.helloSeen = false;
      this.holding = false;
    }
    return this.conn!;
  }

  /** The link of the current connection has said hello (so it is listening). */
  private async linked(): Promise<ServerConn> {
    const conn = await this.current();
    if (!this.helloSeen) {
      await conn.tokens.skipTo((t) => t.type === 'hello', 'the hello');
      this.helloSeen = true;
    }
    return conn;
  }

  /** Lets the bytes held back by the server through. */
  private release(): void {
    if (!this.holding) return;
    this.holding = false;
    this.conn!.transport.resume();
  }

  async cause(from: ClientSnapshot, modelEvent: ModelEvent): Promise<void> {
    const { h } = this;
    if (modelEvent.type === C.backoff.type) {
      h.clock.increment(from.context.retryDelayMs);
      return;
    }
    const event = modelEvent as ClientEvent;
    switch (event.type) {
      case 'message':
      case 'upload':
      case 'open':
      case 'close':
        h.actor.send(event);
        return;
      case 'link.up':
        return (await this.linked()).welcome('s');
      case 'link.down': {
        const conn = await this.linked();
        if (event.error.code === 'E_CONNECTION_LOST') return conn.transport.reset();
        // Something that is not ferry: a foreign greeting before the welcome, an unknown frame after it.
        conn.transport.write(from.matches({ online: 'connecting' }) ? Buffer.from('SSH-2.0-OpenSSH\r\n') : frameHeader(0x7f, 0));
        return;
      }
      case 'server.ack': {
        const conn = await this.linked();
        for (const ack of event.acks) conn.ack(ack.id, ack.text);
        return;
      }
      case 'server.opened':
        return (await this.linked()).openResult(event.id, event.result);
      case 'server.error':
        return (await this.linked()).error(event.error.code, event.error.message, event.error.id);
      case 'server.accept': {
        const conn = await this.linked();
        // Stop reading first: the file then stays in the middle of its stream until upload.sent.
        conn.transport.pause();
        this.holding = true;
        return conn.accept(event.id);
      }
      case 'upload.sent':
        return this.release();
      case 'server.done': {
        const conn = await this.linked();
        const end = await conn.tokens.skipTo((t) => t.type === 'upload-end' && t.id === event.result.id, 'the upload to end');
        expect(end).toEqual({ type: 'upload-end', id: event.result.id, sha256: fileOf(event.result.id).sha256 });
        return conn.done(event.result);
      }
      default:
        throw new Error(`the client driver cannot cause ${event.type}`);
    }
  }

  /**
   * After each step: waits until every upload the step offered is on the wire (the link checks
   * the file first), and lets the server read again once nothing is streaming.
   */
  async settle(before: ClientSnapshot, after: ClientSnapshot): Promise<void> {
    if (!after.matches({ online: { connected: { uploading: 'streaming' } } })) this.release();
    const known = new Set(before.context.uploads.map((j) => j.id));
    for (const { id } of after.context.uploads.filter((j) => !known.has(j.id))) {
      const conn = await this.current();
      await this.h.next('upload-started', (e) => e.id === id);
      // Taken out of turn: an early offer follows the current upload's bytes, which stay for server.done.
      const offer = await conn.tokens.next((t) => t.type === 'upload-offer' && t.offer.id === id, 'the upload offer');
      if (offer.type !== 'upload-offer') throw new Error(`expected an upload offer, got ${offer.type}`);
      const { sha256: offeredHash, ...rest } = offer.offer;
      expect(rest).toEqual({ id, name: fileOf(id).name, size: UPLOAD_SIZE, key: expect.stringMatching(/^[0-9a-f]{32}$/) });
      // A file the server confirmed earlier in the path is offered with its hash, so a server could skip it.
      if (offeredHash !== undefined) expect(offeredHash).toBe(fileOf(id).sha256);
    }
  }

  /**
   * Checks that the client still works where the path left it: uploads under way finish, phase by
   * phase, and each is reported as uploaded; then, connected and idle, a message makes the round trip.
   */
  async probe(): Promise<void> {
    const { h } = this;
    const finishing = new Set<number>();
    for (let step = 0; step < 12; step++) {
      const before = h.actor.getSnapshot();
      const id = before.context.uploads[0]?.id;
      const phase = valueString(before.value);
      const event = phase.endsWith('offering') ? accept(id!) : phase.endsWith('streaming') ? sent(id!) : phase.includes('confirming') ? done(id!) : undefined;
      if (!event) break;
      if (event.type === 'server.done') finishing.add(id!);
      const processed = h.processed(event.type);
      await this.cause(before, event);
      await this.settle(before, await processed);
    }
    for (const id of finishing) expect(await h.next('uploaded', (e) => e.id === id)).toMatchObject({ id, result: { savedAs: fileOf(id).name } });
    if (valueString(h.value()) === 'online.connected.idle') {
      const conn = await this.linked();
      h.actor.send({ type: 'message', id: 99, text: 'probe' });
      await conn.tokens.skipTo((t) => t.type === 'message' && t.id === 99, 'the probe message');
      conn.ack(99, 'probe');
      expect(await h.nextReply((e) => e.id === 99)).toEqual({ id: 99, text: 'probe' });
    }
  }
}

async function replayClient(p: AnyPath, coverage: Coverage): Promise<void> {
  const h = new ClientHarness({ simulated: true, retry: { initialMs: 5, maxMs: 20 }, clientId: 'model' }).start();
  const driver = new ClientDriver(h);
  try {
    expect(h.value()).toEqual(p.steps[0]!.state.value);
    coverage.visit(h.actor.getSnapshot());
    for (let i = 1; i < p.steps.length; i++) {
      const { event, state } = p.steps[i]!;
      const before = h.actor.getSnapshot();
      const processed = h.processed(event.type);
      await driver.cause(before, event);
      const snapshot = await processed;
      const expected = state as unknown as ClientSnapshot;
      expect({ step: i, event: event.type, state: JSON.parse(serializeClient(snapshot)) as unknown }).toEqual({
        step: i,
        event: event.type,
        state: JSON.parse(serializeClient(expected)) as unknown,
      });
      coverage.visit(snapshot);
      await driver.settle(before, snapshot);
    }
    await driver.probe();
  } finally {
    h.dispose();
  }
}

const clientCoverage = new Coverage(clientMachine);
const clientPaths = transitionPaths(clientMachine, clientTraversal(clientEvents), serializeClient as never);

/**
 * Longer journeys: every simple path through the connection life cycle combined with messages,
 * with open requests, and with one upload through its phases; and two uploads in a row, the second
 * offered while the first is confirmed. (All simple paths over every event number in the thousands.)
 */
function clientJourneysOver(types: string[], without: number[] = []): AnyPath[] {
  const events = (s: ClientSnapshot) => clientEvents(s).filter((e) => types.includes(e.type) && !(e.type === 'upload' && without.includes(e.id as number)));
  return getSimplePaths(clientMachine, clientTraversal(events)) as unknown as AnyPath[];
}
const lifecycle = ['link.up', 'link.down', 'close', C.backoff.type];
const uploadPhases = ['upload', 'server.accept', 'upload.sent', 'server.done'];
const clientJourneys = [
  ...clientJourneysOver([...lifecycle, 'message', 'server.ack']),
  ...clientJourneysOver([...lifecycle, 'open', 'server.opened']),
  ...clientJourneysOver([...lifecycle, ...uploadPhases], [NEXT_UPLOAD_ID]),
  ...clientJourneysOver(['link.up', ...uploadPhases]),
];

describe('client model', () => {
  it('has every state of the machine in the graph', () => {
    const reachable = new Set(clientPaths.flatMap((p) => p.steps.map((s) => valueString(s.state.value))));
    expect([...reachable].sort()).toEqual([
      'disconnected',
      'online.closing',
      'online.connected.idle',
      'online.connected.uploading.confirming.alone',
      'online.connected.uploading.confirming.withNext',
      'online.connected.uploading.offering',
      'online.connected.uploading.streaming',
      'online.connecting',
      'retrying',
    ]);
  });

  it.each(named(clientPaths))('transition: %s', async (_name, p) => {
    await replayClient(p, clientCoverage);
  });

  it.each(named(clientJourneys))('journey: %s', async (_name, p) => {
    await replayClient(p, clientCoverage);
  });

  it('reached every state node of the real client machine', () => {
    expect(clientPaths.length).toBeGreaterThan(50);
    expect(clientJourneys.length).toBeGreaterThan(100);
    expect(clientCoverage.missing()).toEqual([]);
  });
});
