// The server under many clients at once: 1,000 native clients (lib/load-clients.mjs, spread over a
// few processes), all connected first, then each sending 32-byte messages one at a time as fast as
// their acks come back (1,000 in flight in all). Measured over a fixed window after a warm-up:
// msg/s (acks received by all clients) and round-trip p50/p99 (merged over all clients). ferry is
// the library's createServer() in a child (defaults: silent logger, heartbeats on, journal); the
// baseline is a raw node:net server answering the same native frames with the least work
// (lib/servers.mjs raw-native-echo: no journal, no validation, no state machine), so both serve
// exactly the same clients. A fresh server for every run.
import path from 'node:path';
import fs from 'node:fs';
import {
  bySize,
  kill,
  loadClientsScript,
  makeTempDir,
  metric,
  ratioOf,
  removeTempDir,
  row,
  serversScript,
  settleDisk,
  spawnWithFdLimit,
  waitForLine,
  withTimeout,
} from '../lib/common.mjs';

export const name = 'many-clients';
export const title = '1,000 clients sending messages at once (one in flight each): msg/s and round-trip p99 vs a raw native echo server';

const FD_LIMIT = 65_536;
const TEXT_BYTES = 32;
const LOG_BASE = 1.01;
const fmtN = (n) => n.toLocaleString('en-US');

async function startServer(kind, dir, clients, nodeArgs = []) {
  const args = kind === 'ferry' ? [serversScript, 'ferry', dir, String(clients + 1000)] : [serversScript, 'raw-native-echo'];
  const child = spawnWithFdLimit(FD_LIMIT, process.execPath, [...nodeArgs, ...args]);
  const { port } = await waitForLine(child, (l) => JSON.parse(l), 15_000, `${kind} server`);
  return { child, port };
}

/** Percentile (0–100) of a merged log-bucket histogram, in µs: the bucket's geometric middle. */
function percentileOf(histogram, p) {
  const buckets = [...histogram].sort((a, b) => a[0] - b[0]);
  const total = buckets.reduce((a, [, n]) => a + n, 0);
  const rank = Math.max(1, Math.ceil((p / 100) * total));
  let seen = 0;
  for (const [bucket, n] of buckets) {
    seen += n;
    if (seen >= rank) return LOG_BASE ** (bucket + 0.5);
  }
  return undefined;
}

/**
 * One batch against a fresh server of `kind` ('ferry' or 'raw'). `server.nodeArgs` go to the
 * server's node; `server.beforeGo(child)` runs once every client is connected and
 * `server.afterRun(child)` once all have reported (e.g. to profile just that stretch).
 */
export async function measure(kind, { clients, processes, warmupMs, measureMs }, dir, log, server = {}) {
  const inbox = path.join(dir, `in-${kind}-${Date.now()}`);
  fs.mkdirSync(inbox, { recursive: true });
  const { child: serverChild, port } = await startServer(kind, inbox, clients, server.nodeArgs);
  const children = [];
  try {
    const per = Math.ceil(clients / processes);
    for (let left = clients; left > 0; left -= per) {
      children.push(spawnWithFdLimit(FD_LIMIT, process.execPath, [loadClientsScript, String(port), String(Math.min(per, left)), String(TEXT_BYTES)]));
    }
    const resultsOf = children.map((c) => waitForLine(c, (l) => (JSON.parse(l).acked !== undefined ? JSON.parse(l) : undefined), 120_000 + warmupMs + measureMs, 'load clients'));
    for (const p of resultsOf) p.catch(() => undefined); // awaited below
    const t = performance.now();
    const ready = await Promise.all(children.map((c) => waitForLine(c, (l) => (JSON.parse(l).ready !== undefined ? JSON.parse(l) : undefined), 120_000, 'load clients connecting')));
    const connectMs = performance.now() - t;
    const connected = ready.reduce((a, r) => a + r.ready, 0);
    if (connected !== clients) throw new Error(`${kind}: ${connected} of ${clients} clients connected: ${JSON.stringify(ready.map((r) => r.errors))}`);
    await server.beforeGo?.(serverChild);
    for (const c of children) c.stdin.write(`go ${warmupMs} ${measureMs}\n`);
    const results = await Promise.all(resultsOf);
    await server.afterRun?.(serverChild);
    const errors = {};
    for (const r of results) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    if (Object.keys(errors).length) throw new Error(`${kind}: clients saw errors: ${JSON.stringify(errors)}`);
    const histogram = new Map();
    for (const r of results) for (const [b, n] of r.histogram) histogram.set(b, (histogram.get(b) ?? 0) + n);
    // Each process measured its own window (they start within a few ms of each other): rates add up.
    const rate = results.reduce((a, r) => a + r.acked / (r.measureMs / 1000), 0);
    const timed = results.reduce((a, r) => a + r.messages, 0);
    const m = { rate, p50: percentileOf(histogram, 50), p99: percentileOf(histogram, 99), timed, connectMs };
    log(
      `${kind.padEnd(5)} ${fmtN(clients)} clients (${children.length} processes, connected in ${(connectMs / 1000).toFixed(2)} s): ` +
        `${fmtN(Math.round(rate))} msg/s, p50 ${(m.p50 / 1000).toFixed(2)} ms, p99 ${(m.p99 / 1000).toFixed(2)} ms over ${fmtN(timed)} round trips`,
    );
    return m;
  } finally {
    await Promise.all(children.map((c) => withTimeout(c.exited, 5_000, 'load clients exit').catch(() => kill(c))));
    await kill(serverChild);
  }
}

