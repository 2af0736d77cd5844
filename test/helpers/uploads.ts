/** Feeding an upload store's incoming file from a test. */
import type { IncomingFile } from '../../media/upload-store.js';

/** Writes `data` in chunks, waiting for drain as a network handler would. */
export async function send(file: IncomingFile, data: Buffer, chunkSize = 64 * 1024): Promise<void> {
  for (let offset = 0; offset < data.length; offset += chunkSize) {
    if (!file.write(data.subarray(offset, offset + chunkSize))) await new Promise<void>((resolve) => file.onDrain(resolve));
  }
}
