/**
 * The benchmark suite still measures: `node bench/run.mjs --smoke` (every figure at tiny sizes, one
 * run, targets not judged) against the built dist/, as a user runs it. Fails when the bench exits
 * non-zero, a figure errors or is skipped, or any figure yields a number that is missing, not
 * finite or not positive, so a change that breaks a figure is caught here rather than at the next
 * full run. Nothing about speed is asserted.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, buildCliOnce, cleanEnv } from './helpers/processes.js';

const RUN = path.join(REPO_ROOT, 'bench', 'run.mjs');

interface Metric {
  label: string;
  unit?: string;
  status?: string;
  samples?: number[];
  median?: number;
}
interface Figure {
  status: 'ok' | 'skipped' | 'error';
  error?: string;
  reason?: string;
  metrics?: Record<string, Metric>;
  ratios?: Record<string, { value: number }>;
  targets?: { name: string; actual: number; pass: boolean | null }[];
  table?: { measure: string; ferry: string; baseline?: string; ratio?: string; target?: number }[];
}
interface Results {
  options: { smoke: boolean; runs: number };
  figures: Record<string, Figure>;
}

let scratch: string;
let outcome: { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string };
let results: Results;
let known: string[];

function runBench(args: string[], timeoutMs: number): Promise<typeof outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [RUN, ...args], { cwd: REPO_ROOT, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    // SIGTERM lets the bench kill what it started and remove its temp folders.
    const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

const isPositive = (x: unknown): boolean => typeof x === 'number' && Number.isFinite(x) && x > 0;

beforeAll(async () => {
  buildCliOnce();
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-smoke-'));
  const help = execFileSync(process.execPath, [RUN, '--help'], { cwd: REPO_ROOT, env: cleanEnv(), encoding: 'utf8' });
  known = (/^figures: (.*)$/m.exec(help)?.[1] ?? '').split(', ').filter(Boolean);
  const out = path.join(scratch, 'results.json');
  outcome = await runBench(['--smoke', '--dir', path.join(scratch, 'work'), '--out', out], 80_000);
  if (fs.existsSync(out)) results = JSON.parse(fs.readFileSync(out, 'utf8')) as Results;
}, 110_000);

afterAll(() => {
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

describe('node bench/run.mjs --smoke', () => {
  it('exits 0 and writes results for every figure it knows', () => {
    expect(outcome.signal, `the smoke run was stopped:\n${outcome.stdout.slice(-3000)}`).toBeNull();
    expect(outcome.code, `${outcome.stdout.slice(-3000)}\n${outcome.stderr.slice(-2000)}`).toBe(0);
    expect(results, 'the smoke run wrote no results file').toBeDefined();
    expect(results.options).toMatchObject({ smoke: true, runs: 1 });
    expect(known).toEqual(expect.arrayContaining(['upload-1g', 'small-files', 'memory-4g', 'messages', 'many-clients', 'idle-sessions', 'concurrent-uploads', 'recovery']));
    expect(Object.keys(results.figures).sort()).toEqual([...known].sort());
  });

  it('measures every figure: each metric, ratio and target value is a finite number above zero', () => {
    const problems: string[] = [];
    for (const [name, figure] of Object.entries(results.figures)) {
      if (figure.status !== 'ok') {
        problems.push(`${name}: ${figure.status} (${figure.error ?? figure.reason})`);
        continue;
      }
      const metrics = Object.entries(figure.metrics ?? {});
      if (metrics.length === 0) problems.push(`${name}: no metrics`);
      for (const [key, m] of metrics) {
        // A baseline tool that is not installed (netcat) is reported as such, not measured.
        if (m.status !== undefined) {
          if (m.status !== 'not installed') problems.push(`${name}.${key}: ${m.status}`);
          continue;
        }
        if (!m.samples?.length || !m.samples.every(isPositive)) problems.push(`${name}.${key} samples: ${JSON.stringify(m.samples)}`);
        if (!isPositive(m.median)) problems.push(`${name}.${key} median: ${m.median}`);
      }
      for (const [key, r] of Object.entries(figure.ratios ?? {})) if (!isPositive(r.value)) problems.push(`${name} ratio ${key}: ${r.value}`);
      for (const t of figure.targets ?? []) {
        if (!isPositive(t.actual)) problems.push(`${name} target "${t.name}": ${t.actual}`);
        if (t.pass !== null) problems.push(`${name} target "${t.name}" was judged in a smoke run`);
      }
      for (const r of figure.table ?? []) {
        for (const key of [r.ferry, r.baseline].filter((k): k is string => k !== undefined)) if (!figure.metrics?.[key]) problems.push(`${name}: table line "${r.measure}" names no metric ${key}`);
        if (r.ratio !== undefined && !figure.ratios?.[r.ratio]) problems.push(`${name}: table line "${r.measure}" names no ratio ${r.ratio}`);
        if (r.target !== undefined && !figure.targets?.[r.target]) problems.push(`${name}: table line "${r.measure}" names no target ${r.target}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('prints the table with each figure beside its baseline and target', () => {
    expect(outcome.stdout).toMatch(/figure \/ measure\s+ferry: median \(min–max\)\s+baseline: median \(min–max\)\s+ratio \(per run\)\s+target\s+result/);
    for (const name of known) expect(outcome.stdout).toMatch(new RegExp(`^${name}$`, 'm'));
    expect(outcome.stdout).toMatch(/smoke run: \d+ targets shown, not judged/);
  });
});
