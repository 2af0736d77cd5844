/**
 * Fuzzing with fast-check: random bytes and mutated valid streams (bytes flipped, inserted,
 * deleted; the result cut at random places) fed to the server-side codecs and to real session
 * machines over memory transports.
 *
 * - The codecs raise nothing but typed ProtocolErrors, and keep raising the same one afterwards.
 * - A session always reaches `closed` once the peer has ended; every file it began is finished or
 *   aborted; no partial is left behind; nothing is stored under a final name unless the stream held
 *   a whole valid upload; what it says back is well-formed; a well-behaved session running
 *   alongside on the same store keeps answering.
 *
 * Time-budgeted: about 10 s in all, about 60 s with CI=true. Prints nothing on success.
 */
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { createActor, waitFor } from 'xstate';
import type { SessionEmitted } from '../machines/session.machine.js';
import { nativeAndLegacy } from '../machines/actors/session-connection.js';
import type { FileSink } from '../machines/actors/file-receiver.js';
import { defaultMediaApps } from '../media/launcher.js';
import { safeName, safeRelativePath } from '../media/names.js';
import { UploadStore, type IncomingFile, type SavedFile } from '../media/upload-store.js';
import { ErrorCodes, ProtocolError } from '../transport/errors.js';
import { DEFAULT_LIMITS, PREAMBLE_MAGIC, type ClientToken, type Limits, type ServerToken } from '../transport/frames.js';
import { ClientDecoder, ServerDecoder, encode, preamble } from '../transport/native-codec.js';
import { LegacyServerDecoder, LEGACY_EXIT_COMMAND, LEGACY_FILE_COMMAND, encodeLegacyFileHeader, encodeLegacyMessage } from '../transport/legacy-codec.js';
import { memoryPair } from '../transport/memory-transport.js';
import { deferred, partialFiles, removeTempDirs, sha256, tempDir, within } from './helpers/async.js';
import { PeerClient, soloSession } from './helpers/session-harness.js';

const TOTAL_MS = process.env.CI === 'true' ? 60_000 : 10_000;
/** A property's share of the budget, and a test timeout that leaves room for the last run and shrinking. */
const budget = (share: number) => Math.round(TOTAL_MS * share);
const timeoutFor = (share: number) => budget(share) + 30_000;
const runs = (share: number) => ({ numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(budget(share))] });

const SMALL_LIMITS: Limits = { maxFrame: 512, maxMessage: 256 };
const KNOWN_CODES = new Set(Object.keys(ErrorCodes));

afterAll(() => removeTempDirs());

// --- Streams ----------------------------------------------------------------------------------

type Mutation = { kind: 'flip' | 'insert' | 'delete'; at: number; byte: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  kind: fc.constantFrom('flip' as const, 'insert' as const, 'delete' as const),
  at: fc.nat(),
  byte: fc.integer({ min: 0, max: 255 }),
});

function mutate(bytes: Buffer, mutations: Mutation[]): Buffer {
  let out = Buffer.from(bytes);
  for (const m of mutations) {
    if (m.kind === 'insert') {
      const at = m.at % (out.length + 1);
      out = Buffer.concat([out.subarray(0, at), Buffer.from([m.byte]), out.subarray(at)]);
    } else if (out.length > 0) {
      const at = m.at % out.length;
      if (m.kind === 'flip') out[at] = out[at]! ^ (m.byte || 1);
      else out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1)]);
    }
  }
  return out;
}

/** Cuts `bytes` at the given points (taken modulo its length); every piece is non-empty. */
function split(bytes: Buffer, cuts: number[]): Buffer[] {
  if (bytes.length === 0) return [];
  const points = [...new Set(cuts.map((c) => c % bytes.length).filter((c) => c > 0))].sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let start = 0;
  for (const point of [...points, bytes.length]) {
    pieces.push(bytes.subarray(start, point));
    start = point;
  }
  return pieces;
}

