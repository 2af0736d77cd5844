// Times one large upload with `ferry send` → `ferry serve` against the plain pipe baseline, both as
// separate processes over loopback, alternating runs. Usage: node bench/upload-vs-pipe.mjs [MiB] [runs]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

const here = path.dirname(new URL(import.meta.url).pathname);
const cli = path.join(here, '..', 'dist', 'apps', 'cli.js');
const mib = Number(process.argv[2] ?? 1024);
const runs = Number(process.argv[3] ?? 3);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-'));
const file = path.join(work, 'payload.bin');

function makeFile() {
  const chunk = Buffer.alloc(1024 * 1024);
  const fd = fs.openSync(file, 'w');
  let seed = 12345;
  for (let i = 0; i < mib; i++) {
    for (let j = 0; j < chunk.length; j += 4) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      chunk.writeUInt32LE(seed, j);
    }
    fs.writeSync(fd, chunk);
  }
  fs.closeSync(fd);
}

function startServer(args, match) {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve) => {
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const port = match(line);
      if (port) resolve({ child, port });
    });
  });
}

function timeProcess(args) {
  const started = performance.now();
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  return new Promise((resolve, reject) =>
    child.on('exit', (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`exit ${code}`)))),
  );
}

function clean(dir) {
  for (const name of fs.readdirSync(dir)) if (name !== '.ferry') fs.rmSync(path.join(dir, name), { force: true });
}

makeFile();
const inbox = path.join(work, 'in');
fs.mkdirSync(inbox);
const pipe = await startServer([path.join(here, 'pipe-baseline.mjs'), 'receive', inbox], (l) => JSON.parse(l).port);
const ferry = await startServer([cli, 'serve', '--port', '0', '--upload-dir', inbox, '--log-level', 'info'], (l) => {
  const o = JSON.parse(l);
  return o.event === 'listening' ? o.port : undefined;
});
const times = { pipe: [], ferry: [] };
for (let i = 0; i < runs; i++) {
  times.pipe.push(await timeProcess([path.join(here, 'pipe-baseline.mjs'), 'send', '127.0.0.1', String(pipe.port), file]));
  clean(inbox);
  times.ferry.push(await timeProcess([cli, 'send', '--port', String(ferry.port), file]));
  clean(inbox);
}
pipe.child.kill();
ferry.child.kill();
fs.rmSync(work, { recursive: true, force: true });
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p = median(times.pipe);
const f = median(times.ferry);
console.log(JSON.stringify({ mib, runs, pipeMs: times.pipe.map(Math.round), ferryMs: times.ferry.map(Math.round), medianPipeMs: Math.round(p), medianFerryMs: Math.round(f), ratio: +(f / p).toFixed(3) }));
