import { fromCallback } from 'xstate';
import { FerryError } from '../../transport/errors.js';
import type { UploadOffer } from '../../transport/frames.js';
import type { IncomingFile, SavedFile } from '../../media/upload-store.js';
import type { DataReceiver } from './session-connection.js';

/** The part of the upload store a session needs; tests may hand in their own. */
export interface FileSink {
  begin(offer: { name: string; size: number; key?: string; sha256?: string; folders?: boolean }): Promise<IncomingFile>;
  /** The path of a file stored earlier under exactly this name; rejects with E_NOT_FOUND. */
  existing(name: string): Promise<string>;
}

export interface FileReceiverInput {
  offer: UploadOffer;
  /** The offer's name may be a relative path with folders (the native format; the original keeps base names). */
  folders?: boolean;
}

export type FileReceiverEvent =
  /** The partial file is open. `receiver` is the receiver itself, to which the upload's bytes may be sent directly. */
  | { type: 'file.ready'; name: string; offset: number; receiver?: DataReceiver }
  | { type: 'file.refused'; error: FerryError }
  | { type: 'file.busy' }
  | { type: 'file.writable' }
  | { type: 'file.saved'; saved: SavedFile }
  | { type: 'file.failed'; error: FerryError };

export type FileReceiverCommand = { type: 'data'; chunk: Buffer } | { type: 'finish'; sha256?: string };

function asFerryError(err: unknown): FerryError {
  if (err instanceof FerryError) return err;
  return new FerryError('E_STORE_FAILED', `The server could not store the file (${(err as Error)?.message ?? String(err)}); try again later.`);
}

/**
 * Streams one upload into the store: opens the partial file, writes each chunk as it comes
 * (reporting disk backpressure), and on `finish` verifies and places it. Stopping the actor before
 * the file was saved removes the partial, so nothing half-written survives a dropped connection.
 * A file the store already holds (`skipped`) is reported saved at once, without `file.ready`: the
 * sender is told it is done and sends no bytes.
 */
export function fileReceiverFor(store: FileSink) {
  return fromCallback<FileReceiverCommand, FileReceiverInput, FileReceiverEvent>(({ input, sendBack, receive, self }) => {
    let file: IncomingFile | undefined;
    let settled = false;
    let stopped = false;
    let failed = false;

    const failWith = (err: unknown) => {
      if (failed || stopped) return;
      failed = true;
      void file?.abort();
      sendBack({ type: 'file.failed', error: asFerryError(err) });
    };

    /** Reports how a finish ended: saved, or failed as `failure` says. */
    const report = (finishing: Promise<SavedFile>, failure: 'file.refused' | 'file.failed') => {
      finishing.then(
        (saved) => {
          settled = true;
          if (!stopped) sendBack({ type: 'file.saved', saved });
        },
        (err: unknown) => {
          settled = true;
          if (!stopped) sendBack({ type: failure, error: asFerryError(err) });
        },
      );
    };

    const { name, size, key, sha256 } = input.offer;
    store.begin({ name, size, ...(key !== undefined ? { key } : {}), ...(sha256 !== undefined ? { sha256 } : {}), ...(input.folders ? { folders: true } : {}) }).then(
      (opened) => {
        if (stopped) {
          void opened.abort();
          return;
        }
        file = opened;
        if (opened.skipped) {
          // Not accepted, so a failure here is a refusal of the offer, not a failed upload.
          report(opened.finish(), 'file.refused');
          return;
        }
        sendBack({ type: 'file.ready', name: opened.name, offset: opened.received, receiver: self });
      },
      (err: unknown) => {
        if (!stopped) sendBack({ type: 'file.refused', error: asFerryError(err) });
      },
    );

    const onDrain = () => {
      if (!stopped && !failed) sendBack({ type: 'file.writable' });
    };

    receive((command) => {
      // A skipped file expects no bytes and no finish: the session never accepted it.
      if (!file || failed || file.skipped) return;
      if (command.type === 'data') {
        let more: boolean;
        try {
          more = file.write(command.chunk);
        } catch (err) {
          return failWith(err);
        }
        if (!more) {
          sendBack({ type: 'file.busy' });
          file.onDrain(onDrain);
        }
        return;
      }
      report(file.finish(command.sha256), 'file.failed');
    });

    return () => {
      stopped = true;
      if (file && !settled) void file.abort();
    };
  });
}