const textArb = fc.string({ unit: 'grapheme', maxLength: 24 });
const contentArb = fc.uint8Array({ maxLength: 3000 }).map((a) => Buffer.from(a));
const nativeNameArb = fc.oneof(
  fc.constantFrom('a.txt', 'photo.jpg', '../up.txt', 'C:\\win.txt', 'NUL.txt', '..cache', 'do..ts.txt', '.ferry', '..', 'bad\u0000.txt', 'e\u0301.txt'),
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }),
);
/** Names an original client can carry: at most 20 bytes, no leading or trailing spaces. */
const legacyNameArb = fc.constantFrom('a.txt', 'photo.jpg', '../up.txt', 'C:\\win.txt', 'NUL.txt', 'x y.txt', '\u00e9t\u00e9.png', '..');

interface NativePlan {
  clientId: string;
  before: string[];
  upload: { name: string; content: Buffer; pieces: number[] } | undefined;
  after: string[];
  bye: boolean;
}

const nativePlanArb: fc.Arbitrary<NativePlan> = fc.record({
  clientId: fc.constantFrom('fuzz-client', 'fuzz-other'),
  before: fc.array(textArb, { maxLength: 3 }),
  upload: fc.option(fc.record({ name: nativeNameArb, content: contentArb, pieces: fc.array(fc.nat(), { maxLength: 3 }) }), { nil: undefined }),
  after: fc.array(textArb, { maxLength: 2 }),
  bye: fc.boolean(),
});

/** A valid native conversation, pipelined the way a client that trusts the server would send it. */
function nativeStream(plan: NativePlan): Buffer {
  const parts: Buffer[] = [preamble(), encode.hello({ version: 1, agent: 'fuzz', clientId: plan.clientId })];
  let id = 1;
  for (const text of plan.before) parts.push(encode.message(id++, text));
  if (plan.upload) {
    const { name, content, pieces } = plan.upload;
    const uploadId = id++;
    parts.push(encode.uploadOffer({ id: uploadId, name, size: content.length }));
    for (const piece of split(content, pieces)) parts.push(encode.dataHeader(piece.length), piece);
    parts.push(encode.uploadEnd(uploadId, sha256(content)));
  }
  for (const text of plan.after) parts.push(encode.message(id++, text));
  if (plan.bye) parts.push(encode.bye());
  return Buffer.concat(parts);
}

interface LegacyPlan {
  before: string[];
  upload: { name: string; content: Buffer } | undefined;
  after: string[];
  exit: boolean;
}

const legacyPlanArb: fc.Arbitrary<LegacyPlan> = fc.record({
  before: fc.array(textArb, { maxLength: 3 }),
  upload: fc.option(fc.record({ name: legacyNameArb, content: contentArb }), { nil: undefined }),
  after: fc.array(textArb, { maxLength: 2 }),
  exit: fc.boolean(),
});

function legacyStream(plan: LegacyPlan): Buffer {
  const parts: Buffer[] = plan.before.map(encodeLegacyMessage);
  if (plan.upload) parts.push(LEGACY_FILE_COMMAND, encodeLegacyFileHeader(plan.upload.content.length, plan.upload.name), plan.upload.content);
  parts.push(...plan.after.map(encodeLegacyMessage));
  if (plan.exit) parts.push(LEGACY_EXIT_COMMAND);
  return Buffer.concat(parts);
}

type Input<P> = { kind: 'random'; bytes: Buffer; cuts: number[] } | { kind: 'stream'; plan: P; mutations: Mutation[]; cuts: number[] };

function inputArb<P>(planArb: fc.Arbitrary<P>, prefix: Buffer): fc.Arbitrary<Input<P>> {
  const cuts = fc.array(fc.nat(), { maxLength: 10 });
  return fc.oneof(
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('random' as const), bytes: fc.uint8Array({ maxLength: 1500 }).map((a) => Buffer.from(a)), cuts }) },
    {
      weight: 1,
      // Past the first byte: random bytes after a valid opening reach the frame parser.
      arbitrary: fc.record({ kind: fc.constant('random' as const), bytes: fc.uint8Array({ maxLength: 1500 }).map((a) => Buffer.concat([prefix, a])), cuts }),
    },
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('stream' as const), plan: planArb, mutations: fc.array(mutationArb, { maxLength: 4 }), cuts }) },
  );
}

