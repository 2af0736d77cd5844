import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { parse as parseWords } from 'shell-quote';
import { Option, type Command } from 'commander';
import type { UploadOptions } from '../client.js';
import { addClientOptions, openClient, type CommonClientOptions } from './client-options.js';
import { explainLocalFailure, folderSupport, planUploads } from './files.js';
import { errorJson, Output, type Lines } from './output.js';
import { parseSize } from './units.js';

interface ConnectOptions extends CommonClientOptions {
  limitRate?: number;
}

const HELP = `Type a line to send it as a message. Commands:
  send file                         then type the path of a file to upload (as the original client did)
  /send PATH... [--open] [--fresh]  upload files or folders; quote paths with spaces ("my photo.png")
  /open NAME...                     ask the server to open files it stored earlier
  /status                           the connection, and what is waiting for the server's confirmation
  /help                             this text
  exit                              leave once everything sent is confirmed (Ctrl-C on an empty line: leave now)`;

export function registerConnect(program: Command): void {
  const command = program
    .command('connect')
    .description('An interactive session: every line is a message; `send file`, /send PATH, /open NAME, /status, /help, exit.')
    .addOption(new Option('--limit-rate <rate>', 'most bytes per second to send for each upload, like 500K or 50M').argParser(parseSize));
  addClientOptions(command, undefined).action(async (options: ConnectOptions) => {
    process.exitCode = await interactive(options);
  });
}

/** Parsed arguments of a `/send` or `/open` line, or why they cannot be read. */
export type Arguments = { words: string[]; flags: Set<string> } | { error: string };

/**
 * Splits what follows a command like a shell would (quotes, backslashes, $VARIABLES, a leading ~),
 * without running anything: globs stay literal and shell operators are refused.
 */
export function parseArguments(command: string, text: string, known: readonly string[]): Arguments {
  const unmatched = unmatchedQuote(text);
  if (unmatched) return { error: `${command}: a ${unmatched} quote is not closed; close it, or put a backslash before it.` };
  const escaped = process.platform === 'win32' ? text.replace(/\\/g, '\\\\') : text;
  const words: string[] = [];
  const flags = new Set<string>();
  let optionsEnd = false;
  for (const entry of parseWords(escaped, (key) => process.env[key] ?? '')) {
    let word: string;
    if (typeof entry === 'string') word = entry;
    else if ('comment' in entry) return { error: `${command}: “#” starts a comment; quote the path that contains it.` };
    else if ('pattern' in entry) word = entry.pattern;
    else return { error: `${command}: “${entry.op}” is not understood here; quote the path that contains it.` };
    if (!optionsEnd && word === '--') {
      optionsEnd = true;
    } else if (!optionsEnd && word.startsWith('--')) {
      if (!known.includes(word)) {
        const hint = word === '--limit-rate' ? 'start `ferry connect --limit-rate RATE` to limit every upload' : 'type /help for what it takes';
        return { error: `${command} has no option ${word}; ${hint}.` };
      }
      flags.add(word);
    } else {
      words.push(word === '~' ? os.homedir() : word.startsWith('~/') ? path.join(os.homedir(), word.slice(2)) : word);
    }
  }
  return { words, flags };
}

/** The kind of quote left open in `text`, if any. */
function unmatchedQuote(text: string): 'single' | 'double' | undefined {
  let open: "'" | '"' | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (open === "'") {
      if (c === "'") open = undefined;
    } else if (c === '\\' && process.platform !== 'win32') {
      i++;
    } else if (open === '"') {
      if (c === '"') open = undefined;
    } else if (c === "'" || c === '"') {
      open = c;
    }
  }
  return open === "'" ? 'single' : open === '"' ? 'double' : undefined;
}

/**
 * Lines for a terminal with a prompt: each is written above the prompt, which readline then draws
 * again with whatever was being typed, so nothing printed breaks into the line being edited.
 */
class PromptLines implements Lines {
  closed = false;

  constructor(
    private readonly rl: readline.Interface,
    private readonly tty: boolean,
  ) {}

  out(text: string): void {
    this.above(process.stdout, text);
  }

  err(text: string): void {
    this.above(process.stderr, text);
  }

