import { PREAMBLE_MAGIC } from './frames.js';

export type WireFormat = 'native' | 'legacy';

/**
 * Tells the wire format from a connection's first byte. The native preamble starts with 0xF0; the
 * original format starts with an ASCII digit (a message), `f` (`file`) or `e` (`exit`).
 */
export function detectFormat(firstByte: number): WireFormat | undefined {
  if (firstByte === PREAMBLE_MAGIC[0]) return 'native';
  if ((firstByte >= 0x30 && firstByte <= 0x39) || firstByte === 0x66 || firstByte === 0x65) return 'legacy';
  return undefined;
}