function bytesOf<P>(input: Input<P>, encodeStream: (plan: P) => Buffer): Buffer {
  return input.kind === 'random' ? input.bytes : mutate(encodeStream(input.plan), input.mutations);
}

// --- The codecs ---------------------------------------------------------------------------------

interface Decoder {
  feed(chunk: Buffer): ServerToken[];
}

const TOKEN_TYPES = new Set(['hello', 'message-header', 'message', 'upload-offer', 'data', 'upload-end', 'open-request', 'auth', 'ping', 'pong', 'bye']);

/** Feeds every piece; returns the tokens, or the ProtocolError that stopped the decoder (after checking it sticks). */
function decodeAll(decoder: Decoder, pieces: Buffer[]): { tokens: ServerToken[]; error: ProtocolError | undefined } {
  const tokens: ServerToken[] = [];
  for (const piece of pieces) {
    try {
      tokens.push(...decoder.feed(piece));
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw new Error(`the decoder threw ${String(err)} instead of a ProtocolError`, { cause: err });
      expect(KNOWN_CODES.has(err.code)).toBe(true);
      expect(err.message.length).toBeGreaterThan(0);
      // A failed decoder refuses everything after, with the same error.
      expect(() => decoder.feed(Buffer.from([0x30]))).toThrow(err);
      return { tokens, error: err };
    }
  }
  for (const token of tokens) expect(TOKEN_TYPES.has(token.type)).toBe(true);
  return { tokens, error: undefined };
}

function dataOf(tokens: ServerToken[]): Buffer {
  return Buffer.concat(tokens.flatMap((t) => (t.type === 'data' ? [t.chunk] : [])));
}

/** The first upload in `tokens` as a session reads it: the offered size, the DATA up to its end, and the end's checksum. */
function uploadIn(tokens: ServerToken[]): { size: number | undefined; data: Buffer; sha256: string | undefined } {
  const start = tokens.findIndex((t) => t.type === 'upload-offer');
  const offer = tokens[start];
  const rest = start < 0 ? [] : tokens.slice(start + 1);
  const endAt = rest.findIndex((t) => t.type === 'upload-end');
  const end = rest[endAt];
  return {
    size: offer?.type === 'upload-offer' ? offer.offer.size : undefined,
    data: dataOf(endAt < 0 ? rest : rest.slice(0, endAt)),
    sha256: end?.type === 'upload-end' ? end.sha256 : undefined,
  };
}

