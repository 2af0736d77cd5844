/** Parsing and formatting of the sizes, rates and durations people type on the command line. */

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** `50M`, `500K`, `1.5G`, `2048` (bytes), also `50MB`/`50MiB`; powers of 1024, as curl reads them. */
export function parseSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!match) throw new Error(`"${text}" is not a size; write it like 500K, 50M or 2G`);
  const value = Number(match[1]) * SIZE_UNITS[match[2]!.toLowerCase()]!;
  if (!Number.isFinite(value) || value <= 0) throw new Error(`"${text}" must be greater than zero`);
  return Math.floor(value);
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `500ms`, `10s`, `2m`, `1h`; a bare number is seconds. Returns milliseconds. */
export function parseDuration(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/i.exec(text);
  if (!match) throw new Error(`"${text}" is not a duration; write it like 500ms, 10s or 2m`);
  return Math.round(Number(match[1]) * DURATION_UNITS[(match[2] ?? 's').toLowerCase()]!);
}

/** A whole number of at least 1. */
export function parseCount(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) throw new Error(`"${text}" must be a whole number of at least 1`);
  return value;
}

/** Like parseDuration, but `0` (off) is allowed. */
export function parseDurationOrZero(text: string): number {
  return /^\s*0+\s*$/.test(text) ? 0 : parseDuration(text);
}

export function parsePort(text: string): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`"${text}" is not a port number (0-65535)`);
  return port;
}

/** 1536 → "1.5 KiB". */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/**
 * Rewrites the byte counts in a sentence for people: "a limit of 1048576 bytes" becomes "a limit
 * of 1.00 MiB", "a 5000000-byte file" a "4.77 MiB file". Counts under 1 KiB stay as they are.
 */
export function humanSizes(text: string): string {
  return text.replace(/\b(\d{4,})(?:-byte| bytes)\b/g, (whole, digits: string) => {
    const bytes = Number(digits);
    return Number.isSafeInteger(bytes) && bytes >= 1024 ? formatBytes(bytes) : whole;
  });
}
