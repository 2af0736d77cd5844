// Servers the bench runs as child processes. Prints {"port"} once listening on 127.0.0.1, then
// serves until killed.
//
//   ferry DIR        the library's createServer (defaults: silent logger, heartbeats on), files to DIR
//   raw-echo         a length-prefixed echo: every [u32 BE length][payload] frame is sent back as is
//   raw-idle         holds native connections at the least cost node:net allows: answers the first
//                    bytes (preamble + hello) with preamble + welcome, then ignores the socket
import net from 'node:net';
import { pathToFileURL } from 'node:url';
import { libraryEntry, nativeCodecModule } from './common-paths.mjs';

const [mode, dir] = process.argv.slice(2);

function ready(port) {
  console.log(JSON.stringify({ port, pid: process.pid }));
}

if (mode === 'ferry') {
  const { createServer } = await import(pathToFileURL(libraryEntry).href);
  const server = createServer({ port: 0, uploadDir: dir });
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
  console.error('usage: servers.mjs ferry DIR | raw-echo | raw-idle');
  process.exit(2);
}
