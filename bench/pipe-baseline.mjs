// The baseline ferry's upload is measured against: a plain node:net pipe of the same file with
// SHA-256 on both ends and the receiver writing to disk, with backpressure and nothing else.
// Run as `receive DIR` or `send HOST PORT FILE`.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

const [mode, ...args] = process.argv.slice(2);

if (mode === 'receive') {
  const dir = args[0];
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    const hash = createHash('sha256');
    const out = fs.createWriteStream(path.join(dir, `pipe-${Date.now()}.bin`), { highWaterMark: 1024 * 1024 });
    socket.on('data', (chunk) => {
      hash.update(chunk);
      if (!out.write(chunk)) {
        socket.pause();
        out.once('drain', () => socket.resume());
      }
    });
    socket.on('end', () => out.end(() => socket.end(hash.digest('hex'))));
  });
  server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
} else if (mode === 'send') {
  const [host, port, file] = args;
  const hash = createHash('sha256');
  const socket = net.connect({ host, port: Number(port), allowHalfOpen: true, noDelay: true });
  await new Promise((resolve) => socket.once('connect', resolve));
  let reply = '';
  socket.on('data', (d) => (reply += d));
  const replied = new Promise((resolve) => socket.once('end', resolve));
  const input = fs.createReadStream(file, { highWaterMark: 256 * 1024 });
  input.on('data', (chunk) => {
    hash.update(chunk);
    if (!socket.write(chunk)) {
      input.pause();
      socket.once('drain', () => input.resume());
    }
  });
  await new Promise((resolve) => input.on('end', resolve));
  socket.end();
  await replied;
  const local = hash.digest('hex');
  if (reply !== local) {
    console.error(`hash mismatch: ${reply} vs ${local}`);
    process.exit(1);
  }
}
