import path from 'node:path';
import fc from 'fast-check';
import { describe, it, expect } from 'vitest';
import { FerryError } from '../transport/errors.js';
import { MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_PATH_SEGMENTS, numberedName, safeName, safeRelativePath } from '../media/names.js';

const RESERVED_STEM = /^(?:CON|PRN|AUX|NUL|CONIN\$|CONOUT\$|COM[0-9\u00b9\u00b2\u00b3]|LPT[0-9\u00b9\u00b2\u00b3])$/i;

function refusal(raw: string): FerryError {
  try {
    safeName(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(FerryError);
    return err as FerryError;
  }
  throw new Error(`safeName(${JSON.stringify(raw)}) was expected to throw`);
}

function hasControlOrSurrogate(name: string): boolean {
  for (const ch of name) {
    const cp = ch.codePointAt(0) ?? 0;
    if (cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f) || (cp >= 0xd800 && cp <= 0xdfff)) return true;
  }
  return false;
}

/** Everything a stored name must satisfy, whatever it was made from. */
function expectStorable(name: string): void {
  expect(name).not.toBe('');
  expect(name).not.toBe('.');
  expect(name).not.toBe('..');
  expect(name).not.toMatch(/[/\\<>:"|?*]/);
  expect(hasControlOrSurrogate(name)).toBe(false);
  expect(name.startsWith(' ')).toBe(false);
  expect(name.endsWith(' ') || name.endsWith('.')).toBe(false);
  expect(Buffer.byteLength(name, 'utf8')).toBeLessThanOrEqual(MAX_NAME_BYTES);
  const stem = name.split('.')[0]?.trimEnd() ?? '';
  expect(RESERVED_STEM.test(stem)).toBe(false);
  const root = path.resolve('/srv/ferry-root');
  const joined = path.join(root, name);
  expect(path.dirname(joined)).toBe(root);
  expect(path.basename(joined)).toBe(name);
}

describe('safeName', () => {
  it.each([
    ['../x', 'x'],
    ['..\\x', 'x'],
    ['/abs', 'abs'],
    ['C:\\abs', 'abs'],
    ['\\\\srv\\s', 's'],
    ['dir/photo.png', 'photo.png'],
    ['dir/sub/', 'sub'],
    ['%2e%2e/x', 'x'],
    ['%2e%2e%2fx', '%2e%2e%2fx'],
    ['f.txt:stream', 'f.txt_stream'],
    ['a<b>c:d"e|f?g*h', 'a_b_c_d_e_f_g_h'],
    ['name. . ', 'name'],
    ['   leading.txt', 'leading.txt'],
    ['trailing...', 'trailing'],
    ['NUL.txt', '_NUL.txt'],
    ['nul.tar.gz', '_nul.tar.gz'],
    ['COM1', '_COM1'],
    ['com1', '_com1'],
    ['LPT9.log', '_LPT9.log'],
    ['CON', '_CON'],
    ['Prn', '_Prn'],
    ['aux.', '_aux'],
    ['NUL .txt', '_NUL .txt'],
    ['dir/CON', '_CON'],
    ['CONSOLE.txt', 'CONSOLE.txt'],
    ['COM10', 'COM10'],
    ['e\u0301.txt', '\u00e9.txt'],
  ])('turns %j into %j', (raw, expected) => {
    const name = safeName(raw);
    expect(name).toBe(expected);
    expectStorable(name);
  });

  it.each(['do..ts.txt', '..cache', 'data set (1).bin', '\u0444\u043e\u0442\u043e.png', '.bashrc', 'a', '\u{1f600}.txt'])(
    'keeps the legitimate name %j unchanged',
    (raw) => {
      expect(safeName(raw)).toBe(raw);
    },
  );

  it.each([
    ['a\u0000b', 'U+0000'],
    ['a\u0007b', 'U+0007'],
    ['tab\there', 'U+0009'],
    ['line\nbreak', 'U+000A'],
    ['del\u007f', 'U+007F'],
    ['c1\u0085', 'U+0085'],
    ['c1\u009f', 'U+009F'],
    ['dir\u0000/ok.txt', 'U+0000'],
  ])('refuses %j, which contains a control character', (raw, codePoint) => {
    const err = refusal(raw);
    expect(err.code).toBe('E_BAD_NAME');
    expect(err.message).toContain(codePoint);
  });

  it.each(['', '.', '..', '/', '\\', '../', '..\\..', 'a/..', '...', ' ', ' . ', '///', ' /  '])(
    'refuses %j, which leaves nothing to store',
    (raw) => {
      const err = refusal(raw);
      expect(err.code).toBe('E_BAD_NAME');
      expect(err.message).toMatch(/^The file name .*; rename the file and send it again\.$/);
    },
  );

  it('refuses unpaired surrogates, which cannot be written faithfully', () => {
    expect(refusal('a\ud800b').code).toBe('E_BAD_NAME');
    expect(refusal('\udc00.txt').code).toBe('E_BAD_NAME');
  });

  it('refuses a name that is not a string', () => {
    expect(refusal(42 as unknown as string).code).toBe('E_BAD_NAME');
  });

  it('caps a 1000-character name at 200 UTF-8 bytes and keeps the extension', () => {
    const name = safeName('a'.repeat(1000) + '.txt');
    expect(name).toBe('a'.repeat(196) + '.txt');
    expect(Buffer.byteLength(name)).toBe(200);
    expectStorable(name);
  });

  it('caps a 1000-character name without extension', () => {
    const name = safeName('b'.repeat(1000));
    expect(name).toBe('b'.repeat(200));
  });

  it('never cuts a multi-byte character when shortening', () => {
    // 'ф' is two bytes and '😀' four, so neither fits evenly into the byte budget.
    const cyrillic = safeName('\u0444'.repeat(150) + 'x.png');
    expect(Buffer.byteLength(cyrillic)).toBeLessThanOrEqual(200);
    expect(cyrillic).toBe('\u0444'.repeat(98) + '.png');

    const emoji = safeName('z' + '\u{1f600}'.repeat(100) + '.txt');
    expect(emoji).toBe('z' + '\u{1f600}'.repeat(48) + '.txt');
    expect(Buffer.byteLength(emoji)).toBe(197);
    expect(hasControlOrSurrogate(emoji)).toBe(false);
  });

  it('shortens the whole name when the extension is longer than 16 bytes', () => {
    const ext = '.' + 'e'.repeat(20);
    const name = safeName('s'.repeat(300) + ext);
    expect(name).toBe('s'.repeat(200));
  });

  it('keeps an extension of exactly 16 bytes', () => {
    const ext = '.' + 'e'.repeat(15);
    const name = safeName('s'.repeat(300) + ext);
    expect(name).toBe('s'.repeat(184) + ext);
  });

  it('strips dots and spaces left at the end by shortening', () => {
    const name = safeName('x'.repeat(198) + ' .' + 'y'.repeat(50));
    expect(name).toBe('x'.repeat(198));
  });

  it('keeps a reserved name out of reach even after shortening', () => {
    const name = safeName('CON' + ' '.repeat(300) + 'tail');
    expect(name).toBe('_CON');
  });

  it('handles long runs of dots and spaces in linear time', () => {
    const raw = '. '.repeat(200_000) + 'x' + ' .'.repeat(200_000);
    const started = performance.now();
    // The trailing run goes; the name is then too long, so the stem shrinks and the short
    // extension '. x' after the last dot stays.
    expect(safeName(raw)).toBe('. '.repeat(98) + '.' + '. x');
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it('satisfies the storage invariants for arbitrary strings', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 400 }), (raw) => {
        let name: string;
        try {
          name = safeName(raw);
        } catch (err) {
          expect(err).toBeInstanceOf(FerryError);
          expect((err as FerryError).code).toBe('E_BAD_NAME');
          return;
        }
        expectStorable(name);
      }),
      { numRuns: 2_000 },
    );
  });

  it('satisfies the storage invariants for strings made of awkward pieces', () => {
    const piece = fc.constantFrom(
      '.', '..', ' ', '/', '\\', ':', '*', 'CON', 'nul', 'COM1', 'a', '\u00e9', 'e\u0301', '\u{1f600}',
      '\u0000', '\u0085', '.txt', 'x'.repeat(60),
    );
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 30 }).map((parts) => parts.join('')), (raw) => {
        let name: string;
        try {
          name = safeName(raw);
        } catch (err) {
          expect((err as FerryError).code).toBe('E_BAD_NAME');
          return;
        }
        expectStorable(name);
        expect(name).toBe(name.normalize('NFC'));
        // Sanitising is stable, so a stored name survives being offered again.
        expect(safeName(name)).toBe(name);
      }),
      { numRuns: 2_000 },
    );
  });
});

