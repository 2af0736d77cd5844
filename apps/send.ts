import { Option, type Command } from 'commander';
import type { UploadOptions, UploadResult } from '../client.js';
import { FerryError } from '../transport/errors.js';
import { RESUME_MIN_BYTES } from '../machines/actors/client-link.js';
import { addClientOptions, openClient, type CommonClientOptions } from './client-options.js';
import { explainLocalFailure, folderSupport, planUploads, type Planned, type Sendable } from './files.js';
import { Output } from './output.js';
import { UploadProgress } from './progress.js';
import { formatBytes, parseSize } from './units.js';

interface SendOptions extends CommonClientOptions {
  limitRate?: number;
  open?: boolean;
  fresh?: boolean;
}

/** Uploads handed to the client at a time: enough to keep the next one offered early, never a whole tree. */
const WINDOW = 16;

export function registerSend(program: Command): void {
  const command = program
    .command('send')
    .description('Upload each FILE (or every file in a FOLDER) in order; print the name the server stored it under, its size and SHA-256.')
    .argument('<path...>', 'files or folders to upload')
    .addOption(new Option('--limit-rate <rate>', 'most bytes per second to send, like 500K or 50M').argParser(parseSize))
    .option('--open', 'ask the server to open each file (image viewer, media player) once stored')
    .option('--fresh', 'store a new copy even if the server already has this file under this name');
  addClientOptions(command, '30s').action(async (paths: string[], options: SendOptions) => {
    process.exitCode = await sendFiles(paths, options);
  });
}

/** What became of one planned file, once known. */
type Outcome = { ok: true; result: UploadResult } | { ok: false; error: unknown };

async function sendFiles(paths: string[], options: SendOptions): Promise<number> {
  const out = new Output(options.json === true);
  const planned = await planUploads(paths, { ...folderSupport(options.legacy === true), notice: (text) => out.problem(text) });
  let failed = 0;
  if (!planned.some((p) => p.kind === 'file')) {
    for (const p of planned) if (p.kind === 'error') fail(out, p.file, p.error);
    return planned.length > 0 ? 1 : 0;
  }

  const progress = new UploadProgress();
  const { client, finish } = await openClient(options, {
    ...(options.limitRate ? { rateLimit: options.limitRate } : {}),
    notify: (text) => progress.print(() => process.stderr.write(`ferry: ${text}\n`)),
  });
  /** Bytes of each file the server has been sent so far, as last reported. */
  const sent = new Map<Planned, number>();
  const outcomes = new Map<Planned, Promise<Outcome>>();
  let next = 0;
  /** Hands over the next files, up to the window; each outcome is caught at once, so none goes unhandled. */
  const handOver = () => {
    for (; next < planned.length && outcomes.size < WINDOW; next++) {
      const item = planned[next]!;
      if (item.kind === 'error') {
        outcomes.set(item, Promise.resolve({ ok: false, error: item.error }));
        continue;
      }
      outcomes.set(
        item,
        upload(item).then(
          (result): Outcome => ({ ok: true, result }),
          async (error: unknown): Promise<Outcome> => ({ ok: false, error: await explainLocalFailure(item.file, error) }),
        ),
      );
    }
  };
  const upload = (item: Sendable): Promise<UploadResult> => {
    const uploadOptions: UploadOptions = {
      onProgress: (bytes, total) => {
        sent.set(item, bytes);
        progress.update(item.file, bytes, total);
      },
      ...(item.name !== undefined ? { name: item.name } : {}),
      ...(options.open ? { open: true } : {}),
      ...(options.fresh ? { fresh: true } : {}),
    };
    return client.upload(item.file, uploadOptions);
  };

  // Ctrl-C: say where it stopped and that running the same command again picks up from there.
  let at = 0;
  const interrupted = () => {
    progress.stop();
    const item = planned[at];
    const rest = planned.slice(at + 1).filter((p) => p.kind === 'file').length;
    const after = rest > 0 ? `, ${rest} more file${rest === 1 ? '' : 's'} after it` : '';
    const again = item?.kind === 'file' && item.size >= RESUME_MIN_BYTES ? 'run the same command again to resume from there' : 'run the same command again to send it';
    // Progress is reported in steps, so more may have gone out than the last report says.
    const where = item?.kind === 'file' ? `while sending ${item.file} (at least ${formatBytes(sent.get(item) ?? 0)} of ${formatBytes(item.size)} sent${after})` : 'before the last files were sent';
    const error = new FerryError('E_CLOSED', `Interrupted ${where}; ${again}.`);
    if (out.json) for (const p of planned.slice(at)) out.failed({ file: p.file }, p.kind === 'error' ? p.error : error);
    else out.problem(error.message);
    // Exit once what was printed has been handed to the streams.
    process.stdout.write('', () => process.stderr.write('', () => process.exit(130)));
  };
  process.once('SIGINT', interrupted);

  // The client sends the files one after another on one connection; each result is printed, in
  // order, as soon as it is known.
  handOver();
  for (; at < planned.length; at++) {
    const item = planned[at]!;
    const outcome = await outcomes.get(item)!;
    outcomes.delete(item);
    handOver();
    progress.done(item.file);
    progress.print(() => {
      if (outcome.ok) {
        out.uploaded(outcome.result);
        // An open that was asked for and did not happen counts as a failure, even though the file is stored.
        if (outcome.result.opened && !outcome.result.opened.opened) failed++;
      } else {
        failed++;
        fail(out, item.file, outcome.error);
      }
    });
  }
  process.off('SIGINT', interrupted);
  progress.stop();
  await finish();
  return failed > 0 ? 1 : 0;
}

function fail(out: Output, file: string, error: unknown): void {
  out.failed({ file }, error, file);
}