describe('codecs under random and mutated input', () => {
  const nativeInputs = inputArb(nativePlanArb, Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'fuzz' })]));
  const legacyInputs = inputArb(legacyPlanArb, Buffer.from('0000000001x'));

  it(
    'ServerDecoder raises only ProtocolErrors, and decodes an unmutated stream exactly, however it is cut',
    () => {
      fc.assert(
        fc.property(nativeInputs, fc.boolean(), (input, small) => {
          const bytes = bytesOf(input, nativeStream);
          const { tokens, error } = decodeAll(new ServerDecoder(small ? SMALL_LIMITS : DEFAULT_LIMITS), split(bytes, input.cuts));
          // Nothing is conjured up: streamed file bytes never outnumber the bytes fed in.
          expect(dataOf(tokens).length).toBeLessThanOrEqual(bytes.length);
          if (input.kind !== 'stream' || input.mutations.length > 0 || small) return;
          expect(error).toBeUndefined();
          const plan = input.plan;
          const texts = tokens.flatMap((t) => (t.type === 'message' ? [t.text] : []));
          expect(texts).toEqual([...plan.before, ...plan.after]);
          if (plan.upload) {
            expect(dataOf(tokens).equals(plan.upload.content)).toBe(true);
            expect(tokens.find((t) => t.type === 'upload-end')).toMatchObject({ sha256: sha256(plan.upload.content) });
          }
          expect(tokens[0]).toEqual({ type: 'hello', info: { version: 1, agent: 'fuzz', clientId: plan.clientId } });
          expect(tokens.some((t) => t.type === 'bye')).toBe(plan.bye);
        }),
        runs(0.12),
      );
    },
    timeoutFor(0.12),
  );

  it(
    'LegacyServerDecoder raises only ProtocolErrors, and decodes an unmutated stream exactly, however it is cut',
    () => {
      fc.assert(
        fc.property(legacyInputs, fc.boolean(), (input, small) => {
          const bytes = bytesOf(input, legacyStream);
          const { tokens, error } = decodeAll(new LegacyServerDecoder({ ...(small ? SMALL_LIMITS : DEFAULT_LIMITS), ...(small ? { maxFile: 1000 } : {}) }), split(bytes, input.cuts));
          expect(dataOf(tokens).length).toBeLessThanOrEqual(bytes.length);
          // The hello comes just before the first readable command; nothing readable, no hello.
          if (tokens.length > 0) expect(tokens[0]?.type).toBe('hello');
          if (input.kind !== 'stream' || input.mutations.length > 0 || small) return;
          expect(error).toBeUndefined();
          const plan = input.plan;
          expect(tokens.flatMap((t) => (t.type === 'message' ? [t.text] : []))).toEqual([...plan.before, ...plan.after]);
          if (plan.upload) {
            expect(tokens.find((t) => t.type === 'upload-offer')).toMatchObject({ offer: { name: plan.upload.name, size: plan.upload.content.length } });
            expect(dataOf(tokens).equals(plan.upload.content)).toBe(true);
          }
          expect(tokens.some((t) => t.type === 'bye')).toBe(plan.exit);
        }),
        runs(0.12),
      );
    },
    timeoutFor(0.12),
  );
});

// --- Sessions ---------------------------------------------------------------------------------

/** The real store, watched: every file begun must end up finished or aborted. */
class TrackingStore implements FileSink {
  private readonly begins: Promise<unknown>[] = [];
  private readonly released: Promise<unknown>[] = [];

  constructor(private readonly real: UploadStore) {}

  begin(offer: { name: string; size: number; key?: string }): Promise<IncomingFile> {
    const begun = this.real.begin(offer).then((file) => {
      const done = deferred();
      this.released.push(done.promise);
      return new TrackedFile(file, done.resolve);
    });
    this.begins.push(begun.catch(() => undefined));
    return begun;
  }

  existing(name: string): Promise<string> {
    return this.real.existing(name);
  }

  async settled(): Promise<void> {
    await Promise.all(this.begins);
    await Promise.all(this.released);
  }
}

class TrackedFile implements IncomingFile {
  constructor(
    private readonly file: IncomingFile,
    private readonly release: () => void,
  ) {}

  get name(): string {
    return this.file.name;
  }
  get size(): number {
    return this.file.size;
  }
  get received(): number {
    return this.file.received;
  }
  get resumedFrom(): number {
    return this.file.resumedFrom;
  }
  write(chunk: Buffer): boolean {
    return this.file.write(chunk);
  }
  onDrain(listener: () => void): void {
    this.file.onDrain(listener);
  }
  finish(expectedSha256?: string): Promise<SavedFile> {
    const finishing = this.file.finish(expectedSha256);
    finishing.then(this.release, this.release);
    return finishing;
  }
  abort(): Promise<void> {
    const aborting = this.file.abort();
    void aborting.then(this.release);
    return aborting;
  }
}

const silent = pino({ level: 'silent' });
const media = { enabled: false, apps: defaultMediaApps(), perMinute: 10 };

function startSession(id: string, store: FileSink, transport: ReturnType<typeof memoryPair>[1]) {
  const emitted: SessionEmitted[] = [];
  const { logic, input } = soloSession({ id, transport, store, log: silent, codecs: nativeAndLegacy(), timeouts: { handshakeMs: 10_000 }, media });
  const actor = createActor(logic, { input: { ...input, agent: 'fuzz-server' } });
  actor.on('*', (e) => void emitted.push(e as SessionEmitted));
  actor.start();
  return { actor, emitted };
}

