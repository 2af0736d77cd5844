
export type MediaKind = 'image' | 'audio' | 'video';

export interface SniffResult {
  kind: MediaKind | undefined;
  /** The detected MIME type, when the content was recognised at all. */
  mime?: string;
  /** The file extension that goes with the detected content (`png`, `jpg`, `mp4`, …). */
  ext?: string;
}

/**
 * Decides what a file is from its first bytes (magic numbers), never from its name: a text file
 * called `x.png` is not an image. Anything file-type recognises as image/*, audio/* or video/*
 * counts; everything else is not media.
 */
export async function sniffMedia(filePath: string): Promise<SniffResult> {
  // Loaded on first use: only a server that opens media needs it.
  const { fileTypeFromFile } = await import('file-type');
  const type = await fileTypeFromFile(filePath);
  if (!type) return { kind: undefined };
  const top = type.mime.split('/')[0];
  const kind = top === 'image' || top === 'audio' || top === 'video' ? top : undefined;
  return { kind, mime: type.mime, ext: type.ext };
}