export const optionsFor = (ctx) => ({
    clients: bySize(ctx, { smoke: 50, quick: 1000, full: 1000 }),
    processes: 2,
    warmupMs: bySize(ctx, { smoke: 200, quick: 1000, full: 1000 }),
    measureMs: bySize(ctx, { smoke: 1000, quick: 3000, full: 5000 }),
});

export async function run(ctx) {
  const opts = optionsFor(ctx);
  const dir = makeTempDir(name);
  try {
    const s = { ferry: [], raw: [] };
    for (let i = 0; i < ctx.runs; i++) {
      const order = i % 2 === 0 ? ['raw', 'ferry'] : ['ferry', 'raw'];
      for (const kind of order) {
        // ferry's journal writes to disk: write-back left by an earlier figure's files must not throttle it.
        settleDisk();
        s[kind].push(await measure(kind, opts, dir, (msg) => ctx.log(`run ${i + 1}: ${msg}`)));
      }
    }
    const pick = (kind, key) => s[kind].map((m) => m[key]);
    const ms = (xs) => xs.map((us) => us / 1000);
    const ratios = {
      'rate ferry/raw': ratioOf(pick('ferry', 'rate'), pick('raw', 'rate')),
      'p50 ferry/raw': ratioOf(pick('ferry', 'p50'), pick('raw', 'p50')),
      'p99 ferry/raw': ratioOf(pick('ferry', 'p99'), pick('raw', 'p99')),
      'connect ferry/raw': ratioOf(pick('ferry', 'connectMs'), pick('raw', 'connectMs')),
    };
    return {
      params: { ...opts, messageBytes: TEXT_BYTES, inFlightPerClient: 1, runs: ctx.runs, histogram: 'log buckets of 1 %' },
      metrics: {
        ferryRate: metric('ferry msg/s', 'msg/s', pick('ferry', 'rate')),
        rawRate: metric('raw native echo msg/s', 'msg/s', pick('raw', 'rate')),
        ferryP50: metric('ferry round trip p50', 'ms', ms(pick('ferry', 'p50'))),
        rawP50: metric('raw native echo round trip p50', 'ms', ms(pick('raw', 'p50'))),
        ferryP99: metric('ferry round trip p99', 'ms', ms(pick('ferry', 'p99'))),
        rawP99: metric('raw native echo round trip p99', 'ms', ms(pick('raw', 'p99'))),
        ferryConnect: metric(`ferry: ${opts.clients} clients connected`, 's', pick('ferry', 'connectMs').map((x) => x / 1000)),
        rawConnect: metric(`raw: ${opts.clients} clients connected`, 's', pick('raw', 'connectMs').map((x) => x / 1000)),
      },
      ratios,
      // No target was set for this figure; it is reported.
      targets: [],
      table: [
        row(`${fmtN(opts.clients)} clients, one in flight each: msg/s`, 'ferryRate', { baseline: 'rawRate', ratio: 'rate ferry/raw' }),
        row('  round trip p50', 'ferryP50', { baseline: 'rawP50', ratio: 'p50 ferry/raw' }),
        row('  round trip p99', 'ferryP99', { baseline: 'rawP99', ratio: 'p99 ferry/raw' }),
        row('  time to connect them all', 'ferryConnect', { baseline: 'rawConnect', ratio: 'connect ferry/raw' }),
      ],
    };
  } finally {
    removeTempDir(dir);
  }
}