/** A well-behaved native client on a session of its own, on the same store as the fuzzed ones. */
async function startNeighbour(store: UploadStore) {
  const [serverEnd, clientEnd] = memoryPair();
  const { actor } = startSession('neighbour', store, serverEnd);
  const peer = new PeerClient(clientEnd);
  peer.hello('neighbour');
  await within(peer.expect('welcome'), 'the neighbour to be welcomed');
  let nextId = 1;
  return {
    async probe(): Promise<void> {
      const id = nextId++;
      peer.write(encode.message(id, `still fine ${id}`));
      const ack = await within(peer.expect('message-ack'), 'the neighbour\u2019s acknowledgement');
      expect(ack).toEqual({ type: 'message-ack', id, text: `still fine ${id}` });
    },
    /** Uploads, checks the stored file, says goodbye and waits for the session to close. */
    async finish(root: string): Promise<void> {
      const id = nextId++;
      const content = Buffer.from(`neighbour upload ${id}`);
      peer.write(encode.uploadOffer({ id, name: 'neighbour.bin', size: content.length }));
      expect(await within(peer.expect('upload-accept'), 'the neighbour\u2019s upload to be accepted')).toMatchObject({ id, offset: 0 });
      peer.data(content);
      peer.write(encode.uploadEnd(id, sha256(content)));
      const done = await within(peer.expect('upload-done'), 'the neighbour\u2019s upload to be stored');
      expect(fs.readFileSync(path.join(root, done.result.savedAs)).equals(content)).toBe(true);
      peer.write(encode.bye());
      await within(peer.ended.promise, 'the session to end its side');
      clientEnd.end();
      await within(waitFor(actor, (s) => s.status === 'done', { timeout: Infinity }), 'the neighbour session to close');
    },
  };
}

interface SessionRun {
  /** Every reply byte the session wrote. */
  replies: Buffer;
  emitted: SessionEmitted[];
  /** Final files that appeared during the run. */
  stored: string[];
  /** Replies decoded as native frames (when the session answered natively). */
  tokens: ClientToken[];
}

/** Feeds `pieces` to a fresh session, optionally probes it, ends the peer, and waits for everything to settle. */
async function runSession(store: UploadStore, root: string, pieces: Buffer[], probe?: { bytes: Buffer; answered: (replies: Buffer) => boolean }): Promise<SessionRun> {
  const before = new Set(filesUnder(root));
  const tracking = new TrackingStore(store);
  const [serverEnd, clientEnd] = memoryPair();
  const { actor, emitted } = startSession('fuzzed', tracking, serverEnd);
  const received: Buffer[] = [];
  let answered: (() => void) | undefined;
  clientEnd.on('data', (chunk) => {
    received.push(chunk);
    if (answered && probe?.answered(Buffer.concat(received))) answered();
  });
  clientEnd.on('error', () => {});
  try {
    for (const piece of pieces) clientEnd.write(piece);
    if (probe) {
      const gotAnswer = new Promise<void>((resolve) => (answered = resolve));
      clientEnd.write(probe.bytes);
      if (probe.answered(Buffer.concat(received))) answered?.();
      await within(gotAnswer, 'the session to answer the probe');
    }
    clientEnd.end();
    await within(waitFor(actor, (s) => s.status === 'done' || s.matches('closing'), { timeout: Infinity }), 'the fuzzed session to close once the peer ended', 5_000);
    // Closing only waits for the socket, which closes promptly here: both sides have ended. Even a
    // decode error after the session asked to close must not stop it reading the peer's FIN (the
    // connection's 5 s close grace would otherwise be what ends it).
    const snapshot = await within(waitFor(actor, (s) => s.status === 'done', { timeout: Infinity }), 'the fuzzed session to see the peer close', 1_000);
    expect(snapshot.value).toBe('closed');
    await within(tracking.settled(), 'every file the session began to be finished or aborted', 5_000);
  } finally {
    actor.stop();
    clientEnd.destroy();
  }
  const replies = Buffer.concat(received);
  // Unkeyed partials are the session's to clean up; keyed ones (with their .json) may stay for a resume.
  const partials = partialFiles(root);
  for (const part of partials.filter((p) => p.endsWith('.part'))) expect(partials).toContain(part.replace(/\.part$/, '.json'));
  const stored = filesUnder(root).filter((name) => !before.has(name));
  let tokens: ClientToken[] = [];
  if (replies[0] === PREAMBLE_MAGIC[0]) tokens = new ClientDecoder(DEFAULT_LIMITS).feed(replies);
  return { replies, emitted, stored, tokens };
}

