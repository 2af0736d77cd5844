import { ProtocolError } from './errors.js';
import {
  DEFAULT_LIMITS,
  FRAME_HEADER_LENGTH,
  FrameType,
  PREAMBLE_LENGTH,
  PREAMBLE_MAGIC,
  PROTOCOL_VERSION,
  type ClientToken,
  type ErrorInfo,
  type HelloInfo,
  type Limits,
  type OpenResultInfo,
  type ServerToken,
  type UploadOffer,
  type UploadResultInfo,
} from './frames.js';

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
/** The payload of every empty frame (it has no bytes to share). */
const EMPTY = Buffer.alloc(0);

type Phase = 'preamble' | 'header' | 'body' | 'data';

/**
 * Incremental decoder for the native format: bytes in, tokens out, leftovers kept. DATA payloads
 * are streamed as zero-copy slices of the incoming chunks and never buffered; every other frame is
 * buffered up to its limit, which is checked the moment its length is read.
 */
abstract class FrameDecoder<T> {
  private phase: Phase = 'preamble';
  /** Holds a preamble or frame header split across chunks. */
  private readonly head = Buffer.alloc(Math.max(PREAMBLE_LENGTH, FRAME_HEADER_LENGTH));
  private headFill = 0;
  private frameType = 0;
  private remaining = 0;
  private parts: Buffer[] = [];
  private failed: ProtocolError | undefined;

  constructor(protected limits: Limits = DEFAULT_LIMITS) {}

  /** Adopts the limits the peer announced (a server may allow larger messages than the default). */
  setLimits(limits: Limits): void {
    this.limits = limits;
  }

  /** Decode as much of `chunk` as possible. After a ProtocolError the decoder refuses further input. */
  feed(chunk: Buffer): T[] {
    if (this.failed) throw this.failed;
    const out: T[] = [];
    try {
      this.consume(chunk, out);
    } catch (err) {
      if (err instanceof ProtocolError) this.failed = err;
      throw err;
    }
    return out;
  }

  /** True when no frame is partly received (a clean place for the peer to stop). */
  get idle(): boolean {
    return this.phase === 'header' && this.headFill === 0;
  }

  private consume(chunk: Buffer, out: T[]): void {
    let offset = 0;
    while (offset < chunk.length) {
      switch (this.phase) {
        case 'preamble': {
          offset = this.fillHead(chunk, offset, PREAMBLE_LENGTH);
          if (this.headFill < PREAMBLE_LENGTH) {
            // Refuse a wrong magic at once rather than waiting for bytes a stranger may never send.
            const seen = Math.min(this.headFill, PREAMBLE_MAGIC.length);
            if (!this.head.subarray(0, seen).equals(PREAMBLE_MAGIC.subarray(0, seen))) this.checkPreamble();
            return;
          }
          this.checkPreamble();
          this.headFill = 0;
          this.phase = 'header';
          break;
        }
        case 'header': {
          offset = this.fillHead(chunk, offset, FRAME_HEADER_LENGTH);
          if (this.headFill < FRAME_HEADER_LENGTH) return;
          this.headFill = 0;
          this.startFrame(this.head[0]!, this.head.readUInt32BE(1), out);
          break;
        }
        case 'data': {
          const take = Math.min(this.remaining, chunk.length - offset);
          out.push(this.dataToken(offset === 0 && take === chunk.length ? chunk : chunk.subarray(offset, offset + take)));
          offset += take;
          this.remaining -= take;
          if (this.remaining === 0) this.phase = 'header';
          break;
        }
        case 'body': {
          const take = Math.min(this.remaining, chunk.length - offset);
          const piece = chunk.subarray(offset, offset + take);
          offset += take;
          this.remaining -= take;
          if (this.remaining > 0) this.parts.push(piece);
          // A body that came whole in this chunk is used as it is, without gathering it first.
          else if (this.parts.length === 0) this.endFrame(out, piece);
          else {
            this.parts.push(piece);
            this.endFrame(out, Buffer.concat(this.parts));
          }
          break;
        }
      }
    }
  }

