// Recovery after a crash: a library client (retryInitialMs 50, retryMaxMs 500) is connected to a
// `ferry serve` child; the server is SIGKILLed, a message is handed to the client, and the server is
// restarted on the same port at once. Measured from the restart's spawn: until the server logs
// `listening` (its own start-up), and until the client's message is confirmed (recovery). Their
// difference is what the client adds (noticing the drop, backoff, reconnect, handshake, resend).
// Baseline: the start-up of a bare node:net server (spawn → listening), node's own floor.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { bySize, kill, libraryEntry, makeTempDir, metric, ratioOf, removeTempDir, row, sleep, spawnTracked, startFerryServe, waitForLine, withTimeout } from '../lib/common.mjs';

export const name = 'recovery';
export const title = 'server SIGKILLed and restarted on the same port: spawn → client’s next confirmed message';

const BARE = "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>console.log('listening'))";

async function bareStart() {
  const t = performance.now();
  const child = spawnTracked(process.execPath, ['-e', BARE]);
  await waitForLine(child, (l) => (l === 'listening' ? true : undefined), 15_000, 'bare node server');
  const ms = performance.now() - t;
  await kill(child);
  return ms;
}

export async function run(ctx, { cyclesPerRun = bySize(ctx, { smoke: 1, quick: 2, full: 3 }) } = {}) {
  const dir = makeTempDir(name);
  const inbox = path.join(dir, 'in');
  fs.mkdirSync(inbox);
  const { createClient } = await import(pathToFileURL(libraryEntry).href);
  let server;
  let client;
  const s = { recovery: [], serverStart: [], clientPart: [], bare: [] };
  try {
    server = await startFerryServe({ uploadDir: inbox });
    const port = server.port;
    client = createClient({ port, retryInitialMs: 50, retryMaxMs: 500, retryForMs: 60_000 });
    let retries = 0;
    client.actor.on('retrying', () => retries++);
    if ((await withTimeout(client.message('hello'), 15_000, 'first message')) !== 'hello') throw new Error('first message not echoed');
    for (let i = 0; i < ctx.runs; i++) {
      for (let k = 0; k < cyclesPerRun; k++) {
        s.bare.push(await bareStart());
        await kill(server.child);
        const text = `after restart ${i}.${k}`;
        const confirmed = client.message(text).then((reply) => {
          if (reply !== text) throw new Error(`reply ${reply}`);
          return performance.now();
        });
        confirmed.catch(() => undefined);
        const spawned = performance.now();
        retries = 0;
        server = await startFerryServe({ uploadDir: inbox, port });
        const done = await withTimeout(confirmed, 30_000, 'message after restart');
        const recovery = done - spawned;
        s.recovery.push(recovery);
        s.serverStart.push(server.startMs);
        s.clientPart.push(recovery - server.startMs);
        ctx.log(
          `run ${i + 1}.${k + 1}: recovered in ${recovery.toFixed(0)} ms = server start ${server.startMs.toFixed(0)} ms + client ${(recovery - server.startMs).toFixed(0)} ms ` +
            `(${retries} retries; bare node server starts in ${s.bare.at(-1).toFixed(0)} ms)`,
        );
        await sleep(bySize(ctx, { smoke: 100, quick: 300, full: 300 }));
      }
    }
    return {
      params: { retryInitialMs: 50, retryMaxMs: 500, samples: s.recovery.length, runs: ctx.runs, cyclesPerRun },
      metrics: {
        recovery: metric('restart spawn → message confirmed', 'ms', s.recovery),
        serverStart: metric('ferry serve start-up (spawn → listening)', 'ms', s.serverStart),
        clientPart: metric('client part (recovery − start-up)', 'ms', s.clientPart),
        bare: metric('bare node:net server start-up', 'ms', s.bare),
      },
      ratios: { 'ferry start-up / bare node start-up': ratioOf(s.serverStart, s.bare) },
      targets: [],
      table: [
        row('restart spawn → message confirmed', 'recovery'),
        row('  server start-up (spawn → listening)', 'serverStart', { baseline: 'bare', ratio: 'ferry start-up / bare node start-up' }),
        row('  client part (the rest)', 'clientPart'),
      ],
    };
  } finally {
    await client?.close().catch(() => undefined);
    await kill(server?.child);
    removeTempDir(dir);
  }
}
