// One large file from `ferry send` to `ferry serve` (separate processes, loopback) against the plain
// node:net pipe with SHA-256 on both ends (bench/pipe-baseline.mjs) and against netcat, each timed
// from the sender's spawn to its exit (ferry send exits once the server verified and stored the file).
import fs from 'node:fs';
import path from 'node:path';
import {
  GiB,
  MiB,
  cli,
  commandExists,
  emptyInbox,
  freePort,
  generateFile,
  isListening,
  kill,
  makeTempDir,
  mb,
  median,
  metric,
  pipeScript,
  removeTempDir,
  sleep,
  spawnTracked,
  startFerryServe,
  startPipeReceiver,
  target,
  timeProcess,
  withTimeout,
  settleDisk,
} from '../lib/common.mjs';

export const name = 'upload-1g';
export const title = 'one large upload: ferry send → ferry serve vs plain node:net pipe (SHA-256 both ends) vs nc';

/** Time allowed for one transfer: generous (5 MB/s) but bounded. */
const budget = (bytes) => 30_000 + (bytes / 5e6) * 1000;

export async function run(ctx, { bytes = ctx.quick ? 64 * MiB : GiB } = {}) {
  const dir = makeTempDir(name);
  try {
    ctx.log(`generating ${bytes / MiB} MiB payload`);
    const file = path.join(dir, 'payload.bin');
    const sha256 = generateFile(file, bytes, 1);
    const inbox = path.join(dir, 'ferry-in');
    const pipeIn = path.join(dir, 'pipe-in');
    const ncOut = path.join(dir, 'nc-out');
    const stateDir = path.join(dir, 'client-state');
    for (const d of [inbox, pipeIn, ncOut, stateDir]) fs.mkdirSync(d);

    const ferry = await startFerryServe({ uploadDir: inbox });
    const pipe = await startPipeReceiver(pipeIn);
    const haveNc = commandExists('nc');
    const times = { ferry: [], pipe: [], nc: [] };
    const kinds = haveNc ? ['pipe', 'ferry', 'nc'] : ['pipe', 'ferry'];

    for (let i = 0; i < ctx.runs; i++) {
      // Rotate the order so no contender always runs on a warmer (or dirtier) page cache.
      const order = kinds.map((_, k) => kinds[(k + i) % kinds.length]);
      for (const kind of order) {
        settleDisk();
        let ms;
        if (kind === 'ferry') {
          const out = await timeProcess(process.execPath, [cli, 'send', '--port', String(ferry.port), '--json', '--state-dir', stateDir, file], {
            timeoutMs: budget(bytes),
            what: 'ferry send',
          });
          const result = JSON.parse(out.stdout.trim().split('\n').pop());
          if (result.sha256 !== sha256) throw new Error(`ferry stored a different file: ${result.sha256} vs ${sha256}`);
          ms = out.ms;
          emptyInbox(inbox);
        } else if (kind === 'pipe') {
          ms = (await timeProcess(process.execPath, [pipeScript, 'send', '127.0.0.1', String(pipe.port), file], { timeoutMs: budget(bytes), what: 'pipe send' })).ms;
          emptyInbox(pipeIn);
        } else {
          ms = await netcat(file, path.join(ncOut, 'nc.bin'), bytes);
          emptyInbox(ncOut);
        }
        times[kind].push(ms);
        ctx.log(`run ${i + 1}: ${kind.padEnd(5)} ${(ms / 1000).toFixed(2)} s  ${(mb(bytes) / (ms / 1000)).toFixed(0)} MB/s`);
      }
    }
    await kill(ferry.child);
    await kill(pipe.child);

    const rate = (xs) => xs.map((ms) => mb(bytes) / (ms / 1000));
    const metrics = {
      ferry: metric('ferry send → serve', 'ms', times.ferry, { rate: metric('ferry throughput', 'MB/s', rate(times.ferry)) }),
      pipe: metric('node:net pipe + SHA-256', 'ms', times.pipe, { rate: metric('pipe throughput', 'MB/s', rate(times.pipe)) }),
      nc: haveNc ? metric('nc (no hashing)', 'ms', times.nc, { rate: metric('nc throughput', 'MB/s', rate(times.nc)) }) : { label: 'nc', status: 'not installed' },
    };
    const ratio = median(times.ferry) / median(times.pipe);
    const perRun = times.ferry.map((f, i) => f / times.pipe[i]);
    return {
      params: { bytes, runs: ctx.runs, file: 'AES-CTR keystream', receiverWritesTo: ctx.tempRoot },
      metrics,
      ratios: {
        'ferry/pipe': { value: ratio, perRun, min: Math.min(...perRun), max: Math.max(...perRun) },
        ...(haveNc ? { 'ferry/nc': { value: median(times.ferry) / median(times.nc) }, 'pipe/nc': { value: median(times.pipe) / median(times.nc) } } : {}),
      },
      targets: [target('ferry time ≤ 1.15 × pipe time', ratio, '<=', 1.15)],
    };
  } finally {
    removeTempDir(dir);
  }
}

/** `nc -l 127.0.0.1 PORT > out` and `nc -N 127.0.0.1 PORT < file`; ms from the sender's spawn until both exited. */
async function netcat(file, out, bytes) {
  const port = await freePort();
  const outFd = fs.openSync(out, 'w');
  const inFd = fs.openSync(file, 'r');
  let listener;
  let sender;
  try {
    listener = spawnTracked('nc', ['-l', '127.0.0.1', String(port)], { stdio: ['ignore', outFd, 'pipe'] });
    const deadline = Date.now() + 5_000;
    while (!isListening(port)) {
      if (Date.now() > deadline) throw new Error('nc -l did not start listening');
      await sleep(5);
    }
    const started = performance.now();
    sender = spawnTracked('nc', ['-N', '127.0.0.1', String(port)], { stdio: [inFd, 'ignore', 'pipe'] });
    await withTimeout(Promise.all([sender.exited, listener.exited]), budget(bytes), 'nc');
    const ms = performance.now() - started;
    const got = fs.statSync(out).size;
    if (got !== bytes) throw new Error(`nc delivered ${got} of ${bytes} bytes`);
    return ms;
  } finally {
    fs.closeSync(outFd);
    fs.closeSync(inFd);
    await kill(sender);
    await kill(listener);
  }
}
