// Messages through the library: a createServer() child (library defaults: silent logger, heartbeats
// on) and createClient() in the bench process, against a raw length-prefixed echo over node:net
// (server child, client here). Latency: one message at a time. Throughput: 64 in flight.
import net from 'node:net';
import { pathToFileURL } from 'node:url';
import { bySize, kill, libraryEntry, makeTempDir, metric, percentile, ratioOf, removeTempDir, row, serversScript, settleDisk, spawnTracked, target, waitForLine, withTimeout } from '../lib/common.mjs';

export const name = 'messages';
export const title = 'messages through the library (round-trip latency, throughput with 64 in flight) vs a raw length-prefixed echo';

const TEXT = 'x'.repeat(32);

/** A server child of lib/servers.mjs (`args`: its mode and arguments); `nodeArgs` go to node (e.g. --cpu-prof). */
export async function startServer(args, { nodeArgs = [] } = {}) {
  const child = spawnTracked(process.execPath, [...nodeArgs, serversScript, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const { port } = await waitForLine(child, (l) => JSON.parse(l), 15_000, `${args[0]} server`);
  return { child, port };
}

/** A raw echo client: send() resolves when the frame comes back (frames return in order). */
export async function rawClient(port) {
  const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const waiting = [];
  let pending = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    let offset = 0;
    while (pending.length - offset >= 4) {
      const length = pending.readUInt32BE(offset);
      if (pending.length - offset < 4 + length) break;
      const text = pending.toString('utf8', offset + 4, offset + 4 + length);
      offset += 4 + length;
      waiting.shift()(text);
    }
    pending = pending.subarray(offset);
  });
  return {
    message(text) {
      const body = Buffer.from(text, 'utf8');
      const frame = Buffer.allocUnsafe(4 + body.length);
      frame.writeUInt32BE(body.length, 0);
      body.copy(frame, 4);
      return new Promise((resolve) => {
        waiting.push(resolve);
        socket.write(frame);
      });
    },
    async close() {
      socket.destroy();
    },
  };
}

export async function ferryClient(port) {
  const { createClient } = await import(pathToFileURL(libraryEntry).href);
  const client = createClient({ port, retryForMs: 10_000 });
  await client.connect();
  return client;
}

export async function latency(client, count, warmup) {
  for (let i = 0; i < warmup; i++) await client.message(TEXT);
  const samples = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const t = performance.now();
    const reply = await client.message(TEXT);
    samples[i] = performance.now() - t;
    if (reply !== TEXT) throw new Error(`echo came back as ${JSON.stringify(reply).slice(0, 80)}`);
  }
  const sorted = [...samples].sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
}

/** Messages per second with `window` in flight, for `count` messages or `maxMs`, whichever first. */
export async function throughput(client, count, window, maxMs) {
  let sent = 0;
  let done = 0;
  const started = performance.now();
  const deadline = started + maxMs;
  const worker = async () => {
    while (sent < count && performance.now() < deadline) {
      sent++;
      await client.message(TEXT);
      done++;
    }
  };
  await Promise.all(Array.from({ length: window }, worker));
  return done / ((performance.now() - started) / 1000);
}

export async function run(
  ctx,
  {
    count = bySize(ctx, { smoke: 200, quick: 500, full: 2000 }),
    warmup = bySize(ctx, { smoke: 50, quick: 100, full: 300 }),
    burst = bySize(ctx, { smoke: 2000, quick: 5000, full: 30_000 }),
    window = 64,
  } = {},
) {
  const dir = makeTempDir(name);
  const servers = {};
  try {
    servers.ferry = await startServer(['ferry', dir]);
    servers.raw = await startServer(['raw-echo']);
    const s = { ferryP50: [], ferryP99: [], rawP50: [], rawP99: [], ferryRate: [], rawRate: [] };
    for (let i = 0; i < ctx.runs; i++) {
      const order = i % 2 === 0 ? ['raw', 'ferry'] : ['ferry', 'raw'];
      for (const kind of order) {
        // ferry's journal writes to disk: write-back left by an earlier figure's files must not throttle it.
        settleDisk();
        const client = kind === 'ferry' ? await ferryClient(servers.ferry.port) : await rawClient(servers.raw.port);
        try {
          const lat = await withTimeout(latency(client, count, warmup), 120_000, `${kind} latency`);
          const rate = await withTimeout(throughput(client, burst, window, 30_000), 60_000, `${kind} throughput`);
          s[`${kind}P50`].push(lat.p50 * 1000);
          s[`${kind}P99`].push(lat.p99 * 1000);
          s[`${kind}Rate`].push(rate);
          ctx.log(`run ${i + 1}: ${kind.padEnd(5)} p50 ${(lat.p50 * 1000).toFixed(0)} µs  p99 ${(lat.p99 * 1000).toFixed(0)} µs  ${rate.toFixed(0)} msg/s with ${window} in flight`);
        } finally {
          await client.close();
        }
      }
    }
    const ratios = {
      'p50 ferry/raw': ratioOf(s.ferryP50, s.rawP50),
      'p99 ferry/raw': ratioOf(s.ferryP99, s.rawP99),
      'throughput ferry/raw': ratioOf(s.ferryRate, s.rawRate),
    };
    return {
      params: { messageBytes: TEXT.length, latencyMessages: count, warmup, throughputMessages: burst, inFlight: window, runs: ctx.runs },
      metrics: {
        ferryP50: metric('ferry round trip p50', 'µs', s.ferryP50),
        rawP50: metric('raw echo round trip p50', 'µs', s.rawP50),
        ferryP99: metric('ferry round trip p99', 'µs', s.ferryP99),
        rawP99: metric('raw echo round trip p99', 'µs', s.rawP99),
        ferryRate: metric(`ferry throughput (${window} in flight)`, 'msg/s', s.ferryRate),
        rawRate: metric(`raw echo throughput (${window} in flight)`, 'msg/s', s.rawRate),
      },
      ratios,
      targets: [target('p50 ≤ 1.3 × raw p50', ratios['p50 ferry/raw'].value, '<=', 1.3), target(`throughput (${window} in flight) ≥ 0.8 × raw`, ratios['throughput ferry/raw'].value, '>=', 0.8)],
      table: [
        row('round trip p50, one at a time', 'ferryP50', { baseline: 'rawP50', ratio: 'p50 ferry/raw', target: 0 }),
        row('round trip p99, one at a time', 'ferryP99', { baseline: 'rawP99', ratio: 'p99 ferry/raw' }),
        row(`throughput, ${window} in flight`, 'ferryRate', { baseline: 'rawRate', ratio: 'throughput ferry/raw', target: 1 }),
      ],
    };
  } finally {
    await kill(servers.ferry?.child);
    await kill(servers.raw?.child);
    removeTempDir(dir);
  }
}