  private fillHead(chunk: Buffer, offset: number, want: number): number {
    const take = Math.min(want - this.headFill, chunk.length - offset);
    chunk.copy(this.head, this.headFill, offset, offset + take);
    this.headFill += take;
    return offset + take;
  }

  private checkPreamble(): void {
    if (!this.head.subarray(0, PREAMBLE_MAGIC.length).equals(PREAMBLE_MAGIC)) {
      throw new ProtocolError('E_BAD_PREAMBLE', 'The peer did not open with the ferry handshake; check that it is a ferry client or server.');
    }
    const version = this.head[PREAMBLE_MAGIC.length]!;
    if (version !== PROTOCOL_VERSION) {
      throw new ProtocolError(
        'E_UNSUPPORTED_VERSION',
        `The peer speaks ferry protocol version ${version}, but this ferry speaks version ${PROTOCOL_VERSION}; upgrade the older side.`,
      );
    }
  }

  private startFrame(type: number, length: number, out: T[]): void {
    this.frameType = type;
    this.remaining = length;
    if (type === FrameType.DATA && this.acceptsData()) {
      if (length > 0) this.phase = 'data';
      return;
    }
    const limit = this.limitFor(type);
    if (length > limit) {
      const isMessage = type === FrameType.MESSAGE || type === FrameType.MESSAGE_ACK;
      const what = isMessage ? 'message' : 'frame';
      throw new ProtocolError(
        isMessage ? 'E_MESSAGE_TOO_LARGE' : 'E_FRAME_TOO_LARGE',
        `A ${what} of ${length} bytes exceeds the limit of ${limit} bytes; send less at once.`,
      );
    }
    const early = this.frameStarted(type, length);
    if (early !== undefined) out.push(early);
    if (length === 0) this.endFrame(out, EMPTY);
    else this.phase = 'body';
  }

  private endFrame(out: T[], payload: Buffer): void {
    this.parts.length = 0;
    this.phase = 'header';
    out.push(this.frame(this.frameType, payload));
  }

  /** Largest payload allowed for a buffered frame of this type; unknown types are refused here. */
  protected abstract limitFor(type: number): number;
  /** Whether DATA frames are streamed by this side. */
  protected abstract acceptsData(): boolean;
  protected abstract dataToken(chunk: Buffer): T;
  /** A token to emit as soon as a frame's header is known (before its body), if any. */
  protected abstract frameStarted(type: number, length: number): T | undefined;
  protected abstract frame(type: number, payload: Buffer): T;
}

function unknownFrame(type: number): ProtocolError {
  return new ProtocolError('E_UNKNOWN_FRAME', `Frame type 0x${type.toString(16).padStart(2, '0')} is not known here; the peer may be newer or broken.`);
}

function badFrame(what: string): ProtocolError {
  return new ProtocolError('E_BAD_FRAME', `A ${what} frame is malformed; the peer is broken or not ferry.`);
}

function parseJson(payload: Buffer, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(payload));
  } catch {
    throw badFrame(what);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw badFrame(what);
  return value as Record<string, unknown>;
}

/** Validates an open outcome; unknown fields are dropped. */
function openResult(value: unknown, what: string): OpenResultInfo {
  if (value === null || typeof value !== 'object') throw badFrame(what);
  const v = value as Record<string, unknown>;
  if (typeof v.opened !== 'boolean') throw badFrame(what);
  const result: OpenResultInfo = { opened: v.opened };
  for (const key of ['code', 'message', 'kind', 'mime', 'app'] as const) {
    if (v[key] === undefined) continue;
    if (typeof v[key] !== 'string') throw badFrame(what);
    result[key] = v[key];
  }
  if (v.pid !== undefined) {
    if (!isCount(v.pid)) throw badFrame(what);
    result.pid = v.pid;
  }
  return result;
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function decodeText(bytes: Buffer): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new ProtocolError('E_BAD_UTF8', 'A message is not valid UTF-8; send text encoded as UTF-8.');
  }
}

/** The id that starts a message's payload (the text follows it). */
function idOf(payload: Buffer, what: string): number {
  if (payload.length < 4) throw badFrame(what);
  return payload.readUInt32BE(0);
}

