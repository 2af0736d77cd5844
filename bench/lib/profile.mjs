// Reading .cpuprofile files (node --cpu-prof): self time per function and per file, printed as the
// top entries, for bench/profile-upload.mjs and bench/profile-messages.mjs.
import fs from 'node:fs';
import path from 'node:path';
import { rootDir } from './common-paths.mjs';

function shorten(url) {
  return url.replace(`file://${rootDir}/`, '').replace(/^.*node_modules\//, 'node_modules/');
}

/** Self time per function (ms) from a .cpuprofile: each sample's time delta goes to the node it hit. */
export function selfTimes(file) {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parentOf = new Map();
  for (const n of profile.nodes) for (const child of n.children ?? []) parentOf.set(child, n);
  const self = new Map();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000));
  const byFunction = new Map();
  const byFile = new Map();
  // Native functions (no script) are told apart by who called them: writeBuffer is a socket's write
  // or fs.writeSync's, depending.
  const callers = new Map();
  const nameOf = ({ functionName, url, lineNumber }) => `${functionName || '(anonymous)'} ${url ? `${shorten(url)}:${lineNumber + 1}` : ''}`.trim();
  let total = 0;
  for (const [id, ms] of self) {
    const { functionName, url } = byId.get(id).callFrame;
    const key = nameOf(byId.get(id).callFrame);
    byFunction.set(key, (byFunction.get(key) ?? 0) + ms);
    if (!url && !functionName.startsWith('(')) {
      // The nearest caller with a script, and the one above it.
      let up = parentOf.get(id);
      while (up && !up.callFrame.url) up = parentOf.get(up.id);
      const above = up && parentOf.get(up.id);
      const via = up ? `${nameOf(up.callFrame)}${above?.callFrame.url ? ` ← ${nameOf(above.callFrame)}` : ''}` : '(no caller)';
      const m = callers.get(key) ?? new Map();
      m.set(via, (m.get(via) ?? 0) + ms);
      callers.set(key, m);
    }
    const group = url ? shorten(url).replace(/:\d+$/, '') : functionName; // (garbage collector), (program), (idle)
    byFile.set(group, (byFile.get(group) ?? 0) + ms);
    total += ms;
  }
  return { byFunction, byFile, callers, total };
}

/** Prints the top `top` functions by self time, and the top files; percentages of the time not idle too. */
export function printProfile(title, { byFunction, byFile, callers, total }, top = 25) {
  const idle = byFunction.get('(idle)') ?? 0;
  const busy = total - idle;
  console.log(`\n${title}: ${(total / 1000).toFixed(1)} s profiled, ${(busy / 1000).toFixed(1)} s not idle`);
  console.log('  self ms  % all  % busy  function');
  const line = (key, ms) => `  ${ms.toFixed(0).padStart(7)}  ${((100 * ms) / total).toFixed(1).padStart(5)}  ${key === '(idle)' ? '     –' : ((100 * ms) / busy).toFixed(1).padStart(6)}  ${key}`;
  for (const [key, ms] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(line(key, ms));
    for (const [via, t] of [...(callers.get(key) ?? [])].sort((a, b) => b[1] - a[1]).slice(0, 3)) {
      console.log(`  ${''.padStart(7)}  ${''.padStart(5)}  ${''.padStart(6)}    ${t.toFixed(0)} ms from ${via}`);
    }
  }
  console.log('  by file:');
  for (const [key, ms] of [...byFile].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(line(key, ms));
}

/** The one .cpuprofile node wrote into `dir`. */
export function onlyProfile(dir) {
  const name = fs.readdirSync(dir).find((n) => n.endsWith('.cpuprofile'));
  if (!name) throw new Error(`no .cpuprofile in ${dir}`);
  return path.join(dir, name);
}
