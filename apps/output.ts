import { FerryError } from '../index.js';
import type { OpenResultInfo, UploadResult } from '../index.js';
import { formatBytes } from './units.js';

/** One sentence for a person, whatever was thrown. */
export function sentence(err: unknown): string {
  if (err instanceof FerryError) return err.message;
  if (err instanceof Error) return err.message.endsWith('.') ? err.message : `${err.message}.`;
  return String(err);
}

export function errorJson(err: unknown): { code: string; message: string } {
  return err instanceof FerryError ? err.toJSON() : { code: 'E_INTERNAL', message: sentence(err) };
}

/** Prints results for people (text) or scripts (one JSON object per line) on stdout; errors on stderr. */
export class Output {
  constructor(private readonly json: boolean) {}

  reply(text: string, prefix = ''): void {
    if (this.json) this.line({ reply: text });
    else this.line(`${prefix}${text}`);
  }

  uploaded(result: UploadResult): void {
    if (this.json) {
      const { file, savedAs, bytes, sha256, resumedFrom, opened } = result;
      this.line({ file, savedAs, bytes, sha256, resumedFrom, ...(opened ? { opened } : {}) });
    } else {
      this.line(`${result.file} → ${result.savedAs}  ${formatBytes(result.bytes)}  sha256 ${result.sha256}`);
      if (result.opened) this.describeOpen(result.savedAs, result.opened);
    }
    if (result.opened && !result.opened.opened) process.stderr.write(`ferry: ${result.savedAs} was not opened: ${result.opened.message ?? 'no reason given'}\n`);
  }

  /** The outcome of `ferry open NAME`. */
  opened(name: string, result: OpenResultInfo): void {
    if (this.json) this.line({ name, opened: result });
    else this.describeOpen(name, result);
    if (!result.opened) process.stderr.write(`ferry: ${name} was not opened: ${result.message ?? 'no reason given'}\n`);
  }

  private describeOpen(name: string, result: OpenResultInfo): void {
    if (result.opened) this.line(`${name} opened with ${result.app} (pid ${result.pid}, ${result.mime ?? result.kind})`);
  }

  failed(subject: Record<string, unknown>, err: unknown): void {
    if (this.json) this.line({ ...subject, error: errorJson(err) });
    process.stderr.write(`ferry: ${sentence(err)}\n`);
  }

  info(text: string): void {
    if (!this.json) this.line(text);
  }

  private line(value: string | object): void {
    process.stdout.write((typeof value === 'string' ? value : JSON.stringify(value)) + '\n');
  }
}
