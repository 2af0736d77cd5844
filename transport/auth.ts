import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Token authentication by challenge and response: the server sends a fresh random nonce, the
 * client answers with HMAC-SHA-256(token, nonce). The token itself never crosses the wire, and a
 * recorded answer is useless for any other connection.
 */
export function newNonce(): string {
  return randomBytes(32).toString('hex');
}

export function authMac(token: string, nonce: string): string {
  return createHmac('sha256', token).update(`ferry-auth-1 ${nonce}`).digest('hex');
}

/** Compares in constant time, so the answer leaks nothing about how close a guess was. */
export function macMatches(token: string, nonce: string, mac: string): boolean {
  const expected = Buffer.from(authMac(token, nonce), 'hex');
  const given = Buffer.from(mac, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/**
 * Remembers failed authentications per address: after `limit` failures within `windowMs`, new
 * connections from that address are closed at once until the window has passed.
 */
export class AuthThrottle {
  readonly #failures = new Map<string, number[]>();

  constructor(
    private readonly limit = 5,
    private readonly windowMs = 60_000,
  ) {}

  admit(address: string, now = Date.now()): boolean {
    return this.#recent(address, now).length < this.limit;
  }

  failed(address: string, now = Date.now()): void {
    this.#failures.set(address, [...this.#recent(address, now), now]);
    // Many addresses failing once each must not grow this for ever: drop the stale ones now and then.
    if (this.#failures.size > 10_000) for (const known of [...this.#failures.keys()]) this.#recent(known, now);
  }

  #recent(address: string, now: number): number[] {
    const recent = (this.#failures.get(address) ?? []).filter((t) => now - t < this.windowMs);
    if (recent.length === 0) this.#failures.delete(address);
    else this.#failures.set(address, recent);
    return recent;
  }
}

/** Loopback addresses, where a server without a token reaches no one but this machine. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
