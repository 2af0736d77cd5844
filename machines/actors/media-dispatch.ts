import { fromPromise } from 'xstate';
import type { FerryError } from '../../transport/errors.js';
import { launchAllowed, openMedia, type OpenOutcome, type OpenSettings } from '../../media/opener.js';
import type { FileSink } from './file-receiver.js';

/** What the media step was asked to do: open a just-saved upload, or a file stored earlier. */
export interface MediaRequest {
  /** Open at all? False for an upload whose sender did not ask. */
  wanted: boolean;
  /** The stored file, for a fresh upload; otherwise `name` is looked up in the store. */
  path?: string;
  name: string;
  settings: OpenSettings;
  /** When this session launched apps in the last minute, for its per-minute budget. */
  launches: readonly number[];
}

/** The media step's result: no outcome when nothing was asked; `at` is when an app was launched. */
export interface MediaOutcome {
  outcome?: OpenOutcome;
  at?: number;
}

/** What the media step needs from the server: its files and a clock. */
export interface MediaServices {
  store: Pick<FileSink, 'existing'>;
  now(): number;
}

/** Opens a stored file when asked, deciding its kind from its content; never fails. */
export async function dispatchMediaRequest(request: MediaRequest, services: MediaServices): Promise<MediaOutcome> {
  if (!request.wanted) return {};
  // Refuse before looking anything up: a server that does not open files says nothing about which exist.
  if (!request.settings.enabled) return { outcome: await openMedia('', request.settings, false) };
  let filePath = request.path;
  if (filePath === undefined) {
    try {
      filePath = await services.store.existing(request.name);
    } catch (err) {
      const error = err as FerryError;
      return { outcome: { opened: false, code: error.code ?? 'E_NOT_FOUND', message: error.message } };
    }
  }
  const now = services.now();
  const outcome = await openMedia(filePath, request.settings, !launchAllowed(request.launches, now, request.settings.perMinute));
  return outcome.opened ? { outcome, at: now } : { outcome };
}

/** The media step as an actor, bound to a server's store and clock. */
export function mediaDispatcher(services: MediaServices) {
  return fromPromise<MediaOutcome, MediaRequest>(({ input }) => dispatchMediaRequest(input, services));
}
