import readline from 'node:readline';
import type { Command } from 'commander';
import type { FerryClient } from '../index.js';
import { addClientOptions, openClient, type CommonClientOptions } from './client-options.js';
import { Output } from './output.js';
import { UploadProgress } from './progress.js';

const HELP = `Type a line to send it as a message. Commands:
  send file     then type the path of a file to upload (as the original client did)
  /send PATH [--open]   upload a file (and ask the server to open it)
  /open NAME    ask the server to open a file it stored earlier
  /status       show the connection state and what is waiting for confirmation
  /help         this text
  exit          leave (waits for everything sent to be confirmed)`;

export function registerConnect(program: Command): void {
  const command = program
    .command('connect')
    .description('An interactive session: every line is a message; `send file`, /send PATH, /status, /help, exit.');
  addClientOptions(command, undefined).action(async (options: CommonClientOptions) => {
    process.exitCode = await interactive(options);
  });
}

async function interactive(options: CommonClientOptions): Promise<number> {
  const out = new Output(options.json === true);
  const tty = process.stdin.isTTY === true;
  const { client, finish } = await openClient(options, { quietWaiting: tty });
  const progress = new UploadProgress();
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: tty });
  const pending = new Set<Promise<void>>();
  let failures = 0;
  let awaitingPath = false;

  const prompt = () => {
    if (!tty) return;
    const state = client.actor.getSnapshot();
    rl.setPrompt(state.matches('retrying') ? 'ferry (disconnected, retrying)> ' : awaitingPath ? 'path> ' : 'ferry> ');
    rl.prompt(true);
  };
  const track = (work: Promise<void>) => {
    const tracked = work.finally(() => {
      pending.delete(tracked);
      prompt();
    });
    pending.add(tracked);
  };
  const upload = (file: string, open = false) =>
    track(
      client.upload(file, { onProgress: (sent, total) => progress.update(file, sent, total), ...(open ? { open: true } : {}) }).then(
        (result) => {
          progress.done(file);
          out.uploaded(result);
          if (result.opened && !result.opened.opened) failures++;
        },
        (err: unknown) => {
          progress.done(file);
          failures++;
          out.failed({ file }, err);
        },
      ),
    );

  if (tty) {
    client.actor.on('connected', (e) => {
      out.info(`connected to ${options.host}:${options.port} (${e.session})`);
      prompt();
    });
    client.actor.on('retrying', (e) => {
      out.info(`disconnected: ${e.error.message} Next attempt in ${(e.delayMs / 1000).toFixed(1)} s.`);
      prompt();
    });
    out.info('Type /help for commands.');
  }
  void client.connect().catch(() => rl.close());

  let leaving = false;
  rl.on('line', (raw) => {
    if (leaving) return;
    const line = raw.replace(/\r$/, '');
    if (awaitingPath) {
      awaitingPath = false;
      if (line.trim()) upload(line.trim());
    } else if (line === 'exit') {
      leaving = true;
      rl.close();
      return;
    } else if (line === 'send file') {
      awaitingPath = true;
    } else if (line.startsWith('/send ')) {
      const words = line.slice('/send '.length).trim();
      const open = / --open$/.test(words);
      upload(open ? words.slice(0, -' --open'.length).trim() : words, open);
    } else if (line.startsWith('/open ')) {
      const name = line.slice('/open '.length).trim();
      track(
        client.open(name).then(
          (result) => {
            out.opened(name, result);
            if (!result.opened) failures++;
          },
          (err: unknown) => {
            failures++;
            out.failed({ name }, err);
          },
        ),
      );
    } else if (line === '/status') {
      status(client, out, pending.size);
    } else if (line === '/help') {
      out.info(HELP);
    } else if (line.length > 0) {
      const text = line;
      track(
        client.message(text).then(
          (reply) => out.reply(reply, tty ? '< ' : ''),
          (err: unknown) => {
            failures++;
            out.failed({ message: text }, err);
          },
        ),
      );
    }
    prompt();
  });

  await new Promise<void>((resolve) => rl.once('close', resolve));
  // Everything handed over is confirmed or reported before leaving.
  while (pending.size > 0) await Promise.all([...pending]);
  progress.stop();
  // Typing `exit` ends the session as the original client did: an original server is told `exit` too.
  await finish({ sayExit: leaving && options.legacy === true });
  return failures > 0 ? 1 : 0;
}

function status(client: FerryClient, out: Output, waiting: number): void {
  const snapshot = client.actor.getSnapshot();
  const state = snapshot.matches({ online: 'connected' })
    ? 'connected'
    : snapshot.matches('retrying')
      ? `disconnected, retrying (attempt ${snapshot.context.attempt})`
      : snapshot.matches({ online: 'connecting' })
        ? 'connecting'
        : 'disconnected';
  out.info(`state: ${state}; waiting for confirmation: ${waiting}`);
}
