import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { ErrorCode } from '../transport/errors.js';
import { FerryError } from '../transport/errors.js';
import { launch, type MediaApps } from './launcher.js';
import { sniffMedia, type MediaKind } from './sniff.js';

export interface OpenSettings {
  /** Off unless the server was started with --open. */
  enabled: boolean;
  apps: MediaApps;
  /** Launches allowed per session per minute. */
  perMinute: number;
}

/** What happened to a request to open a file: sent back to the client and logged. */
export type OpenOutcome =
  | { opened: true; kind: MediaKind; mime: string; app: string; pid: number }
  | { opened: false; code: ErrorCode; message: string; kind?: MediaKind; mime?: string };

export const OPEN_WINDOW_MS = 60_000;

/** Whether one more launch fits in the last minute's budget, given the recent launch times. */
export function launchAllowed(recent: readonly number[], now: number, perMinute: number): boolean {
  return recent.filter((t) => now - t < OPEN_WINDOW_MS).length < perMinute;
}

function refused(code: ErrorCode, message: string, extra: { kind?: MediaKind; mime?: string } = {}): OpenOutcome {
  return { opened: false, code, message, ...extra };
}

/**
 * Opens a stored, verified file in the app configured for its kind, deciding the kind from the
 * content. Never throws: every way of not opening is an outcome with a code and a sentence.
 */
export async function openMedia(filePath: string, settings: OpenSettings, rateLimited: boolean): Promise<OpenOutcome> {
  if (!settings.enabled) {
    return refused('E_OPEN_DISABLED', 'This server does not open files; start it with --open to allow that.');
  }
  let sniffed;
  try {
    sniffed = await sniffMedia(filePath);
  } catch (err) {
    return refused('E_NOT_FOUND', `The file could not be read to decide what it is (${(err as Error).message}).`);
  }
  const { kind, mime } = sniffed;
  if (!kind) {
    return refused('E_NOT_MEDIA', `The file is not an image, audio or video by its content${mime ? ` (it is ${mime})` : ''}, so it was not opened.`, mime ? { mime } : {});
  }
  if (rateLimited) {
    return refused('E_RATE_LIMITED', `More than ${settings.perMinute} files were opened in the last minute; wait a little and ask again.`, { kind, mime: mime! });
  }
  try {
    const launched = await launch(settings.apps[kind], await pathForItsContent(filePath, sniffed.ext));
    return { opened: true, kind, mime: mime!, app: launched.app, pid: launched.pid };
  } catch (err) {
    const error = err instanceof FerryError ? err : new FerryError('E_LAUNCH_FAILED', String(err));
    return refused(error.code, error.message, { kind, mime: mime! });
  }
}

/** Other spellings of the extensions file-type reports. */
const SAME_EXTENSION: Record<string, string[]> = {
  jpg: ['jpg', 'jpeg', 'jpe', 'jfif'],
  tif: ['tif', 'tiff'],
  mp4: ['mp4', 'm4v'],
  mov: ['mov', 'qt'],
  ogg: ['ogg', 'oga', 'ogv'],
  mkv: ['mkv', 'mk3d'],
};

/**
 * The path to hand the app. Desktop openers (xdg-open, open) choose the program by the name's
 * extension, so a file whose name says `.desktop` or `.jar` but whose content is a PNG must not be
 * opened under that name: it is opened through a hard link in `.ferry/open/` named with the
 * extension of what it really is.
 */
async function pathForItsContent(filePath: string, ext: string | undefined): Promise<string> {
  if (!ext) return filePath;
  const own = path.extname(filePath).slice(1).toLowerCase();
  if ((SAME_EXTENSION[ext] ?? [ext]).includes(own)) return filePath;
  const dir = path.join(path.dirname(filePath), '.ferry', 'open');
  await fs.mkdir(dir, { recursive: true });
  await forgetOldLinks(dir);
  const alias = path.join(dir, `${randomBytes(8).toString('hex')}.${ext}`);
  try {
    await fs.link(filePath, alias);
  } catch {
    await fs.copyFile(filePath, alias, fs.constants.COPYFILE_EXCL);
  }
  return alias;
}

/** Links older than a day have served their purpose. */
async function forgetOldLinks(dir: string): Promise<void> {
  const now = Date.now();
  for (const entry of await fs.readdir(dir).catch(() => [] as string[])) {
    const full = path.join(dir, entry);
    const stat = await fs.stat(full).catch(() => undefined);
    // ctime, not mtime: making the link touches the inode, while mtime is the upload's own age.
    if (stat && now - stat.ctimeMs > 24 * 3600_000) await fs.rm(full, { force: true }).catch(() => undefined);
  }
}
