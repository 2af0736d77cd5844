// Runs the benchmark suite: every figure side by side with its baseline, repeated, then prints a
// table (median and min–max of the runs) and writes bench/results.json.
//
//   node bench/run.mjs [--quick] [--only NAME,...] [--runs N] [--dir PATH] [--out FILE]
//
// --quick: 1 run and smaller sizes (a smoke test). --dir: where payloads and received files go
// (default: the OS temp folder). Figures: upload-1g, small-files, memory-4g, messages,
// idle-sessions, concurrent-uploads, recovery. See bench/README.md.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { benchDir, cleanupAll, cli, freeBytes, getTempRoot, round, setTempRoot, withTimeout } from './lib/common.mjs';
import * as upload1g from './figures/upload-1g.mjs';
import * as smallFiles from './figures/small-files.mjs';
import * as memory4g from './figures/memory-4g.mjs';
import * as messages from './figures/messages.mjs';
import * as idleSessions from './figures/idle-sessions.mjs';
import * as concurrentUploads from './figures/concurrent-uploads.mjs';
import * as recovery from './figures/recovery.mjs';

const FIGURES = [upload1g, smallFiles, memory4g, messages, idleSessions, concurrentUploads, recovery];

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    runs: { type: 'string' },
    dir: { type: 'string' },
    out: { type: 'string', default: path.join(benchDir, 'results.json') },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  console.log(`usage: node bench/run.mjs [--quick] [--only NAME,...] [--runs N] [--dir PATH] [--out FILE]\nfigures: ${FIGURES.map((f) => f.name).join(', ')}`);
  process.exit(0);
}
const quick = values.quick;
const runs = values.runs ? Number(values.runs) : quick ? 1 : 3;
if (!Number.isInteger(runs) || runs < 1) {
  console.error('--runs must be a whole number of at least 1');
  process.exit(2);
}
const only = values.only ? values.only.split(',').map((s) => s.trim()).filter(Boolean) : undefined;
const unknown = only?.filter((n) => !FIGURES.some((f) => f.name === n)) ?? [];
if (unknown.length) {
  console.error(`unknown figure(s): ${unknown.join(', ')}; known: ${FIGURES.map((f) => f.name).join(', ')}`);
  process.exit(2);
}
if (!fs.existsSync(cli)) {
  console.error(`${path.relative(process.cwd(), cli)} is missing: build the project first (npm run bench does).`);
  process.exit(2);
}
if (values.dir) setTempRoot(path.resolve(values.dir));
const selected = FIGURES.filter((f) => !only || only.includes(f.name));

// Each figure is bounded as a whole too; its children and temp files go when it ends, however it ends.
const FIGURE_LIMIT_MS = quick ? 150_000 : 600_000;

const cpus = os.cpus();
const machine = {
  cpu: cpus[0]?.model ?? 'unknown',
  cores: cpus.length,
  memoryBytes: os.totalmem(),
  memoryGiB: round(os.totalmem() / 2 ** 30),
  node: process.version,
  platform: `${os.platform()} ${os.release()} ${os.arch()}`,
  date: new Date().toISOString(),
  tempDir: getTempRoot(),
  freeDiskGiB: round(freeBytes(getTempRoot()) / 2 ** 30),
  // Other work on the machine skews every figure: the 1-minute load average before and after.
  loadAverageStart: round(os.loadavg()[0]),
};
console.log(`ferry bench: ${selected.map((f) => f.name).join(', ')}; ${runs} run${runs > 1 ? 's' : ''}${quick ? ', quick sizes' : ''}`);
console.log(
  `machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, node ${machine.node}, temp ${machine.tempDir} (${machine.freeDiskGiB} GiB free), load ${machine.loadAverageStart}\n`,
);
if (machine.loadAverageStart > 0.5 * machine.cores) console.log(`note: the machine is busy (load ${machine.loadAverageStart}); figures will be noisier and slower\n`);

