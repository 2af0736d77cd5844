// Holds COUNT idle native connections to 127.0.0.1:PORT: each writes preamble() + hello and waits for
// the welcome, then stays connected doing nothing but answering the server's PINGs with PONGs (as any
// idle client does). Usage: idle-clients.mjs PORT COUNT [CONCURRENT_HANDSHAKES]
// Prints {"ready","failed","errors"} once every connection is welcomed or failed; then, for each
// "status" line on stdin, {"open"}: how many welcomed connections are still open.
import net from 'node:net';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';
import { nativeCodecModule } from './common-paths.mjs';
import { serverFrames } from './frame-reader.mjs';

const { preamble, encode } = await import(pathToFileURL(nativeCodecModule).href);
const [port, count, concurrency = '256'] = process.argv.slice(2).map(Number);
const hello = Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'bench' })]);
const WELCOME = 0x02;
const PING = 0x05;
const PONG = 0x06;

let ready = 0;
let failed = 0;
let open = 0;
let started = 0;
const errors = {};
const sockets = [];

function connectOne() {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    sockets.push(socket);
    let welcomed = false;
    const timer = setTimeout(() => {
      socket.code = 'no welcome within 20 s';
      socket.destroy();
    }, 20_000);
    const settle = (ok, code) => {
      clearTimeout(timer);
      if (ok) {
        welcomed = true;
        ready++;
        open++;
      } else {
        failed++;
        errors[code] = (errors[code] ?? 0) + 1;
      }
      resolve();
    };
    socket.once('connect', () => socket.write(hello));
    socket.on(
      'data',
      serverFrames((type, payload) => {
        if (type === WELCOME && !welcomed) settle(true);
        else if (type === PING) socket.write(encode.pong(Buffer.from(payload)));
        else if (type !== PONG && !welcomed) {
          socket.destroy();
          return false;
        }
        return true;
      }),
    );
    socket.on('error', (err) => {
      if (!welcomed) socket.code = err.code;
    });
    socket.on('close', () => {
      if (welcomed) open--;
      else settle(false, socket.code ?? 'closed before welcome');
    });
  });
}

// A fixed number of handshakes in flight, so neither side's accept queue overflows.
const workers = Array.from({ length: Math.min(concurrency, count) }, async () => {
  while (started < count) {
    started++;
    await connectOne();
  }
});
await Promise.all(workers);
console.log(JSON.stringify({ ready, failed, errors }));

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'status') console.log(JSON.stringify({ open }));
});
process.stdin.on('end', () => {
  for (const s of sockets) s.destroy();
  process.exit(0);
});
