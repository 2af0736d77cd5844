import type { UploadResult } from '../client.js';
import { FerryError } from '../transport/errors.js';
import type { OpenResultInfo } from '../transport/frames.js';
import { formatBytes, humanSizes } from './units.js';

/** One sentence for a person, whatever was thrown. */
export function sentence(err: unknown): string {
  if (err instanceof FerryError) return err.message;
  if (err instanceof Error) return err.message.endsWith('.') ? err.message : `${err.message}.`;
  return String(err);
}

export function errorJson(err: unknown): { code: string; message: string } {
  return err instanceof FerryError ? err.toJSON() : { code: 'E_INTERNAL', message: sentence(err) };
}

/** Where a line goes: the process's own streams, or (in `connect`) above the prompt. */
export interface Lines {
  out(text: string): void;
  err(text: string): void;
}

export const processLines: Lines = {
  out: (text) => process.stdout.write(`${text}\n`),
  err: (text) => process.stderr.write(`${text}\n`),
};

/**
 * Prints results for people (text) or scripts (one JSON object per line) on stdout; errors are one
 * sentence each on stderr, in both modes, with their sizes written for people.
 */
export class Output {
  /** Errors already printed: one failure shared by several items (a lost server) is told once. */
  private readonly told = new WeakSet<object>();

  constructor(
    readonly json: boolean,
    private readonly lines: Lines = processLines,
  ) {}

  reply(text: string, prefix = ''): void {
    if (this.json) this.line({ reply: text });
    else this.line(`${prefix}${text}`);
  }

  uploaded(result: UploadResult): void {
    const skipped = result.skipped;
    if (this.json) {
      const { file, savedAs, bytes, sha256, resumedFrom, opened } = result;
      this.line({ file, savedAs, bytes, sha256, resumedFrom, ...(skipped ? { skipped: true } : {}), ...(opened ? { opened } : {}) });
    } else if (skipped) {
      this.line(`${result.file} → ${result.savedAs}  ${formatBytes(result.bytes)}  already there, skipped`);
    } else {
      const resumed = result.resumedFrom > 0 ? ` (resumed at ${formatBytes(result.resumedFrom)})` : '';
      this.line(`${result.file} → ${result.savedAs}  ${formatBytes(result.bytes)}${resumed}  sha256 ${result.sha256}`);
    }
    if (result.opened) this.describeOpen(result.savedAs, result.opened);
  }

  /** The outcome of `ferry open NAME`. */
  opened(name: string, result: OpenResultInfo): void {
    if (this.json) this.line({ name, opened: result });
    this.describeOpen(name, result);
  }

  private describeOpen(name: string, result: OpenResultInfo): void {
    if (result.opened) {
      if (!this.json) this.line(`${name} opened with ${result.app} (pid ${result.pid}, ${result.mime ?? result.kind})`);
    } else {
      this.problem(`${name} was not opened: ${result.message ?? 'no reason given.'}`);
    }
  }

  /**
   * A failure of one item. `label` names it (a file, a name) on stderr unless the sentence starts
   * with it; an error shared with items reported before is only pointed back to.
   */
  failed(subject: Record<string, unknown>, err: unknown, label?: string): void {
    if (this.json) this.line({ ...subject, error: errorJson(err) });
    if (typeof err === 'object' && err !== null) {
      if (this.told.has(err)) {
        if (label !== undefined) this.problem(`${label}: not sent either, for the same reason.`);
        return;
      }
      this.told.add(err);
    }
    const text = sentence(err);
    this.problem(label === undefined || text.startsWith(label) ? text : `${label}: ${text}`);
  }

  /** True when this error was already printed (it failed several items, or the whole client). */
  alreadyTold(err: unknown): boolean {
    return typeof err === 'object' && err !== null && this.told.has(err);
  }

  /** A JSON object in JSON mode; nothing for people. */
  data(value: object): void {
    if (this.json) this.line(value);
  }

  /** A sentence on stderr, in both modes. */
  problem(text: string): void {
    this.lines.err(`ferry: ${humanSizes(text)}`);
  }

  /** Text for people only; nothing in JSON mode. */
  info(text: string): void {
    if (!this.json) this.lines.out(text);
  }

  /** A JSON object in JSON mode, else the text. */
  record(value: object, text: string): void {
    this.line(this.json ? value : text);
  }

  private line(value: string | object): void {
    this.lines.out(typeof value === 'string' ? value : JSON.stringify(value));
  }
}
