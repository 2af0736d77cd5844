// Applies patches/ to the installed dependencies (patch-package), in a checkout of ferry. It runs from
// the `prepare` script, which npm runs after `npm ci` or `npm install` in the checkout and never where
// ferry is installed as a dependency of another project.
//
// The one patch today is XState's; it changes what XState costs, and what it computes stays the same:
// - On Node 20 (V8 11) an object literal that starts with a spread and then adds properties, as
//   `{ ...defaults, ...options }`, gets a hidden class of its own every time, which costs
//   microseconds and a few hundred bytes per object and makes every later read of it miss the inline
//   caches. XState builds each actor's options, each spawn's children and each invoke that way; the
//   patch builds the same objects with Object.assign.
// - Every assign copies the snapshot, and the copy computed its state value and tags again from the
//   active state nodes; a copy with the same nodes now keeps them.
// - Choosing a transition no longer builds a key string per state node and step, collecting a step's
//   actions no longer uses flatMap, and looking for eventless transitions no longer builds each
//   state's list of ancestors.
// README.md ("Patched dependencies") says more.
//
// Without patch-package or patches/ this does nothing, and XState runs as published (the same
// behaviour, a little slower).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
let cli;
try {
  cli = createRequire(path.join(root, 'package.json')).resolve('patch-package/index.js');
} catch {
  process.exit(0);
}
if (!fs.existsSync(path.join(root, 'patches'))) process.exit(0);
const run = spawnSync(process.execPath, [cli, '--error-on-fail'], { cwd: root, stdio: 'inherit' });
process.exit(run.status ?? 1);
