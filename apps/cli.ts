#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { registerConnect } from './connect.js';
import { registerDiagram } from './diagram.js';
import { registerMsg } from './msg.js';
import { registerOpen } from './open.js';
import { registerSend } from './send.js';
import { registerServe } from './serve.js';
import { sentence } from './output.js';
import { UsageError } from './settings.js';

const program = new Command()
  .name('ferry')
  .description('Send messages and files from one computer to another.')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

registerServe(program);
registerMsg(program);
registerSend(program);
registerOpen(program);
registerConnect(program);
registerDiagram(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and version are successes; every other commander error is a usage mistake.
    process.exitCode = err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help' ? 0 : 2;
  } else if (err instanceof UsageError) {
    process.stderr.write(`ferry: ${err.message}\n`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`ferry: ${sentence(err)}\n`);
    if (process.env.LOG_LEVEL === 'debug' && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.exitCode = 1;
  }
}
