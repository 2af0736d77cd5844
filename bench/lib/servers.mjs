// Servers the bench runs as child processes. Prints {"port"} once listening on 127.0.0.1, then
// serves until killed (or, on SIGINT or SIGTERM, exits by itself, which is when node writes a
// --cpu-prof profile). Lines on stdin profile a stretch of its work through node:inspector:
// "profile-start" starts the CPU profiler (sampling every 200 µs); "profile-stop FILE" stops it,
// writes the .cpuprofile to FILE and prints {"profiled": FILE}.
//
//   ferry DIR [MAX_CONNECTIONS]  the library's createServer (defaults: silent logger, heartbeats on,
//                                at most 1,000 connections unless given), files to DIR
//   raw-echo         a length-prefixed echo: every [u32 BE length][payload] frame is sent back as is
//   raw-native-echo  the least a server speaking ferry's native framing can do for messages: answers
//                    the hello with preamble + welcome, each MESSAGE with a MESSAGE_ACK of the same
//                    payload, each PING with a PONG; no journal, no validation, no state machine
//   raw-idle         holds native connections at the least cost node:net allows: answers the first
//                    bytes (preamble + hello) with preamble + welcome, then ignores the socket
import fs from 'node:fs';
import { Session } from 'node:inspector/promises';
import net from 'node:net';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';
import { libraryEntry, nativeCodecModule } from './common-paths.mjs';

const [mode, dir, maxConnections] = process.argv.slice(2);

for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));

let profiler;
readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const [command, file] = line.trim().split(/\s+/);
  if (command === 'profile-start' && !profiler) {
    profiler = new Session();
    profiler.connect();
    await profiler.post('Profiler.enable');
    await profiler.post('Profiler.setSamplingInterval', { interval: 200 });
    await profiler.post('Profiler.start');
    console.log(JSON.stringify({ profiling: true }));
  } else if (command === 'profile-stop' && profiler && file) {
    const { profile } = await profiler.post('Profiler.stop');
    profiler.disconnect();
    profiler = undefined;
    fs.writeFileSync(file, JSON.stringify(profile));
    console.log(JSON.stringify({ profiled: file }));
  }
});
// Without stdin (ignored, or closed) the server just serves.
process.stdin.on('error', () => undefined);

function ready(port) {
  console.log(JSON.stringify({ port, pid: process.pid }));
}

if (mode === 'ferry') {
  const { createServer } = await import(pathToFileURL(libraryEntry).href);
  const server = createServer({ port: 0, uploadDir: dir, ...(maxConnections ? { maxConnections: Number(maxConnections) } : {}) });
  const { port } = await server.listen();
  ready(port);
} else if (mode === 'raw-echo') {
  const server = net.createServer({ noDelay: true }, (socket) => {
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      let offset = 0;
      while (pending.length - offset >= 4) {
        const length = pending.readUInt32BE(offset);
        if (pending.length - offset < 4 + length) break;
        offset += 4 + length;
      }
      // Whole frames go back in one write; a partial frame waits for the rest.
      if (offset > 0) socket.write(pending.subarray(0, offset));
      pending = pending.subarray(offset);
    });
    socket.on('error', () => undefined);
  });
  server.listen(0, '127.0.0.1', () => ready(server.address().port));
} else if (mode === 'raw-native-echo') {
  const { preamble, encode } = await import(pathToFileURL(nativeCodecModule).href);
  const welcome = Buffer.concat([preamble(), encode.welcome({ version: 1, agent: 'raw-native-echo', session: '0', maxMessage: 1 << 20, maxFrame: 1 << 16 })]);
  const PREAMBLE = 8;
  const HEADER = 5;
  const server = net.createServer({ noDelay: true }, (socket) => {
    let pending = Buffer.alloc(0);
    let skip = PREAMBLE;
    socket.on('data', (chunk) => {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      if (skip > 0) {
        const n = Math.min(skip, pending.length);
        skip -= n;
        pending = pending.subarray(n);
      }
      const out = [];
      let offset = 0;
      while (pending.length - offset >= HEADER) {
        const type = pending[offset];
        const length = pending.readUInt32BE(offset + 1);
        if (pending.length - offset < HEADER + length) break;
        if (type === 0x01) out.push(welcome);
        else if (type === 0x10 || type === 0x05) {
          // MESSAGE → MESSAGE_ACK, PING → PONG: the same frame with the answer's type.
          const reply = Buffer.from(pending.subarray(offset, offset + HEADER + length));
          reply[0] = type === 0x10 ? 0x11 : 0x06;
          out.push(reply);
        } else if (type === 0x03) socket.end();
        offset += HEADER + length;
      }
      // Every answer to one read goes back in one write.
      if (out.length) socket.write(out.length === 1 ? out[0] : Buffer.concat(out));
      pending = pending.subarray(offset);
    });
    socket.on('error', () => undefined);
  });
  server.maxConnections = 1 << 20;
  server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => ready(server.address().port));
} else if (mode === 'raw-idle') {
  const { preamble, encode } = await import(pathToFileURL(nativeCodecModule).href);
  const welcome = Buffer.concat([preamble(), encode.welcome({ version: 1, agent: 'raw-idle', session: '0', maxMessage: 1 << 20, maxFrame: 1 << 16 })]);
  const server = net.createServer((socket) => {
    socket.once('data', () => socket.write(welcome));
    socket.on('error', () => undefined);
  });
  server.maxConnections = 1 << 20;
  server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => ready(server.address().port));
} else {
  console.error('usage: servers.mjs ferry DIR [MAX_CONNECTIONS] | raw-echo | raw-native-echo | raw-idle');
  process.exit(2);
}
