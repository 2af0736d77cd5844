// Runs the benchmark suite: every figure side by side with its baseline, repeated, then prints a
// table (ferry's median and min–max of the runs beside its baseline's, their ratio, the target and
// whether it was met) and writes bench/results.json.
//
//   node bench/run.mjs [--smoke | --quick] [--only NAME,...] [--runs N] [--dir PATH] [--out FILE] [--merge FILE]
//
// A full run repeats every figure 5 times. --quick: 1 run, small sizes. --smoke: 1 run, tiny sizes,
// targets not judged (the CI check that every figure still produces numbers, under a minute).
// --merge FILE: keep the figures of an earlier results.json that this run does not measure (each
// figure says when it ran and how busy the machine was). --dir: where payloads and received files
// go (default: the OS temp folder). Figures: upload-1g,
// small-files, memory-4g, messages, many-clients, idle-sessions, concurrent-uploads, recovery.
// See bench/README.md.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { benchDir, cleanupAll, cli, freeBytes, getTempRoot, round, setTempRoot, withTimeout } from './lib/common.mjs';
import * as upload1g from './figures/upload-1g.mjs';
import * as smallFiles from './figures/small-files.mjs';
import * as memory4g from './figures/memory-4g.mjs';
import * as messages from './figures/messages.mjs';
import * as manyClients from './figures/many-clients.mjs';
import * as idleSessions from './figures/idle-sessions.mjs';
import * as concurrentUploads from './figures/concurrent-uploads.mjs';
import * as recovery from './figures/recovery.mjs';

const FIGURES = [upload1g, smallFiles, memory4g, messages, manyClients, idleSessions, concurrentUploads, recovery];
const DEFAULT_RUNS = 5;

const { values } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    runs: { type: 'string' },
    dir: { type: 'string' },
    out: { type: 'string', default: path.join(benchDir, 'results.json') },
    merge: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  console.log(`usage: node bench/run.mjs [--smoke | --quick] [--only NAME,...] [--runs N] [--dir PATH] [--out FILE] [--merge FILE]\nfigures: ${FIGURES.map((f) => f.name).join(', ')}`);
  process.exit(0);
}
const smoke = values.smoke;
const quick = values.quick && !smoke;
const runs = values.runs ? Number(values.runs) : smoke || quick ? 1 : DEFAULT_RUNS;
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
let merged;
if (values.merge) {
  try {
    merged = JSON.parse(fs.readFileSync(values.merge, 'utf8'));
  } catch (error) {
    console.error(`--merge ${values.merge}: cannot read it (${error.message})`);
    process.exit(2);
  }
  if (Boolean(merged.options?.smoke) !== smoke || Boolean(merged.options?.quick) !== quick) {
    console.error(`--merge ${values.merge}: it was run at other sizes (smoke ${Boolean(merged.options?.smoke)}, quick ${Boolean(merged.options?.quick)}); merge only runs of the same sizes`);
    process.exit(2);
  }
}
if (values.dir) setTempRoot(path.resolve(values.dir));
const selected = FIGURES.filter((f) => !only || only.includes(f.name));

// Each figure is bounded as a whole too; its children and temp files go when it ends, however it
// ends. A figure may say how long it needs (limitMs(ctx)); the default grows with the runs.
const defaultLimitMs = (ctx) => (ctx.smoke ? 60_000 : ctx.quick ? 150_000 : 200_000 * Math.max(3, ctx.runs));

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
const scale = smoke ? ', smoke sizes' : quick ? ', quick sizes' : '';
console.log(`ferry bench: ${selected.map((f) => f.name).join(', ')}; ${runs} run${runs > 1 ? 's' : ''}${scale}`);
console.log(
  `machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, node ${machine.node}, temp ${machine.tempDir} (${machine.freeDiskGiB} GiB free), load ${machine.loadAverageStart}\n`,
);
if (machine.loadAverageStart > 0.5 * machine.cores) console.log(`note: the machine is busy (load ${machine.loadAverageStart}); figures will be noisier and slower\n`);

const started = performance.now();
const figures = {};
for (const figure of selected) {
  const t = performance.now();
  const loadAverage = round(os.loadavg()[0]);
  const date = new Date().toISOString();
  console.log(`== ${figure.name}: ${figure.title} (load ${loadAverage})`);
  const ctx = { runs, quick, smoke, tempRoot: getTempRoot(), log: (msg) => console.log(`   ${msg}`) };
  let result;
  try {
    result = await withTimeout(figure.run(ctx), (figure.limitMs ?? defaultLimitMs)(ctx), figure.name);
    result.status ??= 'ok';
  } catch (error) {
    console.log(`   FAILED: ${error.message}`);
    result = { status: 'error', error: error.message };
  } finally {
    await cleanupAll();
  }
  result.durationSeconds = round((performance.now() - t) / 1000);
  // The machine may be shared: when this figure ran and how busy the machine was as it started and ended.
  result.date = date;
  result.loadAverage = { start: loadAverage, end: round(os.loadavg()[0]) };
  figures[figure.name] = { title: figure.title, ...result };
  console.log(`   (${result.durationSeconds} s)\n`);
}

