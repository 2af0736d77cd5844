// Idle sessions: how long opening N of them takes and what each costs in memory, two ways.
//
// Real sockets (1,000 and 10,000): N raw native clients (preamble + hello, wait for the welcome, then
// only answer pings) against a `ferry serve` child; memory is the server's (RSS after − RSS before) / N.
// The baseline is the same clients against a bare node:net server that only answers the hello (node's
// own cost per socket). The machine's hard open-file limit (20,000 here) caps one server process at
// about 19,000 sockets, so 50,000 cannot be measured this way.
//
// In-process sessions (1,000, 10,000 and 50,000): lib/memory-sessions.mjs hands the server end of
// memoryPair() after memoryPair() to createServer()'s server machine as its listener hands over an
// accepted socket, in one process with the client ends, and reports heap and RSS (after forced
// garbage collection) and the time spent opening at each count. The baseline is the same pairs with
// a server end that only answers the hello. No file descriptors, so any count fits; the figure
// includes the client end and the in-memory transport pair (the baseline shows what they cost) but
// no kernel socket or node:net handle.
import fs from 'node:fs';
import path from 'node:path';
import {
  KiB,
  achievableFdLimit,
  bySize,
  fdLimits,
  idleClientsScript,
  kill,
  makeTempDir,
  memoryOf,
  memorySessionsScript,
  metric,
  ratioOf,
  removeTempDir,
  row,
  serversScript,
  sleep,
  spawnTracked,
  spawnWithFdLimit,
  startFerryServe,
  target,
  waitForLine,
  withTimeout,
} from '../lib/common.mjs';

export const name = 'idle-sessions';
export const title = 'idle sessions: time to open N and memory per session, over real sockets and in-process, vs bare servers';

const FD_LIMIT = 65_536;
/** Targets: 10,000 sessions opened in under 5 s; under 25 KiB a session at the largest count. */
const OPEN_SECONDS_PER_10K = 5;
const KIB_PER_SESSION = 25;
/** Linear opening: a session opened beyond the middle count costs at most this much more than one before it. */
const LINEAR_SLACK = 1.25;

const sizesFor = (ctx) => ({
  real: bySize(ctx, { smoke: [200, 1000], quick: [100, 1000], full: [1000, 10_000] }),
  memory: bySize(ctx, { smoke: [300, 1000, 2000], quick: [1000, 5000, 10_000], full: [1000, 10_000, 50_000] }),
  // In-process opening stops after this long in all (the largest count may be out of reach).
  memoryBudgetMs: bySize(ctx, { smoke: 15_000, quick: 60_000, full: 120_000 }),
  // Quiet time before the "before" reading and before each "after" reading.
  settleBeforeMs: bySize(ctx, { smoke: 300, quick: 1000, full: 1000 }),
  settleAfterMs: bySize(ctx, { smoke: 500, quick: 3000, full: 3000 }),
});

// Opening 10,000 real sessions has taken ferry up to 160 s on a busy machine; allow for it.
export const limitMs = (ctx) => bySize(ctx, { smoke: 60_000, quick: 300_000, full: 600_000 + ctx.runs * 600_000 });

const fmtN = (n) => n.toLocaleString('en-US');

async function startRawIdle() {
  const child = spawnWithFdLimit(FD_LIMIT, process.execPath, [serversScript, 'raw-idle']);
  const { port } = await waitForLine(child, (l) => JSON.parse(l), 15_000, 'raw-idle server');
  return { child, port };
}

// ---------------------------------------------------------------------------------------------
// Real sockets.

