/**
 * File names offered by a network peer are untrusted input. These helpers turn them into a single
 * base name, or a relative path of such names, that is safe to create inside the upload folder on
 * Linux, macOS and Windows alike.
 */
import { FerryError } from '../transport/errors.js';

/** Longest stored name in UTF-8 bytes; leaves room under the common 255-byte limit for a ` (n)` suffix. */
export const MAX_NAME_BYTES = 200;

/** Longest relative path, in UTF-8 bytes once each segment is made safe (before any ` (n)` suffix). */
export const MAX_PATH_BYTES = 1024;
/** Most segments (folders and the file name) in a relative path. */
export const MAX_PATH_SEGMENTS = 32;

/** The upload folder's state folder, which no relative path may lead into. */
const STATE_DIR = '.ferry';

/** Extensions up to this many UTF-8 bytes survive shortening; longer ones are probably not extensions. */
const MAX_KEPT_EXTENSION_BYTES = 16;

const WINDOWS_INVALID = /[<>:"|?*]/g;

// Windows resolves these to devices in every folder and whatever the extension, so
// `NUL.txt` written by a Windows receiver would vanish into the null device.
const RESERVED_DEVICE = /^(?:CON|PRN|AUX|NUL|CONIN\$|CONOUT\$|COM[0-9\u00b9\u00b2\u00b3]|LPT[0-9\u00b9\u00b2\u00b3])$/i;

/**
 * Turns a file name offered by a peer into a base name that is safe to create in the upload folder.
 *
 * The result is NFC-normalised, has no path separators, no control characters, none of the
 * characters Windows refuses (`<>:"|?*` become `_`), no leading spaces, no trailing dots or spaces,
 * is never a Windows device name (those get a `_` prefix), and is at most {@link MAX_NAME_BYTES}
 * UTF-8 bytes long. Only the last path segment is kept: `../x` becomes `x`, `C:\abs` becomes `abs`.
 * Percent escapes are not decoded, because the name is a file name, not a URL.
 *
 * @throws FerryError `E_BAD_NAME` when nothing usable is left or the name contains control
 *   characters or unpaired surrogates.
 */
export function safeName(raw: string): string {
  if (typeof raw !== 'string') {
    throw badName('The file name is missing or is not text; send the file again with a name.');
  }
  const text = raw.normalize('NFC');
  refuseUnstorableCharacters(text);

  const segments = text.split(/[/\\]/);
  let name = '';
  for (let i = segments.length - 1; i >= 0; i--) {
    const segment = segments[i];
    if (segment !== undefined && segment !== '') {
      name = segment;
      break;
    }
  }

  name = cleanSegment(name);
  if (name === '' || name === '.' || name === '..') {
    throw badName(
      `The file name ${preview(raw)} has nothing left that can be stored as a file name; rename the file and send it again.`,
    );
  }
  return name;
}

/**
 * Turns a relative path offered by a peer (`photos/2024/a.jpg`, `/` or `\` between segments) into
 * one that is safe to create under the upload folder: each segment is made safe as by
 * {@link safeName}, and the segments are joined with `/`. A path without separators gives exactly
 * what `safeName` gives.
 *
 * Refused, rather than guessed at: absolute paths (a leading `/` or `\`), drive letters (`C:`),
 * empty segments (`a//b`, a trailing `/`), `.` and `..` segments, segments with nothing storable
 * left, a first folder that is the state folder `.ferry` (in any case), more than
 * {@link MAX_PATH_SEGMENTS} segments, or more than {@link MAX_PATH_BYTES} bytes in all.
 *
 * @throws FerryError `E_BAD_NAME`, with a sentence saying which rule the path broke.
 */
export function safeRelativePath(raw: string): string {
  if (typeof raw !== 'string') {
    throw badName('The file name is missing or is not text; send the file again with a name.');
  }
  const text = raw.normalize('NFC');
  refuseUnstorableCharacters(text);
  if (!/[/\\]/.test(text)) return safeName(text);

  if (text.startsWith('/') || text.startsWith('\\') || /^[A-Za-z]:/.test(text)) {
    throw badName(`The file name ${preview(raw)} is an absolute path or starts with a drive letter; send it as a path relative to the upload folder, such as "photos/a.jpg".`);
  }
  const raws = text.split(/[/\\]/);
  if (raws.length > MAX_PATH_SEGMENTS) {
    throw badName(`The file name ${preview(raw)} has ${raws.length} folders and names in its path, more than the ${MAX_PATH_SEGMENTS} allowed; send it from a shallower folder.`);
  }
  const segments: string[] = [];
  for (const segment of raws) {
    if (segment === '' || segment === '.' || segment === '..') {
      throw badName(
        `The file name ${preview(raw)} has an empty, "." or ".." part in its path; send it as a plain relative path, such as "photos/a.jpg".`,
      );
    }
    const clean = cleanSegment(segment);
    if (clean === '' || clean === '.' || clean === '..') {
      throw badName(`The part ${preview(segment)} of the file name ${preview(raw)} has nothing left that can be stored; rename it and send the file again.`);
    }
    segments.push(clean);
  }
  if (segments[0]!.toLowerCase() === STATE_DIR) {
    throw badName(`The file name ${preview(raw)} leads into the server's state folder ${STATE_DIR}; send it under another folder name.`);
  }
  const joined = segments.join('/');
  if (Buffer.byteLength(joined, 'utf8') > MAX_PATH_BYTES) {
    throw badName(`The file name ${preview(raw)} is longer than ${MAX_PATH_BYTES} bytes as a path; send it from a shallower folder or with shorter names.`);
  }
  return joined;
}

/** The rules for one segment: Windows-safe characters, no leading spaces, no trailing dots or spaces, capped, never a device. */
function cleanSegment(segment: string): string {
  let name = trimTrailingDotsAndSpaces(trimLeadingSpaces(segment.replace(WINDOWS_INVALID, '_')));
  name = capUtf8(name, MAX_NAME_BYTES);
  if (isReservedDeviceName(name)) {
    // Re-capping cannot remove the prefix, so the result stays out of the reserved set.
    name = capUtf8('_' + name, MAX_NAME_BYTES);
  }
  return name;
}

/**
 * Inserts a counter before the extension, giving the name to use when `name` is taken:
 * `photo.png` → `photo (1).png`, `.bashrc` → `.bashrc (1)`, `noext` → `noext (3)`.
 * Only the last extension moves: `archive.tar.gz` → `archive.tar (2).gz`.
 *
 * @throws RangeError when `n` is not a positive safe integer.
 */
export function numberedName(name: string, n: number): string {
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new RangeError(`The counter for a numbered name must be a positive integer, got ${n}.`);
  }
  const dot = extensionStart(name);
  if (dot === -1) return `${name} (${n})`;
  return `${name.slice(0, dot)} (${n})${name.slice(dot)}`;
}