/** Decodes what a client sends to a server. */
export class ServerDecoder extends FrameDecoder<ServerToken> {
  protected limitFor(type: number): number {
    switch (type) {
      case FrameType.MESSAGE:
        return this.limits.maxMessage + 4;
      case FrameType.HELLO:
      case FrameType.BYE:
      case FrameType.PING:
      case FrameType.PONG:
      case FrameType.UPLOAD_OFFER:
      case FrameType.UPLOAD_END:
      case FrameType.OPEN:
      case FrameType.AUTH:
        return this.limits.maxFrame;
      default:
        throw unknownFrame(type);
    }
  }

  protected acceptsData(): boolean {
    return true;
  }

  protected dataToken(chunk: Buffer): ServerToken {
    return { type: 'data', chunk };
  }

  protected frameStarted(type: number, length: number): ServerToken | undefined {
    if (type !== FrameType.MESSAGE) return undefined;
    if (length < 4) throw badFrame('message');
    // The id sits inside the body, which may not be here yet; the machine only needs to know a body is coming.
    return { type: 'message-header', length: length - 4 };
  }

  protected frame(type: number, payload: Buffer): ServerToken {
    switch (type) {
      case FrameType.HELLO: {
        const json = parseJson(payload, 'hello');
        if (!isCount(json.version) || typeof json.agent !== 'string') throw badFrame('hello');
        const info: HelloInfo = { version: json.version, agent: json.agent };
        if (json.clientId !== undefined) {
          // It ends up in the server's journal and logs: keep it to a plain token.
          if (typeof json.clientId !== 'string' || !/^[A-Za-z0-9._:-]{1,128}$/.test(json.clientId)) throw badFrame('hello');
          info.clientId = json.clientId;
        }
        return { type: 'hello', info };
      }
      case FrameType.MESSAGE: {
        const id = idOf(payload, 'message');
        const raw = payload.subarray(4);
        return { type: 'message', id, text: decodeText(raw), raw };
      }
      case FrameType.UPLOAD_OFFER: {
        const json = parseJson(payload, 'upload offer');
        if (
          !isCount(json.id) ||
          typeof json.name !== 'string' ||
          !isCount(json.size) ||
          (json.open !== undefined && typeof json.open !== 'boolean') ||
          (json.key !== undefined && (typeof json.key !== 'string' || !/^[0-9a-f]{32}$/.test(json.key))) ||
          (json.sha256 !== undefined && (typeof json.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(json.sha256)))
        ) {
          throw badFrame('upload offer');
        }
        const offer: UploadOffer = { id: json.id, name: json.name, size: json.size };
        if (json.open === true) offer.open = true;
        if (typeof json.key === 'string') offer.key = json.key;
        if (typeof json.sha256 === 'string') offer.sha256 = json.sha256;
        return { type: 'upload-offer', offer };
      }
      case FrameType.AUTH: {
        const json = parseJson(payload, 'auth');
        if (typeof json.mac !== 'string' || !/^[0-9a-f]{64}$/.test(json.mac)) throw badFrame('auth');
        return { type: 'auth', mac: json.mac };
      }
      case FrameType.OPEN: {
        const json = parseJson(payload, 'open');
        if (!isCount(json.id) || typeof json.name !== 'string') throw badFrame('open');
        return { type: 'open-request', id: json.id, name: json.name };
      }
      case FrameType.UPLOAD_END: {
        const json = parseJson(payload, 'upload end');
        if (!isCount(json.id) || (json.sha256 !== undefined && (typeof json.sha256 !== 'string' || !/^[0-9a-f]{64}$/i.test(json.sha256)))) {
          throw badFrame('upload end');
        }
        return json.sha256 === undefined ? { type: 'upload-end', id: json.id } : { type: 'upload-end', id: json.id, sha256: json.sha256.toLowerCase() };
      }
      case FrameType.PING:
        return { type: 'ping', payload };
      case FrameType.PONG:
        return { type: 'pong', payload };
      case FrameType.BYE:
        return { type: 'bye' };
      default:
        throw unknownFrame(type);
    }
  }
}

