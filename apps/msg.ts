import type { Command } from 'commander';
import { addClientOptions, openClient, type CommonClientOptions } from './client-options.js';
import { Output } from './output.js';

export function registerMsg(program: Command): void {
  const command = program
    .command('msg')
    .description('Send each TEXT as a message and print the server\u2019s reply to each.')
    .argument('<text...>', 'messages to send, one per argument');
  addClientOptions(command, '10s').action(async (texts: string[], options: CommonClientOptions) => {
    process.exitCode = await sendMessages(texts, options);
  });
}

async function sendMessages(texts: string[], options: CommonClientOptions): Promise<number> {
  const out = new Output(options.json === true);
  const { client, finish } = await openClient(options);
  // Pipelined: every message goes out at once; replies are printed in the order given.
  const results = await Promise.allSettled(texts.map((text) => client.message(text)));
  let failed = 0;
  results.forEach((result, i) => {
    if (result.status === 'fulfilled') out.reply(result.value);
    else {
      failed++;
      out.failed({ message: texts[i] }, result.reason);
    }
  });
  await finish();
  return failed > 0 ? 1 : 0;
}