// Figures of the merged file that this run did not measure, in the suite's order.
const keptFromMerge = [];
if (merged) {
  const measured = { ...figures };
  for (const key of Object.keys(figures)) delete figures[key];
  for (const f of FIGURES) {
    if (measured[f.name]) figures[f.name] = measured[f.name];
    else if (merged.figures?.[f.name]) {
      figures[f.name] = { ...merged.figures[f.name], date: merged.figures[f.name].date ?? merged.machine?.date, mergedFrom: values.merge };
      keptFromMerge.push(f.name);
    }
  }
  console.log(`kept from ${values.merge}: ${keptFromMerge.join(', ') || 'nothing'} (run ${merged.machine?.date}, load ${merged.machine?.loadAverageStart} → ${merged.machine?.loadAverageEnd})\n`);
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
const fmtRatio = (x) => (typeof x === 'number' && Number.isFinite(x) && Math.abs(x) < 10 ? x.toFixed(3) : fmt(x));
/** "median unit (min–max)" of a metric, or its status (e.g. "not installed"). */
const figureCell = (m) => {
  if (!m) return '';
  if (m.status) return m.status;
  const spread = m.samples?.length > 1 ? ` (${fmt(m.min)}–${fmt(m.max)})` : '';
  return `${fmt(m.median)}${m.unit === '×' ? '×' : ` ${m.unit}`}${spread}`;
};
const opSymbol = { '<=': '≤', '>=': '≥', '<': '<', '>': '>' };
const targetCell = (t) => (t ? `${opSymbol[t.op] ?? t.op} ${t.value}${(t.unit ?? '×') === '×' ? '×' : ` ${t.unit}`}` : '');
const resultCell = (t) => (!t ? '' : smoke ? 'not judged' : t.pass === null ? 'n/a' : t.pass ? 'PASS' : 'FAIL');

if (smoke) for (const f of Object.values(figures)) for (const t of f.targets ?? []) t.pass = null;
const rows = [];
const targets = [];
for (const [name, f] of Object.entries(figures)) {
  rows.push([name, '', '', '', '', '']);
  if (f.status !== 'ok') {
    rows.push([`  ${f.status === 'skipped' ? `SKIPPED: ${f.reason}` : `ERROR: ${f.error}`}`, '', '', '', '', '']);
    for (const t of f.targets ?? []) targets.push({ figure: name, ...t, pass: null });
    continue;
  }
  for (const t of f.targets ?? []) targets.push({ figure: name, ...t });
  const shown = new Set();
  const shownTargets = new Set();
  for (const r of f.table ?? []) {
    const t = r.target !== undefined ? f.targets[r.target] : undefined;
    const ratio = r.ratio ? f.ratios?.[r.ratio] : undefined;
    shown.add(r.ferry);
    if (r.baseline) shown.add(r.baseline);
    if (r.target !== undefined) shownTargets.add(r.target);
    // Three decimals for the ratio itself, so one that misses its target by a hair does not print as the target.
    const ratioText = ratio ? `${fmtRatio(ratio.value)}×${ratio.min !== undefined ? ` (${fmt(ratio.min)}–${fmt(ratio.max)})` : ''}` : '';
    rows.push([`  ${r.measure}`, figureCell(f.metrics[r.ferry]), figureCell(f.metrics[r.baseline]), ratioText, targetCell(t), resultCell(t)]);
  }
  // Whatever the figure measured beyond its side-by-side lines, and targets not on any line.
  for (const [key, m] of Object.entries(f.metrics ?? {})) {
    if (!shown.has(key)) rows.push([`  ${m.label}`, figureCell(m), '', '', '', '']);
  }
  (f.targets ?? []).forEach((t, i) => {
    if (!shownTargets.has(i)) rows.push([`  ${t.name}`, `${fmt(t.actual)}${(t.unit ?? '×') === '×' ? '×' : ` ${t.unit}`}`, '', '', targetCell(t), resultCell(t)]);
  });
}
const header = ['figure / measure', 'ferry: median (min–max)', 'baseline: median (min–max)', 'ratio (per run)', 'target', 'result'];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
const line = (r) => r.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd();
console.log(line(header));
console.log(widths.map((w) => '-'.repeat(w)).join('  '));
for (const r of rows) console.log(line(r));

const passed = targets.filter((t) => t.pass === true).length;
const failed = targets.filter((t) => t.pass === false).length;
const notMeasured = targets.filter((t) => t.pass === null).length;
const totalSeconds = round((performance.now() - started) / 1000);
if (smoke) console.log(`\nsmoke run: ${targets.length} targets shown, not judged (sizes too small to mean anything); ${totalSeconds} s in all`);
else console.log(`\ntargets: ${passed} passed, ${failed} missed${notMeasured ? `, ${notMeasured} not measured` : ''}; ${totalSeconds} s in all`);
for (const t of targets.filter((x) => x.pass === false)) console.log(`  missed: ${t.figure}: ${t.name} (measured ${fmt(t.actual)})`);
if (!smoke) for (const t of targets.filter((x) => x.pass === null && x.note)) console.log(`  not measured: ${t.figure}: ${t.name}: ${t.note}`);

machine.loadAverageEnd = round(os.loadavg()[0]);
const results = {
  machine,
  options: { smoke, quick, runs, only: only ?? null, ...(merged ? { merged: { file: values.merge, figures: keptFromMerge, machine: merged.machine } } : {}) },
  durationSeconds: totalSeconds,
  figures,
  summary: { passed, failed, notMeasured, targets },
};
fs.writeFileSync(values.out, `${JSON.stringify(results, null, 2)}\n`);
console.log(`wrote ${path.relative(process.cwd(), values.out) || values.out}`);
const errored = Object.values(figures).some((f) => f.status === 'error');
process.exit(errored ? 1 : 0);
