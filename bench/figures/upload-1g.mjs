// One large file from `ferry send` to `ferry serve` (separate processes, loopback) against the plain
// node:net pipe with SHA-256 on both ends (bench/pipe-baseline.mjs) and against netcat, each timed
// from the sender's spawn to its exit (ferry send exits once the server verified and stored the file).
// CPU time (user + system) of both ends too: the receiver's from /proc/<pid>/stat before and after
// the upload (it keeps running), the sender's reported by the sender itself as it exits
// (lib/report-usage.mjs, preloaded), start-up included, as in the wall time.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  GiB,
  MiB,
  bySize,
  cli,
  commandExists,
  cpuTimeOf,
  emptyInbox,
  freePort,
  generateFile,
  isListening,
  kill,
  makeTempDir,
  mb,
  metric,
  pipeScript,
  ratioOf,
  removeTempDir,
  row,
  sleep,
  spawnTracked,
  startFerryServe,
  startPipeReceiver,
  target,
  timeProcess,
  usagePreload,
  withTimeout,
  settleDisk,
} from '../lib/common.mjs';

export const name = 'upload-1g';
export const title = 'one large upload: ferry send → ferry serve vs plain node:net pipe (SHA-256 both ends) vs nc';

/** Time allowed for one transfer: generous (5 MB/s) but bounded. */
const budget = (bytes) => 30_000 + (bytes / 5e6) * 1000;

/** CPU ms (user + system) a running process used while `work` ran. */
async function cpuDuring(pid, work) {
  const before = cpuTimeOf(pid);
  const result = await work();
  const after = cpuTimeOf(pid);
  if (!before || !after) throw new Error('the receiver exited during the upload');
  return { result, user: after.user - before.user, system: after.system - before.system };
}

