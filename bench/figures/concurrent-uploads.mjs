// Many uploads at once: 100 library clients (in a few child processes, all connected before a common
// start) each upload their own 8 MiB file to a `ferry serve` child. Aggregate MB/s over the whole
// batch and fairness (slowest / fastest completion time). The baseline is the pipe: the same files
// on as many simultaneous node:net connections (from as many processes), SHA-256 on both ends.
import fs from 'node:fs';
import path from 'node:path';
import {
  MiB,
  bySize,
  emptyInbox,
  generateFile,
  kill,
  makeTempDir,
  mb,
  memoryOf,
  metric,
  pipeScript,
  ratioOf,
  removeTempDir,
  resetPeakMemory,
  row,
  spawnTracked,
  startFerryServe,
  startPipeReceiver,
  target,
  uploadClientsScript,
  waitForLine,
  withTimeout,
  settleDisk,
} from '../lib/common.mjs';

export const name = 'concurrent-uploads';
export const title = '100 clients uploading 8 MiB each at once: aggregate MB/s and fairness, vs the pipe';

function split(files, parts) {
  const out = Array.from({ length: parts }, () => []);
  files.forEach((f, i) => out[i % parts].push(f));
  return out.filter((p) => p.length > 0);
}

function summarize(results, bytesEach) {
  const start = Math.min(...results.map((r) => r.start));
  const end = Math.max(...results.map((r) => r.end));
  const durations = results.map((r) => r.end - r.start);
  return {
    aggregate: mb(bytesEach * results.length) / ((end - start) / 1000),
    wallMs: end - start,
    fairness: Math.max(...durations) / Math.min(...durations),
    slowestMs: Math.max(...durations),
    fastestMs: Math.min(...durations),
  };
}

async function ferryBatch(port, groups, stateDir, timeoutMs) {
  const children = groups.map((files) => spawnTracked(process.execPath, [uploadClientsScript, String(port), stateDir, ...files], { stdio: ['pipe', 'pipe', 'pipe'] }));
  try {
    const resultsOf = children.map((c) => waitForLine(c, (l) => JSON.parse(l).results, timeoutMs, 'upload clients'));
    for (const p of resultsOf) p.catch(() => undefined); // awaited below; not unhandled if connecting fails first
    await Promise.all(children.map((c) => waitForLine(c, (l) => JSON.parse(l).ready, 60_000, 'upload clients connecting')));
    for (const c of children) c.stdin.write('go\n');
    return (await Promise.all(resultsOf)).flat();
  } finally {
    await Promise.all(children.map((c) => withTimeout(c.exited, 10_000, 'upload clients exit').catch(() => kill(c))));
  }
}

async function pipeBatch(port, groups, timeoutMs) {
  const children = groups.map((files) => spawnTracked(process.execPath, [pipeScript, 'send-concurrent', '127.0.0.1', String(port), ...files]));
  try {
    return (await Promise.all(children.map((c) => waitForLine(c, (l) => JSON.parse(l).results, timeoutMs, 'pipe send-concurrent')))).flat();
  } finally {
    await Promise.all(children.map((c) => kill(c)));
  }
}

