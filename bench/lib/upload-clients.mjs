// One library client per FILE, all connected to 127.0.0.1:PORT first; on a "go" line on stdin every
// client starts its upload at once. Usage: upload-clients.mjs PORT STATE_DIR FILE...
// Each client remembers its uploads under STATE_DIR/<index>. Prints {"ready"} once all are connected, then {"results": [{file, start, end, bytes}]} with times in
// ms on the performance.timeOrigin clock (comparable across processes), then exits.
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';
import { libraryEntry } from './common-paths.mjs';

const { createClient } = await import(pathToFileURL(libraryEntry).href);
const [port, stateDir, ...files] = process.argv.slice(2);
const clients = files.map((_, i) => createClient({ port: Number(port), stateDir: path.join(stateDir, String(i)), retryForMs: 30_000 }));
await Promise.all(clients.map((c) => c.connect()));
console.log(JSON.stringify({ ready: clients.length }));

const lines = readline.createInterface({ input: process.stdin });
await new Promise((resolve) => lines.on('line', (l) => l.trim() === 'go' && resolve()));
const now = () => performance.timeOrigin + performance.now();
const results = await Promise.all(
  clients.map(async (client, i) => {
    const start = now();
    const result = await client.upload(files[i]);
    return { file: files[i], start, end: now(), bytes: result.bytes, sha256: result.sha256 };
  }),
);
console.log(JSON.stringify({ results }));
await Promise.all(clients.map((c) => c.close()));
process.exit(0);
