import path from 'node:path';
import { createRequire } from 'node:module';
import type cliProgressTypes from 'cli-progress';

const require = createRequire(import.meta.url);
import { formatBytes } from './units.js';

/** Progress bars on stderr for uploads; a no-op when stderr is not a terminal. */
export class UploadProgress {
  // Loaded only for a terminal.
  private readonly bars = process.stderr.isTTY
    ? new (require('cli-progress') as typeof cliProgressTypes).MultiBar(
        {
          stream: process.stderr,
          format: ' {name} |{bar}| {percentage}% {done}/{size} {rate}/s ETA {eta_formatted}',
          hideCursor: true,
          clearOnComplete: false,
          stopOnComplete: false,
          etaBuffer: 50,
          fps: 10,
        },
        (require('cli-progress') as typeof cliProgressTypes).Presets.shades_classic,
      )
    : undefined;
  private readonly active = new Map<string, { bar: cliProgressTypes.SingleBar; started: number }>();

  update(file: string, sent: number, total: number): void {
    if (!this.bars) return;
    let entry = this.active.get(file);
    if (!entry) {
      entry = { bar: this.bars.create(Math.max(total, 1), 0, this.payload(file, 0, total, 0)), started: performance.now() };
      this.active.set(file, entry);
    }
    const seconds = (performance.now() - entry.started) / 1000;
    entry.bar.update(sent, this.payload(file, sent, total, seconds > 0 ? sent / seconds : 0));
  }

  done(file: string): void {
    const entry = this.active.get(file);
    if (!entry) return;
    entry.bar.stop();
    this.active.delete(file);
  }

  stop(): void {
    this.bars?.stop();
  }

  private payload(file: string, sent: number, total: number, rate: number) {
    return { name: path.basename(file).slice(0, 24).padEnd(24), done: formatBytes(sent), size: formatBytes(total), rate: formatBytes(Math.round(rate)) };
  }
}
