/**
 * The native format's encoders. Small frames are built in one allocation; DATA frames are a 5-byte
 * header written before the caller's chunk (corked together), so file bytes are never copied.
 */
import {
  FRAME_HEADER_LENGTH,
  FrameType,
  PREAMBLE_LENGTH,
  PREAMBLE_MAGIC,
  PROTOCOL_VERSION,
  type ErrorInfo,
  type HelloInfo,
  type OpenResultInfo,
  type UploadOffer,
  type UploadResultInfo,
  type WelcomeInfo,
} from './frames.js';
import { encodeEach, type ReplyEncoder, type SessionReply } from './replies.js';

export function preamble(): Buffer {
  const buf = Buffer.alloc(PREAMBLE_LENGTH);
  PREAMBLE_MAGIC.copy(buf, 0);
  buf[PREAMBLE_MAGIC.length] = PROTOCOL_VERSION;
  return buf;
}

/** Writes a frame's type and payload length at `at`; returns where the payload goes. */
function putHead(buf: Buffer, at: number, type: number, length: number): number {
  buf[at] = type;
  buf.writeUInt32BE(length, at + 1);
  return at + FRAME_HEADER_LENGTH;
}

export function frameHeader(type: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(FRAME_HEADER_LENGTH);
  putHead(buf, 0, type, length);
  return buf;
}

function frame(type: number, payload: Buffer): Buffer {
  const buf = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + payload.length);
  payload.copy(buf, putHead(buf, 0, type, payload.length));
  return buf;
}

function jsonFrame(type: number, value: object): Buffer {
  const json = JSON.stringify(value);
  const length = Buffer.byteLength(json, 'utf8');
  const buf = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + length);
  buf.write(json, putHead(buf, 0, type, length), 'utf8');
  return buf;
}

/** The bytes of a MESSAGE or MESSAGE_ACK frame before its text. */
const ID_FRAME_HEAD = FRAME_HEADER_LENGTH + 4;

/** Writes the head of a MESSAGE or MESSAGE_ACK frame whose text takes `length` bytes; returns where the text goes. */
function putIdHead(buf: Buffer, at: number, type: number, id: number, length: number): number {
  const idAt = putHead(buf, at, type, 4 + length);
  buf.writeUInt32BE(id, idAt);
  return at + ID_FRAME_HEAD;
}

function idFrame(type: number, id: number, text: string): Buffer {
  const length = Buffer.byteLength(text, 'utf8');
  const buf = Buffer.allocUnsafe(ID_FRAME_HEAD + length);
  buf.write(text, putIdHead(buf, 0, type, id, length), 'utf8');
  return buf;
}

/** MESSAGE frames for several messages, built straight into one buffer (one write for the lot). */
export function encodeMessages(messages: readonly { id: number; text: string }[]): Buffer {
  if (messages.length === 1) return encode.message(messages[0]!.id, messages[0]!.text);
  const lengths = messages.map((m) => Buffer.byteLength(m.text, 'utf8'));
  const buf = Buffer.allocUnsafe(lengths.reduce((size, length) => size + ID_FRAME_HEAD + length, 0));
  let at = 0;
  messages.forEach((m, i) => {
    const text = putIdHead(buf, at, FrameType.MESSAGE, m.id, lengths[i]!);
    at = text + buf.write(m.text, text, lengths[i]!, 'utf8');
  });
  return buf;
}