export async function run(ctx, { bytes = bySize(ctx, { smoke: 16 * MiB, quick: 64 * MiB, full: GiB }) } = {}) {
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
    const cpu = { ferryServer: [], ferrySender: [], pipeServer: [], pipeSender: [] };
    const kinds = haveNc ? ['pipe', 'ferry', 'nc'] : ['pipe', 'ferry'];
    const usageFile = path.join(dir, 'sender-usage.json');
    const preload = ['--import', pathToFileURL(usagePreload).href];
    const senderCpu = () => {
      const u = JSON.parse(fs.readFileSync(usageFile, 'utf8'));
      return (u.userUs + u.systemUs) / 1000;
    };

    for (let i = 0; i < ctx.runs; i++) {
      // Rotate the order so no contender always runs on a warmer (or dirtier) page cache.
      const order = kinds.map((_, k) => kinds[(k + i) % kinds.length]);
      for (const kind of order) {
        settleDisk();
        fs.rmSync(usageFile, { force: true });
        let ms;
        let cpuNote = '';
        if (kind === 'ferry') {
          const { result: out, user, system } = await cpuDuring(ferry.child.pid, () =>
            timeProcess(process.execPath, [...preload, cli, 'send', '--port', String(ferry.port), '--json', '--state-dir', stateDir, file], {
              timeoutMs: budget(bytes),
              what: 'ferry send',
              env: { FERRY_BENCH_USAGE_FILE: usageFile },
            }),
          );
          const result = JSON.parse(out.stdout.trim().split('\n').pop());
          if (result.sha256 !== sha256) throw new Error(`ferry stored a different file: ${result.sha256} vs ${sha256}`);
          ms = out.ms;
          cpu.ferryServer.push(user + system);
          cpu.ferrySender.push(senderCpu());
          cpuNote = `, CPU serve ${((user + system) / 1000).toFixed(2)} s (user ${(user / 1000).toFixed(2)}), send ${(cpu.ferrySender.at(-1) / 1000).toFixed(2)} s`;
          emptyInbox(inbox);
        } else if (kind === 'pipe') {
          const { result: out, user, system } = await cpuDuring(pipe.child.pid, () =>
            timeProcess(process.execPath, [...preload, pipeScript, 'send', '127.0.0.1', String(pipe.port), file], {
              timeoutMs: budget(bytes),
              what: 'pipe send',
              env: { FERRY_BENCH_USAGE_FILE: usageFile },
            }),
          );
          ms = out.ms;
          cpu.pipeServer.push(user + system);
          cpu.pipeSender.push(senderCpu());
          cpuNote = `, CPU receiver ${((user + system) / 1000).toFixed(2)} s (user ${(user / 1000).toFixed(2)}), sender ${(cpu.pipeSender.at(-1) / 1000).toFixed(2)} s`;
          emptyInbox(pipeIn);
        } else {
          ms = await netcat(file, path.join(ncOut, 'nc.bin'), bytes);
          emptyInbox(ncOut);
        }
        times[kind].push(ms);
        ctx.log(`run ${i + 1}: ${kind.padEnd(5)} ${(ms / 1000).toFixed(2)} s  ${(mb(bytes) / (ms / 1000)).toFixed(0)} MB/s${cpuNote}`);
      }
    }
    await kill(ferry.child);
    await kill(pipe.child);

    const rate = (xs) => xs.map((ms) => mb(bytes) / (ms / 1000));
    const sec = (xs) => xs.map((ms) => ms / 1000);
    const both = (a, b) => a.map((x, i) => x + b[i]);
    const ferryCpu = both(cpu.ferryServer, cpu.ferrySender);
    const pipeCpu = both(cpu.pipeServer, cpu.pipeSender);
    const metrics = {
      ferry: metric('ferry send → serve', 's', sec(times.ferry)),
      pipe: metric('node:net pipe + SHA-256', 's', sec(times.pipe)),
      ferryRate: metric('ferry throughput', 'MB/s', rate(times.ferry)),
      pipeRate: metric('pipe throughput', 'MB/s', rate(times.pipe)),
      ferryCpu: metric('ferry CPU, both ends', 's', sec(ferryCpu)),
      pipeCpu: metric('pipe CPU, both ends', 's', sec(pipeCpu)),
      ferryServerCpu: metric('ferry serve CPU', 's', sec(cpu.ferryServer)),
      pipeServerCpu: metric('pipe receiver CPU', 's', sec(cpu.pipeServer)),
      ferrySenderCpu: metric('ferry send CPU', 's', sec(cpu.ferrySender)),
      pipeSenderCpu: metric('pipe sender CPU', 's', sec(cpu.pipeSender)),
      nc: haveNc ? metric('nc (no hashing)', 's', sec(times.nc), { rate: metric('nc throughput', 'MB/s', rate(times.nc)) }) : { label: 'nc (no hashing)', status: 'not installed' },
    };
    const ratios = {
      'ferry/pipe': ratioOf(times.ferry, times.pipe),
      'cpu ferry/pipe': ratioOf(ferryCpu, pipeCpu),
      'server cpu ferry/pipe': ratioOf(cpu.ferryServer, cpu.pipeServer),
      'sender cpu ferry/pipe': ratioOf(cpu.ferrySender, cpu.pipeSender),
      'rate ferry/pipe': ratioOf(rate(times.ferry), rate(times.pipe)),
      ...(haveNc ? { 'ferry/nc': ratioOf(times.ferry, times.nc), 'pipe/nc': ratioOf(times.pipe, times.nc) } : {}),
    };
    return {
      params: { bytes, runs: ctx.runs, file: 'AES-CTR keystream', receiverWritesTo: ctx.tempRoot, cpu: 'user + system, receiver from /proc/<pid>/stat, sender from its own process.cpuUsage()' },
      metrics,
      ratios,
      targets: [target('ferry time ≤ 1.15 × pipe time', ratios['ferry/pipe'].value, '<=', 1.15), target('ferry CPU (both ends) ≤ 1.3 × pipe CPU', ratios['cpu ferry/pipe'].value, '<=', 1.3)],
      table: [
        row('wall time, sender spawn → exit', 'ferry', { baseline: 'pipe', ratio: 'ferry/pipe', target: 0 }),
        row('throughput', 'ferryRate', { baseline: 'pipeRate', ratio: 'rate ferry/pipe' }),
        row('CPU user+sys, both ends', 'ferryCpu', { baseline: 'pipeCpu', ratio: 'cpu ferry/pipe', target: 1 }),
        row('  receiver (serve)', 'ferryServerCpu', { baseline: 'pipeServerCpu', ratio: 'server cpu ferry/pipe' }),
        row('  sender (send)', 'ferrySenderCpu', { baseline: 'pipeSenderCpu', ratio: 'sender cpu ferry/pipe' }),
        row('netcat, no hashing', 'nc', haveNc ? { ratio: 'ferry/nc' } : {}),
      ],
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