/**
 * fast-check's time limit abandons the run in progress when it expires and reports success; keep
 * hold of that run so the test still waits for it (its own guards fail it if it hangs).
 */
function finishing<T>(body: (input: T) => Promise<void>): { body: (input: T) => Promise<void>; last(): Promise<void> } {
  let current: Promise<void> = Promise.resolve();
  return {
    body: (input) => (current = body(input)),
    last: () => current,
  };
}

function storedSaves(emitted: SessionEmitted[]): string[] {
  return emitted.flatMap((e) => (e.type === 'file-saved' ? [e.saved.savedAs] : [])).sort();
}

/** Files under the root (a native name may be a path), relative with `/`, leaving out the state folder. */
function filesUnder(root: string, sub = ''): string[] {
  if (!fs.existsSync(path.join(root, sub))) return [];
  return fs.readdirSync(path.join(root, sub), { withFileTypes: true }).flatMap((entry) => {
    const rel = sub ? `${sub}/${entry.name}` : entry.name;
    if (rel === '.ferry') return [];
    return entry.isDirectory() ? filesUnder(root, rel) : [rel];
  });
}

/** Whether the session will store an upload of this name: native names may be relative paths, original ones are cut to their last segment. */
function nameIsStorable(name: string, native = true): boolean {
  try {
    if (native) safeRelativePath(name);
    else safeName(name);
    return true;
  } catch {
    return false;
  }
}

