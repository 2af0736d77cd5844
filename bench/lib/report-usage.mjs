// Preloaded (`node --import`) into a short-lived process whose peak memory or CPU time the bench
// wants: on exit it writes, as JSON to the file named by FERRY_BENCH_USAGE_FILE, its own VmHWM and
// VmRSS (bytes, from /proc/self/status) and its CPU time (process.cpuUsage(): user and system, in
// µs, all threads, from start-up on). Reading these from inside is exact; an outside sampler could
// miss the end, and /proc/<pid> is gone once the process has exited.
import fs from 'node:fs';

const out = process.env.FERRY_BENCH_USAGE_FILE;
if (out) {
  process.on('exit', () => {
    try {
      const { user, system } = process.cpuUsage();
      const status = fs.readFileSync('/proc/self/status', 'utf8');
      const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
      fs.writeFileSync(out, JSON.stringify({ pid: process.pid, hwm: field('VmHWM'), rss: field('VmRSS'), userUs: user, systemUs: system }));
    } catch {
      // nothing to report
    }
  });
}
