// CPU profile of the server while it handles messages: the library's createServer() in a child
// (lib/servers.mjs ferry), profiled through node:inspector over exactly the stretch a message
// workload of the bench runs (not its start-up, connecting or shutdown), then the top self-time
// functions (and files) are printed.
//
//   node bench/profile-messages.mjs [--workload messages|many-clients] [--top 25] [--keep DIR]
//
// messages (default): the messages figure's workload: one library client in this process, 2,000
// round trips one at a time (after 300 of warm-up), then 30,000 messages with 64 in flight.
// many-clients: the many-clients figure's: 1,000 native clients in 2 processes, one message in
// flight each, 1 s of warm-up and 5 s measured (profiled: from "go" until all have reported).
// --keep copies the .cpuprofile into DIR (for Chrome's DevTools or speedscope).
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { cleanupAll, kill, makeTempDir, waitForLine } from './lib/common.mjs';
import { printProfile, selfTimes } from './lib/profile.mjs';
import { ferryClient, latency, startServer, throughput } from './figures/messages.mjs';
import { measure, optionsFor } from './figures/many-clients.mjs';

const { values } = parseArgs({
  options: { workload: { type: 'string', default: 'messages' }, top: { type: 'string', default: '25' }, keep: { type: 'string' } },
});
if (!['messages', 'many-clients'].includes(values.workload)) {
  console.error('--workload must be messages or many-clients');
  process.exit(2);
}
const top = Number(values.top);

/** Asks a lib/servers.mjs child to start (or stop, writing `file`) its CPU profiler, and waits until it has. */
function profiler(child, command, file) {
  const done = waitForLine(child, (l) => (command === 'start' ? JSON.parse(l).profiling : JSON.parse(l).profiled), 30_000, `profile ${command}`);
  child.stdin.write(command === 'start' ? 'profile-start\n' : `profile-stop ${file}\n`);
  return done;
}

const dir = makeTempDir('profile-messages');
try {
  const inbox = path.join(dir, 'in');
  fs.mkdirSync(inbox);
  const file = path.join(dir, `server-${values.workload}.cpuprofile`);
  if (values.workload === 'messages') {
    const server = await startServer(['ferry', inbox]);
    const client = await ferryClient(server.port);
    await profiler(server.child, 'start');
    const lat = await latency(client, 2000, 300);
    const rate = await throughput(client, 30_000, 64, 30_000);
    await profiler(server.child, 'stop', file);
    console.log(`round trip p50 ${(lat.p50 * 1000).toFixed(0)} µs, p99 ${(lat.p99 * 1000).toFixed(0)} µs; ${rate.toFixed(0)} msg/s with 64 in flight`);
    await client.close();
    await kill(server.child);
  } else {
    await measure('ferry', optionsFor({ runs: 1 }), dir, (m) => console.log(m), {
      beforeGo: (child) => profiler(child, 'start'),
      afterRun: (child) => profiler(child, 'stop', file),
    });
  }
  if (values.keep) {
    fs.mkdirSync(values.keep, { recursive: true });
    fs.copyFileSync(file, path.join(values.keep, path.basename(file)));
  }
  printProfile(`server (createServer) during the ${values.workload} workload`, selfTimes(file), top);
} finally {
  await cleanupAll();
}