/** Opens `n` idle sessions from as many client processes as the open-file limit requires. */
async function openSessions(port, n, log, childLimit) {
  const capacity = childLimit - 200;
  const perChild = Math.max(1, Math.min(n, capacity));
  const clients = [];
  for (let left = n; left > 0; left -= perChild) {
    clients.push(spawnWithFdLimit(FD_LIMIT, process.execPath, [idleClientsScript, String(port), String(Math.min(left, perChild))]));
  }
  const summaries = await Promise.all(clients.map((c) => waitForLine(c, (l) => (JSON.parse(l).ready !== undefined ? JSON.parse(l) : undefined), 60_000 + n * 50, 'idle clients')));
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

async function measureReal(kind, n, dir, log, childLimit, sizes) {
  let server;
  let sessions;
  try {
    const inbox = path.join(dir, `in-${kind}-${n}`);
    fs.mkdirSync(inbox, { recursive: true });
    server =
      kind === 'ferry'
        ? await startFerryServe({ uploadDir: inbox, fdLimit: FD_LIMIT, args: ['--max-connections', String(n + 1000)] })
        : await startRawIdle();
    await sleep(sizes.settleBeforeMs);
    const before = memoryOf(server.child.pid).rss;
    const t = performance.now();
    sessions = await openSessions(server.port, n, log, childLimit);
    const connectMs = performance.now() - t;
    // Let the dust settle (replies flushed, start-up garbage collected where the runtime wants to).
    await sleep(sizes.settleAfterMs);
    const open = await stillOpen(sessions.clients);
    const after = memoryOf(server.child.pid);
    if (open < n) log(`  only ${open} of ${n} sessions open when measured`);
    const perSession = (after.rss - before) / Math.max(1, open);
    log(
      `real ${kind.padEnd(5)} N=${fmtN(n)}: RSS ${(before / 2 ** 20).toFixed(1)} → ${(after.rss / 2 ** 20).toFixed(1)} MiB, ${(perSession / KiB).toFixed(1)} KiB/session, ` +
        `${open} open, opened in ${(connectMs / 1000).toFixed(2)} s (${sessions.processes} client process${sessions.processes > 1 ? 'es' : ''})`,
    );
    return { before, after: after.rss, peak: after.hwm, perSession, open, connectMs };
  } finally {
    for (const c of sessions?.clients ?? []) c.stdin.end();
    await Promise.all((sessions?.clients ?? []).map((c) => Promise.race([c.exited, sleep(5000).then(() => kill(c))])));
    await kill(server?.child);
  }
}

// ---------------------------------------------------------------------------------------------
// In-process sessions over the in-memory transport.

/** One lib/memory-sessions.mjs child: its reading at each checkpoint reached (or where the budget stopped it). */
async function measureMemory(kind, checkpoints, dir, log, sizes) {
  const inbox = path.join(dir, `mem-${kind}-${Date.now()}`);
  fs.mkdirSync(inbox, { recursive: true });
  const args = [
    '--expose-gc',
    '--max-old-space-size=8192',
    memorySessionsScript,
    kind,
    inbox,
    checkpoints.join(','),
    String(sizes.memoryBudgetMs),
    '256',
    String(sizes.settleBeforeMs),
  ];
  const child = spawnTracked(process.execPath, args);
  const lines = [];
  try {
    const timeoutMs = sizes.memoryBudgetMs + 60_000 + checkpoints.length * (sizes.settleBeforeMs + 30_000);
    const before = await waitForLine(
      child,
      (l) => {
        const o = JSON.parse(l);
        return o.before;
      },
      30_000,
      `in-process ${kind} sessions`,
    );
    child.onLine = (l) => {
      try {
        lines.push(JSON.parse(l));
      } catch {
        // not a reading
      }
    };
    await withTimeout(child.exited, timeoutMs, `in-process ${kind} sessions`);
    if (child.exitCode !== 0) throw new Error(`in-process ${kind} sessions exited ${child.exitCode ?? child.signalCode}: ${child.stderrTail.trim().slice(-800)}`);
    const readings = lines
      .filter((o) => o.checkpoint !== undefined)
      .map((o) => ({
        checkpoint: o.checkpoint,
        reached: !o.budgetExceeded,
        opened: o.opened,
        open: o.open,
        failed: o.failed,
        openMs: o.openMs,
        rssPerSession: (o.rss - before.rss) / Math.max(1, o.open),
        heapPerSession: (o.heapUsed - before.heapUsed) / Math.max(1, o.open),
        rss: o.rss,
      }));
    for (const r of readings) {
      if (r.open < r.opened) log(`  in-process ${kind}: only ${r.open} of ${r.opened} sessions open when measured (${r.failed} failed)`);
      log(
        `in-process ${kind.padEnd(5)} N=${fmtN(r.opened)}${r.reached ? '' : ` (stopped by the ${sizes.memoryBudgetMs / 1000} s budget on the way to ${fmtN(r.checkpoint)})`}: ` +
          `${(r.rssPerSession / KiB).toFixed(1)} KiB RSS, ${(r.heapPerSession / KiB).toFixed(1)} KiB heap per session, opened in ${(r.openMs / 1000).toFixed(2)} s ` +
          `(${((1000 * r.openMs) / r.opened).toFixed(0)} µs/session)`,
      );
    }
    return readings;
  } finally {
    await kill(child);
  }
}

// ---------------------------------------------------------------------------------------------

export async function run(ctx, overrides = {}) {
  const sizes = { ...sizesFor(ctx), ...overrides };
  const dir = makeTempDir(name);
  try {
    const limits = fdLimits();
    const childLimit = achievableFdLimit(FD_LIMIT);
    ctx.log(`open-file limit here ${limits.soft}/${limits.hard}; server and clients raise theirs to ${childLimit} (asked for ${FD_LIMIT})`);
    if (childLimit < sizes.real.at(-1) + 100) ctx.log(`the server cannot hold ${sizes.real.at(-1)} sockets with ${childLimit} files; expect failures`);

    const real = {};
    for (const n of sizes.real) for (const kind of ['ferry', 'raw']) real[`${kind}${n}`] = [];
    const mem = { ferry: [], bare: [] };
    // Once a run's in-process opening ran out of budget, later runs of that kind stop at the last
    // checkpoint it reached: the count beyond is out of reach, and trying again costs the budget again.
    const memCheckpoints = { ferry: [...sizes.memory], bare: [...sizes.memory] };
    for (let i = 0; i < ctx.runs; i++) {
      const log = (msg) => ctx.log(`run ${i + 1}: ${msg}`);
      const order = i % 2 === 0 ? ['raw', 'ferry'] : ['ferry', 'raw'];
      for (const n of sizes.real) {
        for (const kind of order) real[`${kind}${n}`].push(await measureReal(kind, n, dir, log, childLimit, sizes));
      }
      for (const kind of order.map((k) => (k === 'raw' ? 'bare' : k))) {
        const readings = await measureMemory(kind, memCheckpoints[kind], dir, log, sizes);
        mem[kind].push(readings);
        const stop = readings.find((r) => !r.reached);
        if (stop) memCheckpoints[kind] = memCheckpoints[kind].filter((c) => c < stop.checkpoint);
        if (memCheckpoints[kind].length === 0) throw new Error(`in-process ${kind}: not even ${sizes.memory[0]} sessions opened in ${sizes.memoryBudgetMs / 1000} s`);
      }
    }

    const metrics = {};
    const ratios = {};
    const table = [];
    const targets = [];

    // Real sockets.
    for (const n of sizes.real) {
      const f = real[`ferry${n}`];
      const r = real[`raw${n}`];
      metrics[`ferry${n}`] = metric(`ferry KiB/session at ${n}`, 'KiB', f.map((m) => m.perSession / KiB), { rssAfterMiB: f.map((m) => m.after / 2 ** 20) });
      metrics[`raw${n}`] = metric(`node:net KiB/socket at ${n}`, 'KiB', r.map((m) => m.perSession / KiB), { rssAfterMiB: r.map((m) => m.after / 2 ** 20) });
      metrics[`ferryConnect${n}`] = metric(`ferry: time to open ${n} sessions`, 's', f.map((m) => m.connectMs / 1000));
      metrics[`rawConnect${n}`] = metric(`node:net: time to open ${n} sockets`, 's', r.map((m) => m.connectMs / 1000));
      ratios[`ferry/raw at ${n}`] = ratioOf(f.map((m) => m.perSession), r.map((m) => m.perSession));
      ratios[`open ferry/raw at ${n}`] = ratioOf(f.map((m) => m.connectMs), r.map((m) => m.connectMs));
      table.push(row(`real sockets, ${fmtN(n)}: memory per session (server RSS)`, `ferry${n}`, { baseline: `raw${n}`, ratio: `ferry/raw at ${n}` }));
      const openRow = row(`real sockets, ${fmtN(n)}: time to open`, `ferryConnect${n}`, { baseline: `rawConnect${n}`, ratio: `open ferry/raw at ${n}` });
      if (n === sizes.real.at(-1)) {
        const limit = (OPEN_SECONDS_PER_10K * n) / 10_000;
        openRow.target = targets.push(target(`real sockets: ${fmtN(n)} sessions opened in < ${limit} s`, metrics[`ferryConnect${n}`].median, '<', limit, { unit: 's' })) - 1;
      }
      table.push(openRow);
    }

    // In-process sessions: for each checkpoint, the runs that reached it; for the largest, when no
    // run reached it, the readings where the budget stopped opening.
    const [, middle, largest] = sizes.memory;
    const readingsAt = (kind, c) => {
      const reached = mem[kind].map((rs) => rs.find((r) => r.checkpoint === c && r.reached)).filter(Boolean);
      if (reached.length > 0) return { readings: reached, reached: true };
      return { readings: mem[kind].map((rs) => rs.find((r) => r.checkpoint === c)).filter(Boolean), reached: false };
    };
    const perSessionUs = (r) => (1000 * r.openMs) / r.opened;
    for (const c of sizes.memory) {
      const f = readingsAt('ferry', c);
      const b = readingsAt('bare', c);
      const note = (x, who) => (x.reached || x.readings.length === 0 ? '' : ` (${who}: ${fmtN(x.readings[0].opened)} reached in the ${sizes.memoryBudgetMs / 1000} s budget)`);
      const label = `in-process, ${fmtN(c)}${note(f, 'ferry')}${note(b, 'bare')}`;
      const extra = (x) => ({ opened: x.readings.map((r) => r.opened), reached: x.reached });
      metrics[`memFerryRss${c}`] = metric(`ferry in-process RSS/session at ${c}`, 'KiB', f.readings.map((r) => r.rssPerSession / KiB), extra(f));
      metrics[`memBareRss${c}`] = metric(`bare in-process RSS/session at ${c}`, 'KiB', b.readings.map((r) => r.rssPerSession / KiB), extra(b));
      metrics[`memFerryHeap${c}`] = metric(`ferry in-process heap/session at ${c}`, 'KiB', f.readings.map((r) => r.heapPerSession / KiB), extra(f));
      metrics[`memBareHeap${c}`] = metric(`bare in-process heap/session at ${c}`, 'KiB', b.readings.map((r) => r.heapPerSession / KiB), extra(b));
      metrics[`memFerryOpen${c}`] = metric(`ferry in-process time to open ${c}`, 's', f.readings.map((r) => r.openMs / 1000), extra(f));
      metrics[`memBareOpen${c}`] = metric(`bare in-process time to open ${c}`, 's', b.readings.map((r) => r.openMs / 1000), extra(b));
      metrics[`memFerryOpenEach${c}`] = metric(`ferry in-process opening per session at ${c}`, 'µs', f.readings.map(perSessionUs), extra(f));
      metrics[`memBareOpenEach${c}`] = metric(`bare in-process opening per session at ${c}`, 'µs', b.readings.map(perSessionUs), extra(b));
      const pair = (k) => ratioOf(f.readings.map(k), b.readings.map(k));
      ratios[`mem rss ferry/bare at ${c}`] = pair((r) => r.rssPerSession);
      ratios[`mem heap ferry/bare at ${c}`] = pair((r) => r.heapPerSession);
      ratios[`mem open ferry/bare at ${c}`] = pair((r) => r.openMs);
      ratios[`mem open each ferry/bare at ${c}`] = pair(perSessionUs);
      const rssRow = row(`${label}: RSS per session`, `memFerryRss${c}`, { baseline: `memBareRss${c}`, ratio: `mem rss ferry/bare at ${c}` });
      const openRow = row(`${label}: time to open`, `memFerryOpen${c}`, { baseline: `memBareOpen${c}`, ratio: `mem open ferry/bare at ${c}` });
      const eachRow = row(`${label}: opening per session`, `memFerryOpenEach${c}`, { baseline: `memBareOpenEach${c}`, ratio: `mem open each ferry/bare at ${c}` });
      if (c === middle) {
        const limit = (OPEN_SECONDS_PER_10K * c) / 10_000;
        openRow.target = targets.push(target(`in-process: ${fmtN(c)} sessions opened in < ${limit} s`, metrics[`memFerryOpen${c}`].median, '<', limit, { unit: 's' })) - 1;
      }
      if (c === largest) {
        // Judged only at the count it is about; short of it, the reading where opening stopped is
        // shown but the target is not measured.
        const t = target(`in-process: < ${KIB_PER_SESSION} KiB RSS per session at ${fmtN(c)}`, metrics[`memFerryRss${c}`].median, '<', KIB_PER_SESSION, { unit: 'KiB' });
        if (!f.reached) Object.assign(t, { pass: null, note: `${fmtN(c)} not reached in ${sizes.memoryBudgetMs / 1000} s; the reading is at ${fmtN(f.readings[0]?.opened ?? 0)}` });
        rssRow.target = targets.push(t) - 1;
      }
      table.push(rssRow, row(`${label}: heap per session`, `memFerryHeap${c}`, { baseline: `memBareHeap${c}`, ratio: `mem heap ferry/bare at ${c}` }), openRow, eachRow);
    }
    // Linear opening: within each run, what each further session cost to open between the middle
    // and the largest count (or where the budget stopped), over the same between the first and the
    // middle count; 1 when a session costs the same however many are open, above 1 when it grows.
    const linearity = (kind) =>
      mem[kind]
        .map((rs) => {
          const first = rs.find((r) => r.checkpoint === sizes.memory[0] && r.reached);
          const mid = rs.find((r) => r.checkpoint === middle && r.reached);
          const top = rs.find((r) => r.checkpoint === largest);
          if (!first || !mid || !top || top.opened <= mid.opened) return undefined;
          return (top.openMs - mid.openMs) / (top.opened - mid.opened) / ((mid.openMs - first.openMs) / (mid.opened - first.opened));
        })
        .filter((x) => x !== undefined);
    const top = readingsAt('ferry', largest);
    const upTo = top.reached ? fmtN(largest) : `${fmtN(top.readings[0]?.opened ?? 0)} (where the budget stopped it)`;
    const upToShort = top.reached ? fmtN(largest) : fmtN(top.readings[0]?.opened ?? 0);
    const [first] = sizes.memory;
    metrics.memFerryLinear = metric(`ferry in-process: each session opened from ${middle} on / from ${first} to ${middle}`, '×', linearity('ferry'));
    metrics.memBareLinear = metric(`bare in-process: each session opened from ${middle} on / from ${first} to ${middle}`, '×', linearity('bare'));
    const linearRow = row(`in-process: opening a session from ${fmtN(middle)} to ${upToShort} / from ${fmtN(first)} to ${fmtN(middle)} (1 = linear)`, 'memFerryLinear', {
      baseline: 'memBareLinear',
    });
    linearRow.target =
      targets.push(target(`in-process: opening is linear (each session from ${fmtN(middle)} to ${upTo} ≤ ${LINEAR_SLACK} × one from ${fmtN(first)} to ${fmtN(middle)})`, metrics.memFerryLinear.median, '<=', LINEAR_SLACK)) - 1;
    table.push(linearRow);

    return {
      params: {
        realSizes: sizes.real,
        memorySizes: sizes.memory,
        memoryBudgetSeconds: sizes.memoryBudgetMs / 1000,
        runs: ctx.runs,
        kib: 1024,
        fdLimit: childLimit,
        heartbeat: 'server default (10 s); clients answer pings',
      },
      metrics,
      ratios,
      targets,
      table,
    };
  } finally {
    removeTempDir(dir);
  }
}
