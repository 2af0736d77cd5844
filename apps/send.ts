import { Option, type Command } from 'commander';
import { addClientOptions, openClient, type CommonClientOptions } from './client-options.js';
import { Output } from './output.js';
import { UploadProgress } from './progress.js';
import { parseSize } from './units.js';

interface SendOptions extends CommonClientOptions {
  limitRate?: number;
  open?: boolean;
}

export function registerSend(program: Command): void {
  const command = program
    .command('send')
    .description('Upload each FILE in order; print the name the server stored it under, its size and SHA-256.')
    .argument('<file...>', 'files to upload')
    .addOption(new Option('--limit-rate <rate>', 'most bytes per second to send, like 500K or 50M').argParser(parseSize))
    .option('--open', 'ask the server to open each file (image viewer, media player) once stored');
  addClientOptions(command, '1m').action(async (files: string[], options: SendOptions) => {
    process.exitCode = await sendFiles(files, options);
  });
}

async function sendFiles(files: string[], options: SendOptions): Promise<number> {
  const out = new Output(options.json === true);
  const { client, finish } = await openClient(options, options.limitRate ? { rateLimit: options.limitRate } : {});
  const progress = new UploadProgress();
  // All files are handed over at once; the client sends them one after another on one connection,
  // and each result is printed, in order, as soon as it is confirmed.
  const uploads = files.map((file) =>
    client.upload(file, { onProgress: (sent, total) => progress.update(file, sent, total), ...(options.open ? { open: true } : {}) }),
  );
  let failed = 0;
  for (const [i, upload] of uploads.entries()) {
    const file = files[i]!;
    try {
      const result = await upload;
      progress.done(file);
      out.uploaded(result);
      // An open that was asked for and did not happen counts as a failure, even though the file is stored.
      if (result.opened && !result.opened.opened) failed++;
    } catch (err) {
      progress.done(file);
      failed++;
      out.failed({ file }, err);
    }
  }
  progress.stop();
  await finish();
  return failed > 0 ? 1 : 0;
}

