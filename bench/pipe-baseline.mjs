// The baseline ferry's uploads are measured against: a plain node:net pipe of the same bytes with
// SHA-256 on both ends and the receiver writing each connection's bytes to its own file on disk,
// with backpressure and nothing else (no framing, no names, no verification step beyond the hash
// the receiver sends back). Modes:
//
//   receive DIR                        listen on 127.0.0.1 (free port; prints {"port"}), one file per connection
//   send HOST PORT FILE                one file on one connection
//   send-each HOST PORT FILE...        each file on its own connection, one after another
//   send-concurrent HOST PORT FILE...  every file on its own connection, all at once; prints each
//                                      connection's start and end (ms, performance.timeOrigin based)
//
// A sender exits 1 if the receiver's hash differs from its own.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

const [mode, ...args] = process.argv.slice(2);

function receive(dir) {
  // Exit by itself on SIGINT, so that a --cpu-prof profile is written (bench/profile-upload.mjs).
  process.on('SIGINT', () => process.exit(0));
  let count = 0;
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    const hash = createHash('sha256');
    // The same buffer as ferry's receiver (media/incoming-file.ts WRITE_HIGH_WATER_MARK).
    const out = fs.createWriteStream(path.join(dir, `pipe-${process.pid}-${++count}.bin`), { highWaterMark: 4 * 1024 * 1024 });
    socket.on('data', (chunk) => {
      hash.update(chunk);
      if (!out.write(chunk)) {
        socket.pause();
        out.once('drain', () => socket.resume());
      }
    });
    socket.on('end', () => out.end(() => socket.end(hash.digest('hex'))));
    socket.on('error', () => out.destroy());
  });
  server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
}

/** Sends one file on its own connection; resolves with its start and end times once the receiver's hash matched. */
async function sendOne(host, port, file) {
  const start = performance.now();
  const hash = createHash('sha256');
  const socket = net.connect({ host, port: Number(port), allowHalfOpen: true, noDelay: true });
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let reply = '';
  socket.setEncoding('utf8');
  socket.on('data', (d) => (reply += d));
  const replied = new Promise((resolve, reject) => {
    socket.once('end', resolve);
    socket.once('error', reject);
  });
  const input = fs.createReadStream(file, { highWaterMark: 256 * 1024 });
  input.on('data', (chunk) => {
    hash.update(chunk);
    if (!socket.write(chunk)) {
      input.pause();
      socket.once('drain', () => input.resume());
    }
  });
  await new Promise((resolve, reject) => {
    input.once('end', resolve);
    input.once('error', reject);
  });
  socket.end();
  await replied;
  socket.destroy();
  const local = hash.digest('hex');
  if (reply !== local) throw new Error(`hash mismatch for ${file}: ${reply} vs ${local}`);
  return { file, start: performance.timeOrigin + start, end: performance.timeOrigin + performance.now() };
}

try {
  if (mode === 'receive') {
    receive(args[0]);
  } else if (mode === 'send') {
    const [host, port, file] = args;
    await sendOne(host, port, file);
  } else if (mode === 'send-each') {
    const [host, port, ...files] = args;
    for (const file of files) await sendOne(host, port, file);
  } else if (mode === 'send-concurrent') {
    const [host, port, ...files] = args;
    const results = await Promise.all(files.map((file) => sendOne(host, port, file)));
    console.log(JSON.stringify({ results }));
  } else {
    console.error('usage: pipe-baseline.mjs receive DIR | send HOST PORT FILE | send-each HOST PORT FILE... | send-concurrent HOST PORT FILE...');
    process.exit(2);
  }
} catch (error) {
  console.error(error.message);
  process.exit(1);
}
