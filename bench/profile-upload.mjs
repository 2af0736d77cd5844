// CPU profile of an upload: `ferry serve` and `ferry send` both run with --cpu-prof, COUNT files of
// SIZE are uploaded with one `ferry send`, and the top self-time functions of each are printed (and
// time by file, to see where it goes: ferry's code, its dependencies, node internals, GC).
// With --baseline, the pipe baseline's receiver and sender (bench/pipe-baseline.mjs) are profiled
// the same way over the same files, for comparison.
// Usage: node bench/profile-upload.mjs [--size 1024M] [--count 1] [--top 25] [--keep DIR] [--baseline]
//        node bench/profile-upload.mjs --size 64K --count 1000     (the small-files case)
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { KiB, MiB, cleanupAll, cli, generateFile, kill, makeTempDir, pipeScript, settleDisk, startFerryServe, startPipeReceiver, timeProcess, withTimeout } from './lib/common.mjs';
import { onlyProfile, printProfile, selfTimes } from './lib/profile.mjs';

const { values } = parseArgs({
  options: { size: { type: 'string', default: '1024M' }, count: { type: 'string', default: '1' }, top: { type: 'string', default: '25' }, keep: { type: 'string' }, baseline: { type: 'boolean', default: false } },
});
const unit = { K: KiB, M: MiB, G: 1024 * MiB }[values.size.slice(-1).toUpperCase()] ?? 1;
const size = Math.round(parseFloat(values.size) * unit);
const count = Number(values.count);
const top = Number(values.top);

const dir = makeTempDir('profile');
try {
  const file = path.join(dir, 'payload.bin');
  const inbox = path.join(dir, 'in');
  const serverProf = path.join(dir, 'server-prof');
  const clientProf = path.join(dir, 'client-prof');
  for (const d of [inbox, serverProf, clientProf]) fs.mkdirSync(d);
  console.error(`generating ${count} × ${size} bytes`);
  const files = [];
  for (let i = 0; i < count; i++) {
    const f = count === 1 ? file : path.join(dir, `f${String(i).padStart(5, '0')}.bin`);
    generateFile(f, size, 9 + i);
    files.push(f);
  }
  const server = await startFerryServe({ uploadDir: inbox, nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${serverProf}`] });
  const { ms } = await timeProcess(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${clientProf}`, cli, 'send', '--port', String(server.port), '--json', '--state-dir', path.join(dir, 'state'), ...files], {
    timeoutMs: 60_000 + count * 200 + (count * size) / 5e3,
    what: 'ferry send',
  });
  console.log(`upload of ${count} × ${size} bytes took ${(ms / 1000).toFixed(2)} s (${((count * size) / 1e6 / (ms / 1000)).toFixed(0)} MB/s)`);
  // SIGINT lets the server exit by itself, which is when node writes the profile.
  server.child.kill('SIGINT');
  await withTimeout(server.child.exited, 30_000, 'ferry serve exit').catch(() => kill(server.child));
  // --keep: the profiles themselves, for Chrome's DevTools or speedscope.
  if (values.keep) {
    fs.mkdirSync(values.keep, { recursive: true });
    fs.copyFileSync(onlyProfile(serverProf), path.join(values.keep, 'serve-upload.cpuprofile'));
    fs.copyFileSync(onlyProfile(clientProf), path.join(values.keep, 'send-upload.cpuprofile'));
  }
  printProfile('ferry serve', selfTimes(onlyProfile(serverProf)), top);
  printProfile('ferry send', selfTimes(onlyProfile(clientProf)), top);

  if (values.baseline) {
    const pipeIn = path.join(dir, 'pipe-in');
    const receiverProf = path.join(dir, 'receiver-prof');
    const senderProf = path.join(dir, 'sender-prof');
    for (const d of [pipeIn, receiverProf, senderProf]) fs.mkdirSync(d);
    settleDisk();
    const receiver = await startPipeReceiver(pipeIn, { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${receiverProf}`] });
    const sender = files.length === 1 ? ['send', '127.0.0.1', String(receiver.port), files[0]] : ['send-each', '127.0.0.1', String(receiver.port), ...files];
    const pipe = await timeProcess(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${senderProf}`, pipeScript, ...sender], {
      timeoutMs: 60_000 + count * 200 + (count * size) / 5e3,
      what: 'pipe send',
    });
    console.log(`\nthe pipe took ${(pipe.ms / 1000).toFixed(2)} s (${((count * size) / 1e6 / (pipe.ms / 1000)).toFixed(0)} MB/s)`);
    // On SIGINT the receiver exits by itself, which is when node writes the profile.
    receiver.child.kill('SIGINT');
    await withTimeout(receiver.child.exited, 30_000, 'pipe receiver exit').catch(() => kill(receiver.child));
    if (values.keep) {
      fs.copyFileSync(onlyProfile(receiverProf), path.join(values.keep, 'pipe-receiver.cpuprofile'));
      fs.copyFileSync(onlyProfile(senderProf), path.join(values.keep, 'pipe-sender.cpuprofile'));
    }
    printProfile('pipe receiver', selfTimes(onlyProfile(receiverProf)), top);
    printProfile('pipe sender', selfTimes(onlyProfile(senderProf)), top);
  }
} finally {
  await cleanupAll();
}