/**
 * Index of the dot that starts the extension, or -1. Leading dots belong to the stem, so
 * `.bashrc` and `..cache` have no extension rather than an empty stem.
 */
function extensionStart(name: string): number {
  const dot = name.lastIndexOf('.');
  if (dot <= 0) return -1;
  for (let i = 0; i < dot; i++) {
    if (name[i] !== '.') return dot;
  }
  return -1;
}

function refuseUnstorableCharacters(text: string): void {
  for (const ch of text) {
    const cp = ch.codePointAt(0) ?? 0;
    if (cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f)) {
      const hex = cp.toString(16).toUpperCase().padStart(4, '0');
      throw badName(
        `The file name contains the control character U+${hex}, which cannot be stored safely; rename the file and send it again.`,
      );
    }
    // An unpaired surrogate would be silently replaced on its way to the file system,
    // so the stored name would differ from the one reported back.
    if (cp >= 0xd800 && cp <= 0xdfff) {
      throw badName(
        'The file name is not valid Unicode (it contains an unpaired surrogate); rename the file and send it again.',
      );
    }
  }
}

// Trimming is done by hand: a regex such as /[. ]+$/ is quadratic on long runs of dots
// and spaces, and the input comes from the network.
function trimLeadingSpaces(name: string): string {
  let start = 0;
  while (start < name.length && name[start] === ' ') start++;
  return name.slice(start);
}

function trimTrailingDotsAndSpaces(name: string): string {
  let end = name.length;
  while (end > 0 && (name[end - 1] === '.' || name[end - 1] === ' ')) end--;
  return name.slice(0, end);
}

function isReservedDeviceName(name: string): boolean {
  const dot = name.indexOf('.');
  const stem = dot === -1 ? name : name.slice(0, dot);
  // Windows also ignores spaces between the device name and the extension (`NUL .txt`).
  let end = stem.length;
  while (end > 0 && stem[end - 1] === ' ') end--;
  return RESERVED_DEVICE.test(stem.slice(0, end));
}

/** Shortens the stem so the name fits, keeping a short extension; never splits a code point. */
function capUtf8(name: string, maxBytes: number): string {
  if (Buffer.byteLength(name, 'utf8') <= maxBytes) return name;
  const dot = extensionStart(name);
  if (dot !== -1) {
    const extension = name.slice(dot);
    const extensionBytes = Buffer.byteLength(extension, 'utf8');
    if (extensionBytes <= MAX_KEPT_EXTENSION_BYTES) {
      return truncateUtf8(name.slice(0, dot), maxBytes - extensionBytes) + extension;
    }
  }
  return trimTrailingDotsAndSpaces(truncateUtf8(name, maxBytes));
}

function truncateUtf8(text: string, maxBytes: number): string {
  let bytes = 0;
  let end = 0;
  for (const ch of text) {
    const cp = ch.codePointAt(0) ?? 0;
    const size = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (bytes + size > maxBytes) break;
    bytes += size;
    end += ch.length;
  }
  return text.slice(0, end);
}

function preview(raw: string): string {
  const short = raw.length > 40 ? raw.slice(0, 40) + '\u2026' : raw;
  return JSON.stringify(short);
}

function badName(message: string): FerryError {
  return new FerryError('E_BAD_NAME', message);
}
