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
    const launched = await launch(settings.apps[kind], filePath);
    return { opened: true, kind, mime: mime!, app: launched.app, pid: launched.pid };
  } catch (err) {
    const error = err instanceof FerryError ? err : new FerryError('E_LAUNCH_FAILED', String(err));
    return refused(error.code, error.message, { kind, mime: mime! });
  }
}
