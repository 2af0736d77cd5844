#!/usr/bin/env node
// Rewrites the generated parts of docs/machines.md from the machine definitions: for each machine, the
// state table between <!-- states:NAME:start --> and <!-- states:NAME:end -->, and the Mermaid diagram
// between <!-- diagram:NAME:start --> and <!-- diagram:NAME:end -->. Everything outside the markers is
// left as it is.
//
// It reads the compiled code in dist/, so run it after a build: `npm run build && npm run diagrams`.
// With --check it changes nothing and exits 1 when the file is out of date.

import { access, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const docsPath = path.join(root, 'docs', 'machines.md');
const builtPath = path.join(root, 'dist', 'machines', 'diagram.js');
const check = process.argv.includes('--check');

function fail(message) {
  process.stderr.write(`update-diagrams: ${message}\n`);
  process.exit(1);
}

try {
  await access(builtPath);
} catch {
  fail('dist/machines/diagram.js is missing; run `npm run build` first.');
}
const { machines, toMermaid, toStateTable } = await import(pathToFileURL(builtPath).href);

let docs;
try {
  docs = await readFile(docsPath, 'utf8');
} catch (err) {
  fail(`docs/machines.md cannot be read: ${err.message}`);
}

const missing = [];

/** Where `marker` stands on a line of its own, at or after `from`; -1 when it does not. */
function markerAt(text, marker, from) {
  for (let i = text.indexOf(marker, from); i >= 0; i = text.indexOf(marker, i + 1)) {
    const before = i === 0 ? '\n' : text[i - 1];
    const after = text[i + marker.length] ?? '\n';
    if (before === '\n' && after === '\n') return i;
  }
  return -1;
}

/** Replaces what lies between the two markers of one block; both markers stay. */
function replaceBlock(text, kind, name, body) {
  const start = `<!-- ${kind}:${name}:start -->`;
  const end = `<!-- ${kind}:${name}:end -->`;
  const from = markerAt(text, start, 0);
  const to = from < 0 ? -1 : markerAt(text, end, from + start.length);
  if (from < 0 || to < 0) {
    missing.push(`${start} … ${end}`);
    return text;
  }
  return `${text.slice(0, from + start.length)}\n${body}${text.slice(to)}`;
}

let updated = docs.replace(/\r\n/g, '\n');
for (const [name, machine] of Object.entries(machines)) {
  updated = replaceBlock(updated, 'states', name, toStateTable(machine));
  updated = replaceBlock(updated, 'diagram', name, `\`\`\`mermaid\n${toMermaid(machine)}\`\`\`\n`);
}

const known = new Set(Object.keys(machines));
const stale = [...updated.matchAll(/^<!-- (?:states|diagram):([^:\s]+):start -->$/gm)].map((m) => m[1]).filter((name) => !known.has(name));

if (check) {
  if (updated !== docs) fail('docs/machines.md is out of date: run `npm run build && npm run diagrams`.');
} else if (updated !== docs) {
  await writeFile(docsPath, updated);
  process.stdout.write('docs/machines.md: diagrams and state tables updated.\n');
} else {
  process.stdout.write('docs/machines.md is up to date.\n');
}

if (missing.length > 0) {
  fail(`docs/machines.md has no place for these blocks; add the markers where they belong:\n  ${missing.join('\n  ')}`);
}
if (stale.length > 0) {
  fail(`docs/machines.md has blocks for machines that no longer exist: ${[...new Set(stale)].join(', ')}; remove them.`);
}