  private above(stream: NodeJS.WriteStream, text: string): void {
    if (!this.tty || this.closed) {
      stream.write(`${text}\n`);
      return;
    }
    // Back to where the prompt starts (the typed line may wrap), clear it, print, and leave as many
    // blank rows as readline will move up when it redraws the prompt and the typed line below.
    const { rows } = this.rl.getCursorPos();
    readline.moveCursor(process.stdout, 0, -rows);
    readline.cursorTo(process.stdout, 0);
    readline.clearScreenDown(process.stdout);
    stream.write(`${text}\n${'\n'.repeat(rows)}`);
    this.rl.prompt(true);
  }
}

type PendingKind = 'message' | 'upload' | 'open';

/** How long the end of piped input waits for a server that cannot be reached, before leaving. */
const PIPED_OUTAGE_MS = 10_000;

async function interactive(options: ConnectOptions): Promise<number> {
  const tty = process.stdin.isTTY === true && process.stdout.isTTY === true;
  const where = `${options.host}:${options.port}`;
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: tty, prompt: 'ferry (connecting)> ' });
  const lines = new PromptLines(rl, tty);
  const out = new Output(options.json === true, lines);
  const { client, finish } = await openClient(options, {
    ...(options.limitRate ? { rateLimit: options.limitRate } : {}),
    notify: (text) => lines.err(`ferry: ${text}`),
    announceFirst: tty,
  });
  const pending = new Map<Promise<void>, PendingKind>();
  let failures = 0;
  let awaitingPath = false;
  let session: string | undefined;
  /** What the upload being sent shows in the prompt. */
  let sending: string | undefined;
  let lastPromptAt = 0;
  /** Set once the user asked to leave; work that fails from then on is counted, not reported one by one. */
  let leaving: 'wait' | 'now' | undefined;
  const unconfirmed: PendingKind[] = [];
  let typedExit = false;
  /** Left with Ctrl-C. */
  let interrupted = false;

  const promptText = () => {
    const snapshot = client.actor.getSnapshot();
    const base = awaitingPath
      ? 'path> '
      : snapshot.matches({ online: 'connected' })
        ? 'ferry> '
        : snapshot.matches('retrying') || snapshot.context.attempt > 0
          ? 'ferry (disconnected, retrying)> '
          : 'ferry (connecting)> ';
    return sending ? `[${sending}] ${base}` : base;
  };
  const prompt = () => {
    // Once leaving, the prompt stays away: what is still printed goes below the last typed line.
    if (!tty || lines.closed || leaving !== undefined) return;
    rl.setPrompt(promptText());
    rl.prompt(true);
  };
  client.actor.on('connected', (e) => {
    session = e.session;
    prompt();
  });
  client.actor.on('retrying', () => prompt());

  const track = (work: Promise<void>, kind: PendingKind) => {
    const tracked = work.finally(() => {
      pending.delete(tracked);
      prompt();
    });
    pending.set(tracked, kind);
  };
  /** A failure of one item; once leaving, only counted (and given in JSON), then summed up in one line. */
  const failed = (subject: Record<string, unknown>, err: unknown, kind: PendingKind, label?: string) => {
    if (leaving !== undefined && (err as { code?: string })?.code === 'E_CLOSED') {
      unconfirmed.push(kind);
      out.data({ ...subject, error: errorJson(err) });
      return;
    }
    failures++;
    out.failed(subject, err, label);
  };

  const upload = (file: string, name: string | undefined, flags: Set<string>) => {
    const base = path.basename(file);
    const uploadOptions: UploadOptions = {
      onProgress: (sent, total) => {
        if (!tty) return;
        sending = `${base.slice(0, 20)} ${total > 0 ? Math.floor((sent * 100) / total) : 100}%`;
        // A fast upload reports often; the prompt is drawn again at most ten times a second.
        const now = performance.now();
        if (now - lastPromptAt >= 100 || sent === total) {
          lastPromptAt = now;
          prompt();
        }
      },
      ...(name !== undefined ? { name } : {}),
      ...(flags.has('--open') ? { open: true } : {}),
      ...(flags.has('--fresh') ? { fresh: true } : {}),
    };
    track(
      client.upload(file, uploadOptions).then(
        (result) => {
          sending = undefined;
          out.uploaded(result);
          if (result.opened && !result.opened.opened) failures++;
        },
        async (err: unknown) => {
          sending = undefined;
          failed({ file }, await explainLocalFailure(file, err), 'upload', file);
        },
      ),
      'upload',
    );
  };
  /** Paths are checked (and folders walked) one command after another, so uploads keep the order typed. */
  let planning = Promise.resolve();
  const sendPaths = (paths: string[], flags: Set<string>) => {
    planning = planning.then(async () => {
      for (const item of await planUploads(paths, { ...folderSupport(options.legacy === true), notice: (text) => out.problem(text) })) {
        if (item.kind === 'error') {
          failures++;
          out.failed({ file: item.file }, item.error, item.file);
        } else {
          upload(item.file, item.name, flags);
        }
      }
    });
    // Tracked too, so that leaving waits for the uploads it is about to hand over.
    track(planning, 'upload');
  };
  const status = () => {
    const snapshot = client.actor.getSnapshot();
    const state = snapshot.matches({ online: 'connected' })
      ? 'connected'
      : snapshot.matches('retrying')
        ? `disconnected, retrying (attempt ${snapshot.context.attempt})`
        : snapshot.matches({ online: 'connecting' })
          ? 'connecting'
          : snapshot.matches({ online: 'closing' })
            ? 'closing'
            : 'disconnected';
    const waiting = pending.size;
    out.record(
      { status: { state, server: where, ...(session && state === 'connected' ? { session } : {}), waiting } },
      `state: ${state}; server: ${where}${session && state === 'connected' ? ` (${session})` : ''}; waiting for confirmation: ${waiting}`,
    );
  };

  /** A command that cannot be carried out as typed: said at once, and counted, as piped input has no one to see it. */
  const mistake = (text: string) => {
    failures++;
    out.problem(text);
  };
  const handle = (raw: string) => {
    const line = raw.replace(/\r$/, '');
    if (awaitingPath) {
      awaitingPath = false;
      // As in the original client, the whole line is the path.
      const file = line.trim();
      if (file) sendPaths([file === '~' || file.startsWith('~/') ? path.join(os.homedir(), file.slice(1)) : file], new Set());
      return;
    }
    const [command = '', rest = ''] = /^(\S*)\s*(.*)$/s.exec(line)!.slice(1);
    if (line.trim() === 'exit' || line.trim() === '/exit' || line.trim() === '/quit') {
      typedExit = true;
      startLeaving('wait');
    } else if (line === 'send file') {
      awaitingPath = true;
    } else if (command === '/send') {
      const args = parseArguments('/send', rest, ['--open', '--fresh']);
      if ('error' in args) mistake(args.error);
      else if (args.words.length === 0) mistake('/send needs a path: /send PATH... [--open] [--fresh].');
      else sendPaths(args.words, args.flags);
    } else if (command === '/open') {
      const args = parseArguments('/open', rest, []);
      if ('error' in args) mistake(args.error);
      else if (args.words.length === 0) mistake('/open needs the name a file was stored under: /open NAME....');
      for (const name of 'words' in args ? args.words : []) {
        track(
          client.open(name).then(
            (result) => {
              out.opened(name, result);
              if (!result.opened) failures++;
            },
            (err: unknown) => failed({ name }, err, 'open', name),
          ),
          'open',
        );
      }
    } else if (line.trim() === '/status') {
      status();
    } else if (line.trim() === '/help') {
      if (out.json) lines.err(HELP);
      else out.info(HELP);
    } else if (line.length > 0) {
      const text = line;
      track(
        client.message(text).then(
          (reply) => out.reply(reply, tty ? '< ' : ''),
          (err: unknown) => failed({ message: text }, err, 'message'),
        ),
        'message',
      );
    }
  };

  let askedToLeave: (how: 'wait' | 'now') => void = () => undefined;
  const asked = new Promise<'wait' | 'now'>((resolve) => (askedToLeave = resolve));
  let askedToLeaveNow: () => void = () => undefined;
  const leavingNow = new Promise<void>((resolve) => (askedToLeaveNow = resolve));
  const startLeaving = (how: 'wait' | 'now') => {
    if (leaving === 'now' || leaving === how) return;
    leaving = how;
    askedToLeave(how);
    if (how === 'now') askedToLeaveNow();
  };

  rl.on('line', (raw) => {
    if (leaving !== undefined) return;
    handle(raw);
    prompt();
  });
  rl.on('SIGINT', () => {
    // Ctrl-C clears a typed line, as in a shell; on an empty line it leaves at once.
    if (rl.line.length > 0 && leaving === undefined) {
      rl.write(null, { ctrl: true, name: 'e' });
      rl.write(null, { ctrl: true, name: 'u' });
      return;
    }
    interrupted = true;
    // Off the prompt's line, as a shell does.
    if (leaving === undefined) process.stdout.write('\n');
    startLeaving('now');
  });
  rl.on('close', () => {
    lines.closed = true;
    startLeaving('wait');
  });
  // A client that ends by itself (a TLS mismatch, a wrong token, --retry-for used up) ends the session.
  void client.connect().catch((err: unknown) => {
    // Closed on the way out: what that left unconfirmed is summed up below.
    if (leaving !== undefined && (err as { code?: string })?.code === 'E_CLOSED') return;
    if (!out.alreadyTold(err)) {
      failures++;
      out.failed({ server: where }, err);
    }
    startLeaving('now');
  });
  if (tty) {
    out.info('Type /help for commands.');
    prompt();
  }

  let how = await asked;
  // At a terminal, leaving waits only while the server is there: whoever typed `exit` wants out.
  // Piped input is a script's: its end waits through a short outage too, but not forever.
  const patient = !tty;
  const snapshot = client.actor.getSnapshot();
  if (how === 'wait' && pending.size > 0 && snapshot.status === 'active' && (patient || !snapshot.matches('retrying'))) {
    if (tty) {
      rl.setPrompt('');
      lines.err(`ferry: waiting for the server to confirm ${items(pending.size)} (Ctrl-C to leave now)`);
    }
    let outage: ReturnType<typeof setTimeout> | undefined;
    const lost = new Promise<void>((resolve) => {
      const lose = () => (patient ? (outage ??= setTimeout(resolve, PIPED_OUTAGE_MS)) : resolve());
      client.actor.on('retrying', lose);
      client.actor.on('connected', () => {
        clearTimeout(outage);
        outage = undefined;
      });
      if (snapshot.matches('retrying') || (snapshot.context.attempt > 0 && !snapshot.matches({ online: 'connected' }))) lose();
    });
    // Once the terminal is let go of (end of input), Ctrl-C is a signal again.
    const onSignal = () => {
      interrupted = true;
      startLeaving('now');
    };
    process.once('SIGINT', onSignal);
    const settled = (async () => {
      while (pending.size > 0) await Promise.all([...pending.keys()]);
    })();
    await Promise.race([settled, lost, leavingNow]);
    clearTimeout(outage);
    process.off('SIGINT', onSignal);
    if (pending.size > 0) how = 'now';
  }
  if (!lines.closed) rl.close();
  lines.closed = true;
  // Typing `exit` ends the session as the original client did: an original server is told `exit` too.
  await finish({ sayExit: typedExit && how === 'wait' && options.legacy === true });
  while (pending.size > 0) await Promise.all([...pending.keys()]);
  if (unconfirmed.length > 0) {
    out.problem(`left before the server confirmed ${summarise(unconfirmed)}; they may not have arrived, so send them again if they matter.`);
    failures++;
  }
  if (interrupted) return 130;
  return failures > 0 ? 1 : 0;
}

function items(count: number): string {
  return count === 1 ? '1 item' : `${count} items`;
}

/** "2 messages and 1 upload". */
function summarise(kinds: PendingKind[]): string {
  const counts = new Map<PendingKind, number>();
  for (const kind of kinds) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  const names: Record<PendingKind, [string, string]> = { message: ['message', 'messages'], upload: ['upload', 'uploads'], open: ['open request', 'open requests'] };
  const parts = [...counts].map(([kind, n]) => `${n} ${names[kind][n === 1 ? 0 : 1]}`);
  return parts.length > 1 ? `${parts.slice(0, -1).join(', ')} and ${parts[parts.length - 1]}` : parts[0]!;
}