const started = performance.now();
const figures = {};
for (const figure of selected) {
  const t = performance.now();
  console.log(`== ${figure.name}: ${figure.title}`);
  const ctx = { runs, quick, tempRoot: getTempRoot(), log: (msg) => console.log(`   ${msg}`) };
  let result;
  try {
    result = await withTimeout(figure.run(ctx), FIGURE_LIMIT_MS, figure.name);
    result.status ??= 'ok';
  } catch (error) {
    console.log(`   FAILED: ${error.message}`);
    result = { status: 'error', error: error.message };
  } finally {
    await cleanupAll();
  }
  result.durationSeconds = round((performance.now() - t) / 1000);
  figures[figure.name] = { title: figure.title, ...result };
  console.log(`   (${result.durationSeconds} s)\n`);
}

// ---------------------------------------------------------------------------------------------
// Table and results.json.

const fmt = (x) => {
  if (typeof x !== 'number' || !Number.isFinite(x)) return '–';
  const a = Math.abs(x);
  if (a >= 1000) return Math.round(x).toLocaleString('en-US');
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  return x.toFixed(2);
};
const rows = [];
const targets = [];
for (const [name, f] of Object.entries(figures)) {
  if (f.status !== 'ok') {
    rows.push([name, f.status === 'skipped' ? `SKIPPED: ${f.reason}` : `ERROR: ${f.error}`, '', '', '', '']);
    for (const t of f.targets ?? []) targets.push({ figure: name, ...t, pass: null });
    continue;
  }
  let first = true;
  const cell = () => {
    const c = first ? name : '';
    first = false;
    return c;
  };
  for (const m of Object.values(f.metrics)) {
    if (m.status) {
      rows.push([cell(), m.label, m.status, '', '', '']);
      continue;
    }
    rows.push([cell(), m.label, fmt(m.median), `${fmt(m.min)}–${fmt(m.max)}`, m.unit, '']);
    if (m.rate) rows.push(['', `  ${m.rate.label}`, fmt(m.rate.median), `${fmt(m.rate.min)}–${fmt(m.rate.max)}`, m.rate.unit, '']);
  }
  for (const [label, r] of Object.entries(f.ratios ?? {})) {
    rows.push(['', `ratio ${label}`, fmt(round(r.value)), r.min !== undefined ? `${fmt(r.min)}–${fmt(r.max)} per run` : '', '×', '']);
  }
  for (const t of f.targets ?? []) {
    targets.push({ figure: name, ...t });
    rows.push(['', `target: ${t.name}`, fmt(t.actual), `${t.op} ${t.value}`, t.unit ?? '×', t.pass === null ? 'n/a' : t.pass ? 'PASS' : 'FAIL']);
  }
}
const header = ['figure', 'measure', 'median', 'min–max', 'unit', 'result'];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
const line = (r) => r.map((c, i) => (i === 2 ? String(c).padStart(widths[i]) : String(c).padEnd(widths[i]))).join('  ').trimEnd();
console.log(line(header));
console.log(widths.map((w) => '-'.repeat(w)).join('  '));
for (const r of rows) console.log(line(r));

const passed = targets.filter((t) => t.pass === true).length;
const failed = targets.filter((t) => t.pass === false).length;
const notMeasured = targets.filter((t) => t.pass === null).length;
const totalSeconds = round((performance.now() - started) / 1000);
console.log(`\ntargets: ${passed} passed, ${failed} missed${notMeasured ? `, ${notMeasured} not measured` : ''}; ${totalSeconds} s in all`);
for (const t of targets.filter((x) => x.pass === false)) console.log(`  missed: ${t.figure}: ${t.name} (measured ${fmt(t.actual)})`);

machine.loadAverageEnd = round(os.loadavg()[0]);
const results = {
  machine,
  options: { quick, runs, only: only ?? null },
  durationSeconds: totalSeconds,
  figures,
  summary: { passed, failed, notMeasured, targets },
};
fs.writeFileSync(values.out, `${JSON.stringify(results, null, 2)}\n`);
console.log(`wrote ${path.relative(process.cwd(), values.out) || values.out}`);
const errored = Object.values(figures).some((f) => f.status === 'error');
process.exit(errored ? 1 : 0);
