// Many small files: one `ferry send` invocation with all of them (one connection, one after another)
// against the pipe baseline sending each file on its own connection, sequentially, from one process.
import fs from 'node:fs';
import path from 'node:path';
import { KiB, bySize, cli, emptyInbox, generateFile, kill, makeTempDir, mb, metric, pipeScript, ratioOf, removeTempDir, row, startFerryServe, startPipeReceiver, target, timeProcess, settleDisk } from '../lib/common.mjs';

export const name = 'small-files';
export const title = 'many 64 KiB files: one ferry send vs pipe baseline (a connection per file, sequential)';

export async function run(ctx, { count = bySize(ctx, { smoke: 20, quick: 100, full: 1000 }), size = 64 * KiB } = {}) {
  const dir = makeTempDir(name);
  try {
    const src = path.join(dir, 'files');
    const inbox = path.join(dir, 'ferry-in');
    const pipeIn = path.join(dir, 'pipe-in');
    const stateDir = path.join(dir, 'client-state');
    for (const d of [src, inbox, pipeIn, stateDir]) fs.mkdirSync(d);
    ctx.log(`generating ${count} files of ${size / KiB} KiB`);
    const files = [];
    for (let i = 0; i < count; i++) {
      const file = path.join(src, `f${String(i).padStart(5, '0')}.bin`);
      generateFile(file, size, 1000 + i);
      files.push(file);
    }
    const ferry = await startFerryServe({ uploadDir: inbox });
    const pipe = await startPipeReceiver(pipeIn);
    const timeoutMs = 30_000 + count * 200;
    const times = { ferry: [], pipe: [] };
    for (let i = 0; i < ctx.runs; i++) {
      const order = i % 2 === 0 ? ['pipe', 'ferry'] : ['ferry', 'pipe'];
      for (const kind of order) {
        settleDisk();
        let ms;
        if (kind === 'ferry') {
          const out = await timeProcess(process.execPath, [cli, 'send', '--port', String(ferry.port), '--json', '--state-dir', stateDir, ...files], { timeoutMs, what: 'ferry send' });
          const stored = out.stdout.trim().split('\n').filter((l) => l.includes('"savedAs"')).length;
          if (stored !== count) throw new Error(`ferry send reported ${stored} of ${count} files stored`);
          const onDisk = fs.readdirSync(inbox).filter((n) => n !== '.ferry').length;
          if (onDisk !== count) throw new Error(`ferry stored ${onDisk} of ${count} files`);
          ms = out.ms;
          emptyInbox(inbox);
        } else {
          ms = (await timeProcess(process.execPath, [pipeScript, 'send-each', '127.0.0.1', String(pipe.port), ...files], { timeoutMs, what: 'pipe send-each' })).ms;
          const onDisk = fs.readdirSync(pipeIn).length;
          if (onDisk !== count) throw new Error(`pipe receiver wrote ${onDisk} of ${count} files`);
          emptyInbox(pipeIn);
        }
        times[kind].push(ms);
        ctx.log(`run ${i + 1}: ${kind.padEnd(5)} ${(ms / 1000).toFixed(2)} s  ${(count / (ms / 1000)).toFixed(0)} files/s`);
      }
    }
    await kill(ferry.child);
    await kill(pipe.child);
    const perSecond = (xs) => xs.map((ms) => count / (ms / 1000));
    const ratios = { 'ferry/pipe': ratioOf(times.ferry, times.pipe), 'files/s ferry/pipe': ratioOf(perSecond(times.ferry), perSecond(times.pipe)) };
    return {
      params: { count, size, totalMB: mb(count * size), runs: ctx.runs },
      metrics: {
        ferry: metric(`ferry send, ${count} files`, 's', times.ferry.map((ms) => ms / 1000)),
        pipe: metric(`pipe, ${count} connections`, 's', times.pipe.map((ms) => ms / 1000)),
        ferryRate: metric('ferry files/s', 'files/s', perSecond(times.ferry)),
        pipeRate: metric('pipe files/s', 'files/s', perSecond(times.pipe)),
      },
      ratios,
      targets: [target('ferry time ≤ 2 × pipe time', ratios['ferry/pipe'].value, '<=', 2)],
      table: [
        row(`${count.toLocaleString('en-US')} files of ${size / KiB} KiB: wall time`, 'ferry', { baseline: 'pipe', ratio: 'ferry/pipe', target: 0 }),
        row('files per second', 'ferryRate', { baseline: 'pipeRate', ratio: 'files/s ferry/pipe' }),
      ],
    };
  } finally {
    removeTempDir(dir);
  }
}