describe('sessions under random and mutated input', () => {
  it(
    'native: the session always closes, stores only a verified upload, answers in well-formed frames, and its neighbour keeps working',
    async () => {
      const root = path.join(tempDir('ferry-fuzz-'), 'upload');
      const store = new UploadStore({ root });
      await store.init();
      const neighbour = await startNeighbour(store);
      const inputs = inputArb(nativePlanArb, Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'fuzz' })]));

      const runner = finishing(async (input: Input<NativePlan>) => {
        const bytes = bytesOf(input, nativeStream);
        const clean = input.kind === 'stream' && input.mutations.length === 0;
        // A healthy session (nothing refused, no goodbye) must still answer a ping after the stream.
        const probe =
          clean && !input.plan.bye && (input.plan.upload === undefined || nameIsStorable(input.plan.upload.name))
            ? {
                bytes: encode.ping(Buffer.from('probe')),
                answered: (replies: Buffer) => {
                  try {
                    return new ClientDecoder(DEFAULT_LIMITS).feed(replies).some((t) => t.type === 'pong' && t.payload.toString() === 'probe');
                  } catch {
                    return false;
                  }
                },
              }
            : undefined;
        const pieces = split(bytes, input.cuts);
        const run = await runSession(store, root, pieces, probe);

        // Only what the session reported as saved is there, and it is byte for byte what was sent.
        expect(run.stored.sort()).toEqual(storedSaves(run.emitted));
        for (const name of run.stored) {
          if (input.kind !== 'stream') throw new Error(`random bytes were stored as ${name}`);
          const content = fs.readFileSync(path.join(root, name));
          const sent = uploadIn(decodeAll(new ServerDecoder(DEFAULT_LIMITS), pieces).tokens);
          expect(content.equals(sent.data)).toBe(true);
          expect(content.length).toBe(sent.size);
          // A mutation that spoils the UPLOAD_END's sha256 key leaves the upload checked only by its size,
          // as the protocol allows; with a checksum, what was stored is exactly what was planned.
          if (sent.sha256 !== undefined) {
            expect(sha256(content)).toBe(sent.sha256);
            expect(content.equals(input.plan.upload!.content)).toBe(true);
          }
        }
        if (clean) {
          const plan = input.plan;
          const acks = run.tokens.flatMap((t) => (t.type === 'message-ack' ? [t.text] : []));
          const storable = plan.upload !== undefined && nameIsStorable(plan.upload.name);
          expect(run.stored).toHaveLength(storable ? 1 : 0);
          if (storable) {
            expect(run.tokens.find((t) => t.type === 'upload-done')).toMatchObject({ result: { savedAs: run.stored[0], sha256: sha256(plan.upload!.content) } });
          }
          // A refused upload leaves its DATA frames unexpected: the session closes before the messages after it.
          expect(acks).toEqual(plan.upload === undefined || storable ? [...plan.before, ...plan.after] : plan.before);
        }
        for (const name of run.stored) fs.rmSync(path.join(root, name));
        await neighbour.probe();
      });
      await fc.assert(fc.asyncProperty(inputs, runner.body), runs(0.38));
      await runner.last();
      await neighbour.finish(root);
    },
    timeoutFor(0.38),
  );

  it(
    'original format: the session always closes, stores only bytes from the stream, echoes a clean stream, and its neighbour keeps working',
    async () => {
      const root = path.join(tempDir('ferry-fuzz-'), 'upload');
      const store = new UploadStore({ root });
      await store.init();
      const neighbour = await startNeighbour(store);
      const inputs = inputArb(legacyPlanArb, Buffer.from('0000000001x'));
      const probeBytes = encodeLegacyMessage('probe');

      const runner = finishing(async (input: Input<LegacyPlan>) => {
        const bytes = bytesOf(input, legacyStream);
        const clean = input.kind === 'stream' && input.mutations.length === 0 && bytes.length > 0;
        // A healthy session (nothing refused, no exit) must still echo a message after the stream.
        const probe =
          clean && !input.plan.exit && (input.plan.upload === undefined || nameIsStorable(input.plan.upload.name, false))
            ? { bytes: probeBytes, answered: (replies: Buffer) => replies.subarray(-probeBytes.length).equals(probeBytes) }
            : undefined;
        const run = await runSession(store, root, split(bytes, input.cuts), probe);

        // The original format has no hash: a stored file must at least be bytes of the stream, one per `file` command.
        expect(run.stored.sort()).toEqual(storedSaves(run.emitted));
        expect(run.stored.length).toBeLessThanOrEqual(bytes.toString('latin1').split('file').length - 1);
        for (const name of run.stored) expect(bytes.includes(fs.readFileSync(path.join(root, name)))).toBe(true);
        if (clean) {
          const plan = input.plan;
          const storable = plan.upload !== undefined && nameIsStorable(plan.upload.name, false);
          expect(run.stored).toHaveLength(storable ? 1 : 0);
          if (storable) expect(fs.readFileSync(path.join(root, run.stored[0]!)).equals(plan.upload!.content)).toBe(true);
          // A refused file ends the connection: the original format cannot skip its bytes.
          const after = plan.upload === undefined || storable ? plan.after : [];
          const expected = Buffer.concat([
            ...plan.before.map(encodeLegacyMessage),
            ...(storable ? [Buffer.from('0000000003ACK')] : []),
            ...after.map(encodeLegacyMessage),
            ...(probe ? [probeBytes] : []),
          ]);
          expect(run.replies.toString('utf8')).toBe(expected.toString('utf8'));
        }
        for (const name of run.stored) fs.rmSync(path.join(root, name));
        await neighbour.probe();
      });
      await fc.assert(fc.asyncProperty(inputs, runner.body), runs(0.38));
      await runner.last();
      await neighbour.finish(root);
    },
    timeoutFor(0.38),
  );
});
