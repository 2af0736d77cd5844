// COUNT native clients to 127.0.0.1:PORT that send messages as fast as their answers come back, one
// in flight each. Usage: load-clients.mjs PORT COUNT TEXT_BYTES
//
// Each client writes preamble() + a hello with its own clientId (as the library client does, so the
// server journals its messages) and waits for the welcome; then {"ready"} is printed. On a line
// "go WARMUP_MS MEASURE_MS" on stdin every client starts: MESSAGE (id 1, 2, …) → wait for its
// MESSAGE_ACK (checked: same id, same text) → next. Acks that arrive within the measured window
// (after the warm-up) count for throughput, and the round trips of the messages sent and answered
// within it for latency; then the clients stop and one line reports {"acked", "measureMs",
// "messages" (round trips timed), "histogram": [[bucket, count], …], "errors"}; round-trip times are
// bucketed logarithmically, bucket b holding times in [1.01^b, 1.01^(b+1)) µs, so percentiles
// merged over processes are within 1 %. The server's pings are answered throughout.
import crypto from 'node:crypto';
import net from 'node:net';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';
import { nativeCodecModule } from './common-paths.mjs';
import { serverFrames } from './frame-reader.mjs';

const { preamble, encode } = await import(pathToFileURL(nativeCodecModule).href);
const [port, count, textBytes = 32] = process.argv.slice(2).map(Number);
const TEXT = 'x'.repeat(textBytes);
const WELCOME = 0x02;
const ERROR = 0x04;
const PING = 0x05;
const MESSAGE_ACK = 0x11;
const LOG_BASE = Math.log(1.01);

const histogram = new Map();
const errors = {};
let measured = 0;
let acked = 0;
let phase = 'connecting'; // → 'warmup' → 'measure' → 'done'
const clients = [];
const fail = (code) => (errors[code] = (errors[code] ?? 0) + 1);

function record(us) {
  const bucket = us < 1 ? 0 : Math.floor(Math.log(us) / LOG_BASE);
  histogram.set(bucket, (histogram.get(bucket) ?? 0) + 1);
  measured++;
}

function connectOne() {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
    const client = { socket, id: 0, sentAt: 0, sentInMeasure: false, welcomed: false, send: undefined };
    client.send = () => {
      client.id++;
      client.sentInMeasure = phase === 'measure';
      client.sentAt = performance.now();
      socket.write(encode.message(client.id, TEXT));
    };
    const timer = setTimeout(() => socket.destroy(new Error('no welcome within 30 s')), 30_000);
    socket.once('connect', () => socket.write(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'bench-load', clientId: crypto.randomUUID() })])));
    socket.on(
      'data',
      serverFrames((type, payload) => {
        if (type === WELCOME && !client.welcomed) {
          clearTimeout(timer);
          client.welcomed = true;
          clients.push(client);
          resolve();
        } else if (type === PING) socket.write(encode.pong(Buffer.from(payload)));
        else if (type === MESSAGE_ACK) {
          const now = performance.now();
          if (payload.readUInt32BE(0) !== client.id || payload.toString('utf8', 4) !== TEXT) fail('wrong ack');
          else if (phase === 'measure') {
            acked++;
            if (client.sentInMeasure) record((now - client.sentAt) * 1000);
          }
          if (phase === 'warmup' || phase === 'measure') client.send();
        } else if (type === ERROR) fail(`server error: ${payload.toString('utf8').slice(0, 120)}`);
      }),
    );
    socket.on('error', (err) => fail(err.code ?? err.message));
    socket.on('close', () => {
      clearTimeout(timer);
      if (!client.welcomed) {
        fail('closed before welcome');
        resolve();
      } else if (phase !== 'done') fail('closed during the run');
    });
  });
}

// A bounded number of handshakes in flight, so neither side's accept queue overflows.
let started = 0;
await Promise.all(
  Array.from({ length: Math.min(64, count) }, async () => {
    while (started < count) {
      started++;
      await connectOne();
    }
  }),
);
console.log(JSON.stringify({ ready: clients.length, errors }));

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const [word, warmupMs, measureMs] = line.trim().split(/\s+/);
  if (word !== 'go' || phase !== 'connecting') return;
  phase = 'warmup';
  for (const c of clients) c.send();
  setTimeout(() => {
    phase = 'measure';
    const t = performance.now();
    setTimeout(() => {
      phase = 'done';
      const elapsed = performance.now() - t;
      console.log(JSON.stringify({ acked, messages: measured, measureMs: elapsed, histogram: [...histogram], errors }));
      for (const c of clients) c.socket.destroy();
      process.exit(0);
    }, Number(measureMs));
  }, Number(warmupMs));
});
process.stdin.on('end', () => process.exit(0));
