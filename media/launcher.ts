import { spawn } from 'node:child_process';
import { parse } from 'shell-quote';
import { FerryError } from '../transport/errors.js';
import type { MediaKind } from './sniff.js';

/** The command line that opens each kind of media; `{file}` stands for the stored file's path. */
export type MediaApps = Record<MediaKind, string>;

/** Windows: Paint and Windows Media Player, as the original tool; elsewhere the desktop's default app. */
export function defaultMediaApps(platform: NodeJS.Platform = process.platform): MediaApps {
  if (platform === 'win32') {
    const player = '"C:/Program Files/Windows Media Player/wmplayer.exe" {file}';
    return { image: 'mspaint {file}', audio: player, video: player };
  }
  const opener = platform === 'darwin' ? 'open' : 'xdg-open';
  return { image: opener, audio: opener, video: opener };
}

export interface Command {
  command: string;
  args: string[];
}

/**
 * Splits CMD into words the way a shell would (quotes and escapes), but never runs a shell:
 * operators, globs, comments and redirections are refused, and `$VARS` stay literal. The file's
 * path replaces `{file}` wherever it appears, or is appended as the last argument.
 */
export function buildCommand(template: string, file: string): Command {
  const words: string[] = [];
  for (const entry of parse(template, (name) => `$${name}`)) {
    if (typeof entry !== 'string') {
      throw new FerryError('E_LAUNCH_FAILED', `The app command "${template}" contains shell syntax; give a program and its arguments only.`);
    }
    words.push(entry);
  }
  if (words.length === 0) throw new FerryError('E_LAUNCH_FAILED', 'The app command is empty; set one with --image-app, --audio-app or --video-app.');
  const placed = words.some((word) => word.includes('{file}'));
  const args = words.slice(1).map((word) => word.split('{file}').join(file));
  if (!placed) args.push(file);
  return { command: words[0]!.split('{file}').join(file), args };
}

export interface Launched {
  /** The program that was started. */
  app: string;
  pid: number;
}

/**
 * Starts the app detached, without waiting for it to exit: success means the process was
 * spawned. A missing program is E_APP_NOT_FOUND; any other failure to start is E_LAUNCH_FAILED.
 */
export function launch(template: string, file: string): Promise<Launched> {
  let command: Command;
  try {
    command = buildCommand(template, file);
  } catch (err) {
    return Promise.reject(err);
  }
  return new Promise((resolve, reject) => {
    const child = spawn(command.command, command.args, { detached: true, stdio: 'ignore', shell: false, windowsHide: false });
    child.once('spawn', () => {
      child.unref();
      resolve({ app: command.command, pid: child.pid ?? 0 });
    });
    child.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') {
        reject(new FerryError('E_APP_NOT_FOUND', `The app "${command.command}" is not installed, not on the PATH, or its interpreter is missing; point the server at another with --image-app, --audio-app or --video-app.`, { cause: err }));
      } else {
        reject(new FerryError('E_LAUNCH_FAILED', `The app "${command.command}" could not be started (${err.code ?? err.message}).`, { cause: err }));
      }
    });
  });
}
