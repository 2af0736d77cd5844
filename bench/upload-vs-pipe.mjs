// One large upload, `ferry send` → `ferry serve`, against the plain node:net pipe (bench/pipe-baseline.mjs)
// and nc when installed: the upload-1g figure of bench/run.mjs at any size. Prints the figure as JSON.
// Usage: node bench/upload-vs-pipe.mjs [MiB] [runs]     (default 1024 MiB, 3 runs)
import { MiB, cleanupAll, getTempRoot } from './lib/common.mjs';
import { run } from './figures/upload-1g.mjs';

const mib = Number(process.argv[2] ?? 1024);
const runs = Number(process.argv[3] ?? 3);
try {
  const result = await run({ runs, quick: false, tempRoot: getTempRoot(), log: (m) => console.error(m) }, { bytes: mib * MiB });
  console.log(JSON.stringify(result, null, 2));
} finally {
  await cleanupAll();
}
