// Memory per idle session: N raw native clients (preamble + hello, wait for the welcome, then only
// answer pings) held against a `ferry serve` child; (RSS after − RSS before) / N. The baseline is the
// same clients against a bare node:net server that only answers the hello (node's own cost per socket).
import fs from 'node:fs';
import path from 'node:path';
import {
  KiB,
  achievableFdLimit,
  fdLimits,
  idleClientsScript,
  kill,
  makeTempDir,
  median,
  memoryOf,
  metric,
  removeTempDir,
  serversScript,
  sleep,
  spawnTracked,
  startFerryServe,
  target,
  ulimitPrefix,
  waitForLine,
} from '../lib/common.mjs';

export const name = 'idle-sessions';
export const title = 'memory per idle native session (server RSS after − before, / N) vs a bare node:net server';

const FD_LIMIT = 65_536;

function viaUlimit(limit, command, args) {
  return spawnTracked('bash', ['-c', `${ulimitPrefix(limit)} exec "$@"`, 'bash', command, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

async function startRawIdle() {
  const child = viaUlimit(FD_LIMIT, process.execPath, [serversScript, 'raw-idle']);
  const { port } = await waitForLine(child, (l) => JSON.parse(l), 15_000, 'raw-idle server');
  return { child, port };
}

/** Opens `n` idle sessions from as many client processes as the open-file limit requires. */
async function openSessions(port, n, log, childLimit) {
  const capacity = childLimit - 200;
  const perChild = Math.max(1, Math.min(n, capacity));
  const clients = [];
  for (let left = n; left > 0; left -= perChild) {
    clients.push(viaUlimit(FD_LIMIT, process.execPath, [idleClientsScript, String(port), String(Math.min(left, perChild))]));
  }
  const summaries = await Promise.all(clients.map((c) => waitForLine(c, (l) => (JSON.parse(l).ready !== undefined ? JSON.parse(l) : undefined), 60_000 + n * 10, 'idle clients')));
  const ready = summaries.reduce((a, s) => a + s.ready, 0);
  const failed = summaries.reduce((a, s) => a + s.failed, 0);
  if (failed > 0) log(`  ${failed} of ${n} connections failed: ${JSON.stringify(summaries.map((s) => s.errors))}`);
  return { clients, ready, failed, processes: clients.length };
}

async function stillOpen(clients) {
  const answers = clients.map((c) => {
    const answer = waitForLine(c, (l) => (JSON.parse(l).open !== undefined ? JSON.parse(l).open : undefined), 10_000, 'idle clients status');
    c.stdin.write('status\n');
    return answer;
  });
  return (await Promise.all(answers)).reduce((a, b) => a + b, 0);
}

async function measure(kind, n, dir, log, childLimit) {
  let server;
  let sessions;
  try {
    const inbox = path.join(dir, `in-${kind}-${n}`);
    fs.mkdirSync(inbox, { recursive: true });
    server =
      kind === 'ferry'
        ? await startFerryServe({ uploadDir: inbox, fdLimit: FD_LIMIT, args: ['--max-connections', String(n + 1000)] })
        : await startRawIdle();
    await sleep(1000);
    const before = memoryOf(server.child.pid).rss;
    const t = performance.now();
    sessions = await openSessions(server.port, n, log, childLimit);
    const connectMs = performance.now() - t;
    // Let the dust settle (replies flushed, start-up garbage collected where the runtime wants to).
    await sleep(3000);
    const open = await stillOpen(sessions.clients);
    const after = memoryOf(server.child.pid);
    if (open < n) log(`  only ${open} of ${n} sessions open when measured`);
    const perSession = (after.rss - before) / Math.max(1, open);
    log(
      `${kind.padEnd(5)} N=${n}: RSS ${(before / 2 ** 20).toFixed(1)} → ${(after.rss / 2 ** 20).toFixed(1)} MiB, ${(perSession / KiB).toFixed(1)} KiB/session, ` +
        `${open} open, connected in ${(connectMs / 1000).toFixed(1)} s (${sessions.processes} client process${sessions.processes > 1 ? 'es' : ''})`,
    );
    return { before, after: after.rss, peak: after.hwm, perSession, open, connectMs };
  } finally {
    for (const c of sessions?.clients ?? []) c.stdin.end();
    await Promise.all((sessions?.clients ?? []).map((c) => Promise.race([c.exited, sleep(5000).then(() => kill(c))])));
    await kill(server?.child);
  }
}

export async function run(ctx, { sizes = ctx.quick ? [100, 1000] : [1000, 10_000] } = {}) {
  const dir = makeTempDir(name);
  try {
    const limits = fdLimits();
    const childLimit = achievableFdLimit(FD_LIMIT);
    ctx.log(`open-file limit here ${limits.soft}/${limits.hard}; server and clients raise theirs to ${childLimit} (asked for ${FD_LIMIT})`);
    if (childLimit < sizes.at(-1) + 100) ctx.log(`the server cannot hold ${sizes.at(-1)} sockets with ${childLimit} files; expect failures`);
    const s = {};
    for (const n of sizes) for (const kind of ['ferry', 'raw']) s[`${kind}${n}`] = [];
    for (let i = 0; i < ctx.runs; i++) {
      for (const n of sizes) {
        const order = i % 2 === 0 ? ['raw', 'ferry'] : ['ferry', 'raw'];
        for (const kind of order) {
          const m = await measure(kind, n, dir, (msg) => ctx.log(`run ${i + 1}: ${msg}`), childLimit);
          s[`${kind}${n}`].push(m);
        }
      }
    }
    const metrics = {};
    const ratios = {};
    for (const n of sizes) {
      metrics[`ferry${n}`] = metric(`ferry KiB/session at ${n}`, 'KiB', s[`ferry${n}`].map((m) => m.perSession / KiB), {
        rssAfterMiB: s[`ferry${n}`].map((m) => m.after / 2 ** 20),
        connectSeconds: s[`ferry${n}`].map((m) => m.connectMs / 1000),
      });
      metrics[`raw${n}`] = metric(`node:net KiB/socket at ${n}`, 'KiB', s[`raw${n}`].map((m) => m.perSession / KiB), {
        rssAfterMiB: s[`raw${n}`].map((m) => m.after / 2 ** 20),
        connectSeconds: s[`raw${n}`].map((m) => m.connectMs / 1000),
      });
      metrics[`ferryConnect${n}`] = metric(`ferry: time to open ${n} sessions`, 's', s[`ferry${n}`].map((m) => m.connectMs / 1000));
      metrics[`rawConnect${n}`] = metric(`node:net: time to open ${n} sockets`, 's', s[`raw${n}`].map((m) => m.connectMs / 1000));
      ratios[`ferry/raw at ${n}`] = { value: median(s[`ferry${n}`].map((m) => m.perSession)) / median(s[`raw${n}`].map((m) => m.perSession)) };
    }
    const largest = sizes.at(-1);
    return {
      params: { sizes, runs: ctx.runs, kib: 1024, fdLimit: childLimit, heartbeat: 'server default (10 s); clients answer pings' },
      metrics,
      ratios,
      targets: [target(`ferry < 40 KiB per session at ${largest}`, metrics[`ferry${largest}`].median, '<', 40, { unit: 'KiB' })],
    };
  } finally {
    removeTempDir(dir);
  }
}
