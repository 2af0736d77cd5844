import path from 'node:path';
import readline from 'node:readline';
import { createRequire } from 'node:module';
import type cliProgressTypes from 'cli-progress';
import { formatBytes } from './units.js';

const require = createRequire(import.meta.url);

/**
 * One progress bar on stderr for the upload being sent (uploads go one at a time); nothing when
 * stderr is not a terminal. Lines printed through {@link print} appear above the bar, which is
 * drawn again below them, so a result is never overwritten.
 */
export class UploadProgress {
  private current: { file: string; bar: cliProgressTypes.SingleBar; started: number } | undefined;

  constructor(private readonly enabled = process.stderr.isTTY === true) {}

  update(file: string, sent: number, total: number): void {
    if (!this.enabled) return;
    if (this.current?.file !== file) {
      this.clear();
      // Loaded only for a terminal.
      const cliProgress = require('cli-progress') as typeof cliProgressTypes;
      const bar = new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: ' {name} |{bar}| {percentage}% {done}/{size} {rate}/s ETA {eta_formatted}',
          hideCursor: true,
          clearOnComplete: true,
          stopOnComplete: false,
          // Drawn on every tick, so it comes back at once below a line printed over it.
          forceRedraw: true,
          etaBuffer: 50,
          fps: 10,
        },
        cliProgress.Presets.shades_classic,
      );
      bar.start(Math.max(total, 1), 0, this.payload(file, 0, total, 0));
      this.current = { file, bar, started: performance.now() };
    }
    const seconds = (performance.now() - this.current.started) / 1000;
    // The first chunks leave at once, into buffers: a rate means something only after a moment.
    this.current.bar.update(sent, this.payload(file, sent, total, seconds >= 0.5 ? sent / seconds : 0));
  }

  /** The file is finished: its bar goes away. */
  done(file: string): void {
    if (this.current?.file === file) this.clear();
  }

  /** Runs `write` (which prints whole lines) with the bar out of the way. */
  print(write: () => void): void {
    if (this.current) {
      readline.cursorTo(process.stderr, 0);
      readline.clearLine(process.stderr, 0);
    }
    write();
  }

  stop(): void {
    this.clear();
  }

  private clear(): void {
    this.current?.bar.stop();
    this.current = undefined;
  }

  private payload(file: string, sent: number, total: number, rate: number) {
    return { name: path.basename(file).slice(0, 24).padEnd(24), done: formatBytes(sent), size: formatBytes(total), rate: formatBytes(Math.round(rate)) };
  }
}