/** Decodes what a server sends to a client. */
export class ClientDecoder extends FrameDecoder<ClientToken> {
  protected limitFor(type: number): number {
    switch (type) {
      case FrameType.MESSAGE_ACK:
        return this.limits.maxMessage + 4;
      case FrameType.WELCOME:
      case FrameType.UPLOAD_ACCEPT:
      case FrameType.UPLOAD_DONE:
      case FrameType.OPEN_RESULT:
      case FrameType.CHALLENGE:
      case FrameType.ERROR:
      case FrameType.PING:
      case FrameType.PONG:
      case FrameType.BYE:
        return this.limits.maxFrame;
      default:
        throw unknownFrame(type);
    }
  }

  protected acceptsData(): boolean {
    return false;
  }

  protected dataToken(): ClientToken {
    throw unknownFrame(FrameType.DATA);
  }

  protected frameStarted(): ClientToken | undefined {
    return undefined;
  }

  protected frame(type: number, payload: Buffer): ClientToken {
    switch (type) {
      case FrameType.WELCOME: {
        const json = parseJson(payload, 'welcome');
        const { version, agent, session, maxMessage, maxFrame } = json;
        if (!isCount(version) || typeof agent !== 'string' || typeof session !== 'string' || !isCount(maxMessage) || !isCount(maxFrame)) {
          throw badFrame('welcome');
        }
        return { type: 'welcome', info: { version, agent, session, maxMessage, maxFrame } };
      }
      case FrameType.MESSAGE_ACK: {
        const id = idOf(payload, 'message acknowledgement');
        return { type: 'message-ack', id, text: decodeText(payload.subarray(4)) };
      }
      case FrameType.UPLOAD_ACCEPT: {
        const json = parseJson(payload, 'upload accept');
        if (!isCount(json.id) || !isCount(json.offset)) throw badFrame('upload accept');
        return { type: 'upload-accept', id: json.id, offset: json.offset };
      }
      case FrameType.UPLOAD_DONE: {
        const json = parseJson(payload, 'upload done');
        const { id, savedAs, bytes, sha256 } = json;
        if (!isCount(id) || typeof savedAs !== 'string' || !isCount(bytes) || typeof sha256 !== 'string' || (json.skipped !== undefined && typeof json.skipped !== 'boolean')) {
          throw badFrame('upload done');
        }
        const result: UploadResultInfo = { id, savedAs, bytes, sha256 };
        if (json.skipped === true) result.skipped = true;
        if (json.opened !== undefined) result.opened = openResult(json.opened, 'upload done');
        return { type: 'upload-done', result };
      }
      case FrameType.CHALLENGE: {
        const json = parseJson(payload, 'challenge');
        if (typeof json.nonce !== 'string' || !/^[0-9a-f]{64}$/.test(json.nonce)) throw badFrame('challenge');
        return { type: 'challenge', nonce: json.nonce };
      }
      case FrameType.OPEN_RESULT: {
        const json = parseJson(payload, 'open result');
        if (!isCount(json.id)) throw badFrame('open result');
        return { type: 'open-result', id: json.id, result: openResult(json, 'open result') };
      }
      case FrameType.ERROR: {
        const json = parseJson(payload, 'error');
        if (typeof json.code !== 'string' || typeof json.message !== 'string' || (json.id !== undefined && !isCount(json.id))) throw badFrame('error');
        const error: ErrorInfo = { code: json.code, message: json.message };
        if (isCount(json.id)) error.id = json.id;
        return { type: 'error', error };
      }
      case FrameType.PING:
        return { type: 'ping', payload };
      case FrameType.PONG:
        return { type: 'pong', payload };
      case FrameType.BYE:
        return { type: 'bye' };
      default:
        throw unknownFrame(type);
    }
  }
}

// The encoders live in native-encode.ts; everything native is importable from here.
export { encode, encodeMessages, frameHeader, nativeConnectionReplies, nativeReplies, preamble } from './native-encode.js';
