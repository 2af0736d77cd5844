import type { Command } from 'commander';
import { addClientOptions, openClient, type CommonClientOptions } from './client-options.js';
import { Output } from './output.js';

export function registerOpen(program: Command): void {
  const command = program
    .command('open')
    .description('Ask the server to open files already in its upload folder, by the names it stored them under.')
    .argument('<name...>', 'stored file names, as `ferry send` reported them');
  addClientOptions(command, '10s').action(async (names: string[], options: CommonClientOptions) => {
    process.exitCode = await openFiles(names, options);
  });
}

async function openFiles(names: string[], options: CommonClientOptions): Promise<number> {
  const out = new Output(options.json === true);
  const { client, finish } = await openClient(options);
  const results = await Promise.allSettled(names.map((name) => client.open(name)));
  let failed = 0;
  results.forEach((result, i) => {
    const name = names[i]!;
    if (result.status === 'rejected') {
      failed++;
      out.failed({ name }, result.reason, name);
      return;
    }
    out.opened(name, result.value);
    if (!result.value.opened) failed++;
  });
  await finish();
  return failed > 0 ? 1 : 0;
}
