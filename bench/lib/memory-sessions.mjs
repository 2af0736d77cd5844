// Idle sessions inside one process, over the in-memory transport (no sockets, so no open-file
// limit): the server end of each memoryPair() is handed to the server machine of createServer()
// exactly as its listener hands over an accepted socket (a `connection` event carrying the
// Transport); the client end writes preamble() + hello, waits for the welcome, then only answers
// the server's pings. The baseline ("bare") holds the same pairs with a server end that answers the
// hello with a welcome and nothing else: the cost of the transport pair and the client end.
//
//   node --expose-gc memory-sessions.mjs ferry|bare DIR CHECKPOINTS BUDGET_MS [CONCURRENT] [SETTLE_MS]
//
// CHECKPOINTS is a comma-separated list of session counts (e.g. 1000,10000,50000). Sessions are
// opened CONCURRENT handshakes at a time; at each checkpoint opening pauses, garbage is collected,
// and one JSON line reports {checkpoint, opened, openMs, heapUsed, rss, external, arrayBuffers}
// (bytes; openMs counts only the time spent opening). If opening has run for BUDGET_MS in all,
// it stops where it is and reports that count with "budgetExceeded": true. The last line is
// {"done": true, ...}. Every session is still open when it is measured (checked, and reported as
// "open").
import { pathToFileURL } from 'node:url';
import { libraryEntry, memoryTransportModule, nativeCodecModule } from './common-paths.mjs';
import { serverFrames } from './frame-reader.mjs';

const [kind, dir, checkpointList, budgetArg, concurrencyArg = '256', settleArg = '1000'] = process.argv.slice(2);
if (!['ferry', 'bare'].includes(kind) || !dir || !checkpointList || !budgetArg) {
  console.error('usage: memory-sessions.mjs ferry|bare DIR CHECKPOINTS BUDGET_MS [CONCURRENT] [SETTLE_MS]');
  process.exit(2);
}
if (typeof globalThis.gc !== 'function') {
  console.error('memory-sessions.mjs needs node --expose-gc');
  process.exit(2);
}
const checkpoints = checkpointList.split(',').map(Number);
const budgetMs = Number(budgetArg);
const concurrency = Number(concurrencyArg);
const settleMs = Number(settleArg);

const { memoryPair } = await import(pathToFileURL(memoryTransportModule).href);
const { preamble, encode } = await import(pathToFileURL(nativeCodecModule).href);

const WELCOME = 0x02;
const PING = 0x05;
const hello = Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'bench' })]);

let server;
let handOver;
if (kind === 'ferry') {
  const { createServer } = await import(pathToFileURL(libraryEntry).href);
  // Library defaults (silent logger, heartbeats on); its own listener binds a port nobody uses.
  server = createServer({ port: 0, uploadDir: dir });
  await server.listen();
  handOver = (transport) => server.actor.send({ type: 'connection', transport });
} else {
  const welcome = Buffer.concat([preamble(), encode.welcome({ version: 1, agent: 'bare', session: '0', maxMessage: 1 << 20, maxFrame: 1 << 16 })]);
  handOver = (transport) => {
    const answer = () => {
      transport.off('data', answer);
      transport.write(welcome);
    };
    transport.on('data', answer);
    transport.on('error', () => undefined);
  };
}

let open = 0;
let failed = 0;
const clients = [];

/** Opens one session; resolves once the welcome arrived (or the session failed). */
function openOne() {
  return new Promise((resolve) => {
    const [serverEnd, clientEnd] = memoryPair();
    clients.push(clientEnd);
    let welcomed = false;
    const timer = setTimeout(() => clientEnd.destroy(), 30_000);
    clientEnd.on(
      'data',
      serverFrames((type, payload) => {
        if (type === WELCOME && !welcomed) {
          clearTimeout(timer);
          welcomed = true;
          open++;
          resolve();
        } else if (type === PING) clientEnd.write(encode.pong(Buffer.from(payload)));
      }),
    );
    clientEnd.on('error', () => undefined);
    clientEnd.on('close', () => {
      if (welcomed) open--;
      else {
        clearTimeout(timer);
        failed++;
        resolve();
      }
    });
    handOver(serverEnd);
    clientEnd.write(hello);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function sample() {
  globalThis.gc();
  globalThis.gc();
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, rss: m.rss, external: m.external, arrayBuffers: m.arrayBuffers };
}

// Let start-up settle, then the reference point every checkpoint is measured against.
await sleep(settleMs);
const before = sample();
console.log(JSON.stringify({ before }));

let opened = 0;
let openMs = 0;
let stopped = false;
for (const checkpoint of checkpoints) {
  const t = performance.now();
  const deadline = t + (budgetMs - openMs);
  const worker = async () => {
    while (opened < checkpoint && performance.now() < deadline) {
      opened++;
      await openOne();
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, checkpoint - opened) }, worker));
  openMs += performance.now() - t;
  stopped = opened < checkpoint;
  await sleep(settleMs);
  const m = sample();
  console.log(JSON.stringify({ checkpoint, opened, open, failed, openMs, budgetExceeded: stopped, ...m }));
  if (stopped) break;
}
console.log(JSON.stringify({ done: true, opened, open, failed, openMs, budgetExceeded: stopped }));
for (const c of clients) c.destroy();
process.exit(0);
