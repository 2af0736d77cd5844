// Preloaded (`node --import`) into a short-lived process whose peak memory the bench wants: on exit
// it writes its own VmHWM and VmRSS (bytes, from /proc/self/status) as JSON to the file named by
// FERRY_BENCH_HWM_FILE. Reading it from inside is exact; sampling from outside could miss the end.
import fs from 'node:fs';

const out = process.env.FERRY_BENCH_HWM_FILE;
if (out) {
  process.on('exit', () => {
    try {
      const status = fs.readFileSync('/proc/self/status', 'utf8');
      const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
      fs.writeFileSync(out, JSON.stringify({ pid: process.pid, hwm: field('VmHWM'), rss: field('VmRSS') }));
    } catch {
      // nothing to report
    }
  });
}
