import type { ErrorInfo, OpenResultInfo, UploadResultInfo, WelcomeInfo } from './frames.js';

/**
 * What a session says back, independent of the wire format. The session machine produces these;
 * a format's reply encoder turns them into bytes (or into nothing, where the format has no way to
 * say it).
 */
export type SessionReply =
  | { type: 'welcome'; info: WelcomeInfo }
  | { type: 'message-ack'; id: number; text: string; raw: Buffer }
  | { type: 'upload-accept'; id: number; offset: number }
  | { type: 'upload-done'; result: UploadResultInfo }
  | { type: 'open-result'; id: number; result: OpenResultInfo }
  | { type: 'error'; error: ErrorInfo }
  | { type: 'pong'; payload: Buffer }
  | { type: 'ping' }
  | { type: 'challenge'; nonce: string }
  | { type: 'bye' };

export interface ReplyEncoder {
  /** Bytes to write for this reply, or undefined when the format has nothing to say. */
  encode(reply: SessionReply): Buffer | undefined;
  /** Several replies as one buffer: the same bytes as `encode` of each in turn ({@link encodeEach} does just that). */
  encodeAll(replies: readonly SessionReply[]): Buffer | undefined;
}

/** `encode` of each reply, in one buffer; undefined when there is nothing to say. */
export function encodeEach(encoder: ReplyEncoder, replies: readonly SessionReply[]): Buffer | undefined {
  const encoded: Buffer[] = [];
  for (const reply of replies) {
    const bytes = encoder.encode(reply);
    if (bytes !== undefined) encoded.push(bytes);
  }
  return encoded.length <= 1 ? encoded[0] : Buffer.concat(encoded);
}