function pathRefusal(raw: string): FerryError {
  try {
    safeRelativePath(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(FerryError);
    expect((err as FerryError).code).toBe('E_BAD_NAME');
    return err as FerryError;
  }
  throw new Error(`safeRelativePath(${JSON.stringify(raw)}) was expected to throw`);
}

/** Everything a stored relative path must satisfy: storable segments, inside the root, out of the state folder. */
function expectStorablePath(stored: string): void {
  const segments = stored.split('/');
  expect(segments.length).toBeLessThanOrEqual(MAX_PATH_SEGMENTS);
  expect(Buffer.byteLength(stored, 'utf8')).toBeLessThanOrEqual(MAX_PATH_BYTES);
  for (const segment of segments) expectStorable(segment);
  if (segments.length > 1) expect(segments[0]!.toLowerCase()).not.toBe('.ferry');
  const root = path.resolve('/srv/ferry-root');
  const joined = path.join(root, ...segments);
  expect(joined.startsWith(root + path.sep)).toBe(true);
  expect(path.relative(root, joined).split(path.sep)).toEqual(segments);
  expect(path.isAbsolute(stored)).toBe(false);
}

describe('safeRelativePath', () => {
  it.each([
    ['photos/2024/a.jpg', 'photos/2024/a.jpg'],
    ['photos\\2024\\a.jpg', 'photos/2024/a.jpg'],
    ['a.txt', 'a.txt'],
    ['dir. /CON/f?.txt ', 'dir/_CON/f_.txt'],
    ['  lead/  trail  /x', 'lead/trail/x'],
    ['e\u0301/caf\u00e9.txt', '\u00e9/caf\u00e9.txt'],
    ['.ferry', '.ferry'],
    ['photos/.ferry/x', 'photos/.ferry/x'],
    ['%2e%2e/x', '%2e%2e/x'],
    ['..cache/x', '..cache/x'],
    ['ab:x/y', 'ab_x/y'],
  ])('turns %j into %j', (raw, expected) => {
    const stored = safeRelativePath(raw);
    expect(stored).toBe(expected);
    expectStorablePath(stored);
  });

  it('gives what safeName gives for a name without folders', () => {
    for (const raw of ['a.txt', 'NUL.txt', ' x. ', 'C:abs', 'f.txt:stream', 'x'.repeat(300) + '.png']) expect(safeRelativePath(raw)).toBe(safeName(raw));
    expect(pathRefusal('...').message).toBe(refusal('...').message);
  });

  it.each([
    ['../x', /empty, "\."/],
    ['a/../../b', /empty, "\."/],
    ['a/./b', /empty, "\."/],
    ['a//b', /empty/],
    ['dir/', /empty/],
    ['./x', /empty/],
    ['/etc/passwd', /absolute/],
    ['\\etc\\passwd', /absolute/],
    ['\\\\srv\\share\\x', /absolute/],
    ['//srv/share/x', /absolute/],
    ['C:/Windows/x.dll', /absolute/],
    ['c:\\boot.ini', /absolute/],
    ['d:x/y', /drive letter/],
    ['a/.../b', /nothing left/],
    ['a/ . /b', /nothing left/],
    ['.ferry/partial/x.part', /state folder/],
    ['.FERRY/x', /state folder/],
    ['.ferry./x', /state folder/],
    [' .Ferry/x', /state folder/],
    ['dir\u0000/x', /control character/],
    ['a\ud800/x', /surrogate/],
  ])('refuses %j', (raw, reason) => {
    expect(pathRefusal(raw).message).toMatch(reason);
  });

  it(`limits a path to ${MAX_PATH_SEGMENTS} segments and ${MAX_PATH_BYTES} bytes, saying so`, () => {
    const deep = Array.from({ length: MAX_PATH_SEGMENTS }, (_, i) => `d${i}`);
    expect(safeRelativePath(deep.join('/'))).toBe(deep.join('/'));
    expect(pathRefusal([...deep, 'x'].join('/')).message).toContain(`more than the ${MAX_PATH_SEGMENTS} allowed`);
    // Each segment is capped at 200 bytes as before; the whole path may then still be too long.
    const wide = Array.from({ length: 6 }, () => 'w'.repeat(300)).join('/');
    expect(pathRefusal(wide).message).toContain(`longer than ${MAX_PATH_BYTES} bytes`);
    const fits = Array.from({ length: 5 }, () => 'w'.repeat(300)).join('/');
    expect(safeRelativePath(fits).split('/').every((segment) => segment.length === 200)).toBe(true);
  });

  it('refuses a name that is not a string', () => {
    pathRefusal(undefined as unknown as string);
  });

  const check = (raw: string): void => {
    let stored: string;
    try {
      stored = safeRelativePath(raw);
    } catch (err) {
      expect(err).toBeInstanceOf(FerryError);
      expect((err as FerryError).code).toBe('E_BAD_NAME');
      return;
    }
    expectStorablePath(stored);
    expect(stored).toBe(stored.normalize('NFC'));
    // Stable: a stored path offered again is the same path.
    expect(safeRelativePath(stored)).toBe(stored);
  };

  it('satisfies the storage invariants for arbitrary strings', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 400 }), check), { numRuns: 2_000 });
  });

  it('satisfies the storage invariants for paths made of awkward pieces', () => {
    const piece = fc.constantFrom(
      '/', '/', '\\', '.', '..', ' ', ':', 'C:', 'c:', '.ferry', '.FERRY', '.Ferry.', 'CON', 'nul', 'a', '\u00e9', 'e\u0301',
      '\u{1f600}', '\u0000', '.txt', '%2e', 'x'.repeat(60), 'y'.repeat(250),
    );
    fc.assert(fc.property(fc.array(piece, { maxLength: 40 }).map((parts) => parts.join('')), check), { numRuns: 3_000 });
  });

  it('never lets a path made of traversal pieces out of the root', () => {
    const segment = fc.constantFrom('..', '.', '', 'a', 'b', '.ferry', 'C:', '~', '...', ' ..', '.. ');
    const separator = fc.constantFrom('/', '\\');
    fc.assert(
      fc.property(fc.array(fc.tuple(segment, separator), { minLength: 1, maxLength: 10 }), fc.boolean(), (parts, leading) => {
        const raw = (leading ? '/' : '') + parts.map(([s, sep]) => s + sep).join('') + 'file.txt';
        check(raw);
        if (parts.some(([s]) => s === '..' || s === '.' || s === '')) pathRefusal(raw);
      }),
      { numRuns: 2_000 },
    );
  });
});

describe('numberedName', () => {
  it.each([
    ['photo.png', 1, 'photo (1).png'],
    ['archive.tar.gz', 2, 'archive.tar (2).gz'],
    ['.bashrc', 1, '.bashrc (1)'],
    ['..cache', 4, '..cache (4)'],
    ['noext', 3, 'noext (3)'],
    ['data set (1).bin', 2, 'data set (1) (2).bin'],
  ])('numbers %j with %i as %j', (name, n, expected) => {
    expect(numberedName(name, n)).toBe(expected);
  });

  it('refuses counters that are not positive integers', () => {
    expect(() => numberedName('a.txt', 0)).toThrow(RangeError);
    expect(() => numberedName('a.txt', 1.5)).toThrow(RangeError);
  });

  it('keeps a sanitised name storable', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 300 }), fc.integer({ min: 1, max: 10_000 }), (raw, n) => {
        let name: string;
        try {
          name = safeName(raw);
        } catch {
          return;
        }
        const numbered = numberedName(name, n);
        expect(numbered).not.toMatch(/[/\\]/);
        expect(numbered).not.toBe(name);
        expect(Buffer.byteLength(numbered)).toBeLessThanOrEqual(255);
      }),
    );
  });
});