export async function run(ctx, { clients = bySize(ctx, { smoke: 10, quick: 20, full: 100 }), size = bySize(ctx, { smoke: MiB, quick: 2 * MiB, full: 8 * MiB }), processes = 2 } = {}) {
  const dir = makeTempDir(name);
  try {
    const src = path.join(dir, 'files');
    const inbox = path.join(dir, 'ferry-in');
    const pipeIn = path.join(dir, 'pipe-in');
    const stateDir = path.join(dir, 'client-state');
    for (const d of [src, inbox, pipeIn, stateDir]) fs.mkdirSync(d);
    ctx.log(`generating ${clients} files of ${size / MiB} MiB`);
    const files = Array.from({ length: clients }, (_, i) => {
      const file = path.join(src, `c${String(i).padStart(3, '0')}.bin`);
      generateFile(file, size, 5000 + i);
      return file;
    });
    const groups = split(files, processes);
    const timeoutMs = 60_000 + ((clients * size) / 5e6) * 1000;
    const ferry = await startFerryServe({ uploadDir: inbox });
    const pipe = await startPipeReceiver(pipeIn);
    const s = { ferry: [], pipe: [] };
    // Peak RSS of each receiver during each batch (since the last reset; over its whole life where
    // resetting is not allowed).
    const peak = { ferry: [], pipe: [] };
    for (let i = 0; i < ctx.runs; i++) {
      const order = i % 2 === 0 ? ['pipe', 'ferry'] : ['ferry', 'pipe'];
      for (const kind of order) {
        settleDisk();
        const receiverPid = (kind === 'ferry' ? ferry : pipe).child.pid;
        if (!resetPeakMemory(receiverPid) && i === 0) ctx.log(`${kind}: the peak RSS cannot be reset here, so it covers the receiver's whole life`);
        const results = kind === 'ferry' ? await ferryBatch(ferry.port, groups, path.join(stateDir, `run${i}`), timeoutMs) : await pipeBatch(pipe.port, groups, timeoutMs);
        if (results.length !== clients) throw new Error(`${kind}: ${results.length} of ${clients} uploads finished`);
        const onDisk = fs.readdirSync(kind === 'ferry' ? inbox : pipeIn).filter((n) => n !== '.ferry').length;
        if (onDisk !== clients) throw new Error(`${kind}: ${onDisk} of ${clients} files stored`);
        emptyInbox(kind === 'ferry' ? inbox : pipeIn);
        const sum = summarize(results, size);
        s[kind].push(sum);
        peak[kind].push(memoryOf(receiverPid)?.hwm ?? NaN);
        ctx.log(
          `run ${i + 1}: ${kind.padEnd(5)} ${sum.aggregate.toFixed(0)} MB/s aggregate, ${(sum.wallMs / 1000).toFixed(2)} s, ` +
            `slowest/fastest ${(sum.slowestMs / 1000).toFixed(2)}/${(sum.fastestMs / 1000).toFixed(2)} s = ${sum.fairness.toFixed(2)}, ` +
            `receiver peak ${mb(peak[kind].at(-1)).toFixed(0)} MB`,
        );
      }
    }
    await kill(ferry.child);
    await kill(pipe.child);
    const pick = (kind, key) => s[kind].map((x) => x[key]);
    const ratios = {
      'aggregate ferry/pipe': ratioOf(pick('ferry', 'aggregate'), pick('pipe', 'aggregate')),
      'fairness ferry/pipe': ratioOf(pick('ferry', 'fairness'), pick('pipe', 'fairness')),
      'peak RSS ferry/pipe': ratioOf(peak.ferry, peak.pipe),
    };
    return {
      params: { clients, size, totalMB: mb(clients * size), clientProcesses: groups.length, runs: ctx.runs },
      metrics: {
        ferryRate: metric('ferry aggregate', 'MB/s', pick('ferry', 'aggregate')),
        pipeRate: metric('pipe aggregate', 'MB/s', pick('pipe', 'aggregate')),
        ferryFairness: metric('ferry slowest/fastest', '×', pick('ferry', 'fairness')),
        pipeFairness: metric('pipe slowest/fastest', '×', pick('pipe', 'fairness')),
        ferrySlowest: metric('ferry slowest client', 's', pick('ferry', 'slowestMs').map((x) => x / 1000)),
        ferryFastest: metric('ferry fastest client', 's', pick('ferry', 'fastestMs').map((x) => x / 1000)),
        ferryPeak: metric('ferry serve peak RSS during a batch', 'MB', peak.ferry.map(mb)),
        pipePeak: metric('pipe receiver peak RSS during a batch', 'MB', peak.pipe.map(mb)),
      },
      ratios,
      targets: [target('aggregate ≥ 0.8 × the pipe', ratios['aggregate ferry/pipe'].value, '>=', 0.8)],
      table: [
        row(`aggregate, ${clients} × ${size / MiB} MiB at once`, 'ferryRate', { baseline: 'pipeRate', ratio: 'aggregate ferry/pipe', target: 0 }),
        row('fairness: slowest / fastest upload', 'ferryFairness', { baseline: 'pipeFairness', ratio: 'fairness ferry/pipe' }),
        row('receiver peak RSS during a batch', 'ferryPeak', { baseline: 'pipePeak', ratio: 'peak RSS ferry/pipe' }),
      ],
    };
  } finally {
    removeTempDir(dir);
  }
}
