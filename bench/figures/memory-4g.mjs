// Peak memory (VmHWM) of the server and the client while a 4 GiB file is uploaded, against the same
// for the pipe baseline's receiver and sender. Each run uses fresh processes so the peak is that
// upload's. The server's peak is read from /proc/<pid>/status once the upload is confirmed; the
// client's is written by the client itself on exit (bench/lib/report-usage.mjs, preloaded).
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  GiB,
  MiB,
  bySize,
  cli,
  emptyInbox,
  freeBytes,
  generateFile,
  usagePreload,
  kill,
  makeTempDir,
  mb,
  memoryOf,
  metric,
  pipeScript,
  ratioOf,
  removeTempDir,
  row,
  startFerryServe,
  startPipeReceiver,
  target,
  timeProcess,
  settleDisk,
} from '../lib/common.mjs';

export const name = 'memory-4g';
export const title = 'peak RSS (VmHWM) of server and client during a 4 GiB upload, vs the pipe baseline';

const budget = (bytes) => 60_000 + (bytes / 5e6) * 1000;

export async function run(ctx, { bytes = bySize(ctx, { smoke: 32 * MiB, quick: 256 * MiB, full: 4 * GiB }) } = {}) {
  const needed = bySize(ctx, { smoke: 2 * bytes + 256 * MiB, quick: 2 * bytes + GiB, full: 10 * GiB });
  const free = freeBytes(ctx.tempRoot);
  if (free < needed) {
    const reason = `not enough disk: ${(free / GiB).toFixed(1)} GiB free in ${ctx.tempRoot}, needs ${(needed / GiB).toFixed(1)} GiB`;
    ctx.log(reason);
    return { status: 'skipped', reason, params: { bytes } };
  }
  const dir = makeTempDir(name);
  try {
    ctx.log(`generating ${(bytes / GiB).toFixed(2)} GiB payload`);
    const file = path.join(dir, 'payload.bin');
    const sha256 = generateFile(file, bytes, 4);
    const inbox = path.join(dir, 'ferry-in');
    const pipeIn = path.join(dir, 'pipe-in');
    const stateDir = path.join(dir, 'client-state');
    for (const d of [inbox, pipeIn, stateDir]) fs.mkdirSync(d);
    const preload = ['--import', pathToFileURL(usagePreload).href];
    const hwmFile = path.join(dir, 'client-hwm.json');
    const readClientPeak = () => JSON.parse(fs.readFileSync(hwmFile, 'utf8')).hwm;

    const s = { ferryServer: [], ferryServerIdle: [], ferryClient: [], ferryMs: [], pipeServer: [], pipeServerIdle: [], pipeClient: [], pipeMs: [] };
    for (let i = 0; i < ctx.runs; i++) {
      const order = i % 2 === 0 ? ['pipe', 'ferry'] : ['ferry', 'pipe'];
      for (const kind of order) {
        settleDisk();
        fs.rmSync(hwmFile, { force: true });
        if (kind === 'ferry') {
          const server = await startFerryServe({ uploadDir: inbox });
          s.ferryServerIdle.push(memoryOf(server.child.pid).rss);
          const out = await timeProcess(process.execPath, [...preload, cli, 'send', '--port', String(server.port), '--json', '--state-dir', stateDir, file], {
            timeoutMs: budget(bytes),
            what: 'ferry send',
            env: { FERRY_BENCH_USAGE_FILE: hwmFile },
          });
          const result = JSON.parse(out.stdout.trim().split('\n').pop());
          if (result.sha256 !== sha256) throw new Error(`ferry stored a different file: ${result.sha256}`);
          s.ferryServer.push(memoryOf(server.child.pid).hwm);
          s.ferryClient.push(readClientPeak());
          s.ferryMs.push(out.ms);
          await kill(server.child);
          emptyInbox(inbox);
        } else {
          const receiver = await startPipeReceiver(pipeIn);
          s.pipeServerIdle.push(memoryOf(receiver.child.pid).rss);
          const out = await timeProcess(process.execPath, [...preload, pipeScript, 'send', '127.0.0.1', String(receiver.port), file], {
            timeoutMs: budget(bytes),
            what: 'pipe send',
            env: { FERRY_BENCH_USAGE_FILE: hwmFile },
          });
          s.pipeServer.push(memoryOf(receiver.child.pid).hwm);
          s.pipeClient.push(readClientPeak());
          s.pipeMs.push(out.ms);
          await kill(receiver.child);
          emptyInbox(pipeIn);
        }
        const last = (xs) => (xs.at(-1) / MiB).toFixed(0);
        ctx.log(
          kind === 'ferry'
            ? `run ${i + 1}: ferry server peak ${last(s.ferryServer)} MiB, client peak ${last(s.ferryClient)} MiB (${(s.ferryMs.at(-1) / 1000).toFixed(1)} s)`
            : `run ${i + 1}: pipe  receiver peak ${last(s.pipeServer)} MiB, sender peak ${last(s.pipeClient)} MiB (${(s.pipeMs.at(-1) / 1000).toFixed(1)} s)`,
        );
      }
    }
    const toMB = (xs) => xs.map(mb);
    const worstServer = Math.max(...s.ferryServer.map(mb));
    return {
      params: { bytes, runs: ctx.runs, unit: 'MB = 10^6 bytes' },
      metrics: {
        ferryServer: metric('ferry serve peak RSS', 'MB', toMB(s.ferryServer)),
        ferryClient: metric('ferry send peak RSS', 'MB', toMB(s.ferryClient)),
        ferryServerIdle: metric('ferry serve RSS at start', 'MB', toMB(s.ferryServerIdle)),
        pipeServer: metric('pipe receiver peak RSS', 'MB', toMB(s.pipeServer)),
        pipeClient: metric('pipe sender peak RSS', 'MB', toMB(s.pipeClient)),
        pipeServerIdle: metric('pipe receiver RSS at start', 'MB', toMB(s.pipeServerIdle)),
        ferryRate: metric('ferry throughput', 'MB/s', s.ferryMs.map((ms) => mb(bytes) / (ms / 1000))),
        pipeRate: metric('pipe throughput', 'MB/s', s.pipeMs.map((ms) => mb(bytes) / (ms / 1000))),
      },
      ratios: {
        'server ferry/pipe': ratioOf(s.ferryServer, s.pipeServer),
        'client ferry/pipe': ratioOf(s.ferryClient, s.pipeClient),
        'idle ferry/pipe': ratioOf(s.ferryServerIdle, s.pipeServerIdle),
        'rate ferry/pipe': ratioOf(s.ferryMs.map((ms) => mb(bytes) / (ms / 1000)), s.pipeMs.map((ms) => mb(bytes) / (ms / 1000))),
      },
      targets: [target('ferry serve peak RSS < 150 MB (worst run)', worstServer, '<', 150, { unit: 'MB' })],
      table: [
        row('server peak RSS (target: worst run)', 'ferryServer', { baseline: 'pipeServer', ratio: 'server ferry/pipe', target: 0 }),
        row('client peak RSS', 'ferryClient', { baseline: 'pipeClient', ratio: 'client ferry/pipe' }),
        row('server RSS at start', 'ferryServerIdle', { baseline: 'pipeServerIdle', ratio: 'idle ferry/pipe' }),
        row('throughput', 'ferryRate', { baseline: 'pipeRate', ratio: 'rate ferry/pipe' }),
      ],
    };
  } finally {
    removeTempDir(dir);
  }
}