export const encode = {
  // The hello ends with a line feed (JSON allows it), so that a line-based server reached by
  // mistake, such as an HTTP server, answers at once and is recognised instead of waiting.
  hello: (info: HelloInfo) => frame(FrameType.HELLO, Buffer.from(`${JSON.stringify(info)}\n`, 'utf8')),
  welcome: (info: WelcomeInfo) => jsonFrame(FrameType.WELCOME, info),
  bye: () => frame(FrameType.BYE, Buffer.alloc(0)),
  error: (info: ErrorInfo) => jsonFrame(FrameType.ERROR, info),
  ping: (payload: Buffer = Buffer.alloc(0)) => frame(FrameType.PING, payload),
  pong: (payload: Buffer = Buffer.alloc(0)) => frame(FrameType.PONG, payload),
  message: (id: number, text: string) => idFrame(FrameType.MESSAGE, id, text),
  messageAck: (id: number, text: string) => idFrame(FrameType.MESSAGE_ACK, id, text),
  uploadOffer: (offer: UploadOffer) => jsonFrame(FrameType.UPLOAD_OFFER, offer),
  uploadAccept: (id: number, offset: number) => jsonFrame(FrameType.UPLOAD_ACCEPT, { id, offset }),
  dataHeader: (length: number) => frameHeader(FrameType.DATA, length),
  uploadEnd: (id: number, sha256: string) => jsonFrame(FrameType.UPLOAD_END, { id, sha256 }),
  uploadDone: (result: UploadResultInfo) => jsonFrame(FrameType.UPLOAD_DONE, result),
  open: (id: number, name: string) => jsonFrame(FrameType.OPEN, { id, name }),
  challenge: (nonce: string) => jsonFrame(FrameType.CHALLENGE, { nonce }),
  auth: (mac: string) => jsonFrame(FrameType.AUTH, { mac }),
  openResult: (id: number, result: OpenResultInfo) => jsonFrame(FrameType.OPEN_RESULT, { id, ...result }),
};

type AckReply = Extract<SessionReply, { type: 'message-ack' }>;

/** Writes a MESSAGE_ACK at `at`: the id, then the bytes the message's text arrived as (its exact UTF-8). */
function putAck(buf: Buffer, at: number, { id, raw }: AckReply): number {
  const text = putIdHead(buf, at, FrameType.MESSAGE_ACK, id, raw.length);
  return text + raw.copy(buf, text);
}

const ackLength = (reply: AckReply) => ID_FRAME_HEAD + reply.raw.length;

/** A batch made only of acknowledgements, built straight into one buffer; undefined for any other batch. */
function acksInOne(replies: readonly SessionReply[]): Buffer | undefined {
  let size = 0;
  for (const reply of replies) {
    if (reply.type !== 'message-ack') return undefined;
    size += ackLength(reply);
  }
  if (size === 0) return undefined;
  const buf = Buffer.allocUnsafe(size);
  let at = 0;
  for (const reply of replies) at = putAck(buf, at, reply as AckReply);
  return buf;
}

/** Turns session replies into native frames. The welcome carries the server's preamble first. */
export const nativeReplies: ReplyEncoder = {
  encodeAll: (replies) => acksInOne(replies) ?? encodeEach(nativeReplies, replies),
  encode(reply: SessionReply): Buffer | undefined {
    switch (reply.type) {
      case 'welcome':
        return Buffer.concat([preamble(), encode.welcome(reply.info)]);
      case 'message-ack': {
        const buf = Buffer.allocUnsafe(ackLength(reply));
        putAck(buf, 0, reply);
        return buf;
      }
      case 'upload-accept':
        return encode.uploadAccept(reply.id, reply.offset);
      case 'upload-done':
        return encode.uploadDone(reply.result);
      case 'open-result':
        return encode.openResult(reply.id, reply.result);
      case 'error':
        return encode.error(reply.error);
      case 'pong':
        return encode.pong(reply.payload);
      case 'ping':
        return encode.ping();
      case 'challenge':
        return encode.challenge(reply.nonce);
      case 'bye':
        return encode.bye();
    }
  },
};

/**
 * Native replies for one connection: the server's preamble goes out before its first reply,
 * whatever that is, so a client can read an ERROR sent before the welcome (a refused handshake).
 */
export function nativeConnectionReplies(): ReplyEncoder {
  let opened = false;
  const replies: ReplyEncoder = {
    encodeAll: (batch) => (opened ? acksInOne(batch) : undefined) ?? encodeEach(replies, batch),
    encode(reply: SessionReply): Buffer | undefined {
      if (opened) return reply.type === 'welcome' ? encode.welcome(reply.info) : nativeReplies.encode(reply);
      const bytes = nativeReplies.encode(reply);
      if (bytes === undefined) return bytes;
      opened = true;
      return reply.type === 'welcome' ? bytes : Buffer.concat([preamble(), bytes]);
    },
  };
  return replies;
}
