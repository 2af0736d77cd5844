// CPU profile of an upload: `ferry serve` and `ferry send` both run with --cpu-prof, COUNT files of
// SIZE are uploaded with one `ferry send`, and the top self-time functions of each are printed (and
// time by file, to see where it goes: ferry's code, its dependencies, node internals, GC).
// Usage: node bench/profile-upload.mjs [--size 1024M] [--count 1] [--top 25]
//        node bench/profile-upload.mjs --size 64K --count 1000     (the small-files case)
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { KiB, MiB, cleanupAll, cli, generateFile, kill, makeTempDir, rootDir, startFerryServe, timeProcess, withTimeout } from './lib/common.mjs';

const { values } = parseArgs({ options: { size: { type: 'string', default: '1024M' }, count: { type: 'string', default: '1' }, top: { type: 'string', default: '25' } } });
const unit = { K: KiB, M: MiB, G: 1024 * MiB }[values.size.slice(-1).toUpperCase()] ?? 1;
const size = Math.round(parseFloat(values.size) * unit);
const count = Number(values.count);
const top = Number(values.top);

/** Self time per function (ms) from a .cpuprofile: each sample's time delta goes to the node it hit. */
function selfTimes(file) {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000));
  const byFunction = new Map();
  const byFile = new Map();
  let total = 0;
  for (const [id, ms] of self) {
    const { functionName, url, lineNumber } = byId.get(id).callFrame;
    const where = url ? `${shorten(url)}:${lineNumber + 1}` : '';
    const key = `${functionName || '(anonymous)'} ${where}`.trim();
    byFunction.set(key, (byFunction.get(key) ?? 0) + ms);
    const group = url ? shorten(url).replace(/:\d+$/, '') : functionName; // (garbage collector), (program), (idle)
    byFile.set(group, (byFile.get(group) ?? 0) + ms);
    total += ms;
  }
  return { byFunction, byFile, total };
}

function shorten(url) {
  return url.replace(`file://${rootDir}/`, '').replace(/^.*node_modules\//, 'node_modules/');
}

function print(title, { byFunction, byFile, total }) {
  const busy = total - (byFunction.get('(idle)') ?? 0);
  console.log(`\n${title}: ${(total / 1000).toFixed(1)} s profiled, ${(busy / 1000).toFixed(1)} s not idle; % of all profiled time`);
  console.log('  self ms  % time  function');
  for (const [key, ms] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`  ${ms.toFixed(0).padStart(7)}  ${((100 * ms) / total).toFixed(1).padStart(6)}  ${key}`);
  }
  console.log('  by file:');
  for (const [key, ms] of [...byFile].sort((a, b) => b[1] - a[1]).slice(0, 12)) {
    console.log(`  ${ms.toFixed(0).padStart(7)}  ${((100 * ms) / total).toFixed(1).padStart(6)}  ${key}`);
  }
}

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
  const only = (d) => path.join(d, fs.readdirSync(d).find((n) => n.endsWith('.cpuprofile')));
  print('ferry serve', selfTimes(only(serverProf)));
  print('ferry send', selfTimes(only(clientProf)));
} finally {
  await cleanupAll();
}
