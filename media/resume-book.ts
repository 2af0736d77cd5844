import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A local file as the book knows it: the same path, size and modification time is the same file. */
export interface LocalFile {
  path: string;
  size: number;
  mtimeMs: number;
}

/** Which local file an upload key belongs to, and where it was going. */
interface Entry {
  path: string;
  size: number;
  mtimeMs: number;
  server: string;
  key: string;
  created: number;
}

/** A local file that a server has stored, and what it holds. */
interface StoredEntry {
  path: string;
  size: number;
  mtimeMs: number;
  server: string;
  sha256: string;
  savedAs: string;
  /** When the server last confirmed it. */
  at: number;
}

/** What the book remembers of a file a server stored. */
export interface StoredCopy {
  sha256: string;
  savedAs: string;
}

const KEEP_MS = 7 * 24 * 3600_000;
const KEEP_STORED_MS = 30 * 24 * 3600_000;
/** Files remembered as stored, at most; the ones confirmed longest ago are forgotten first. */
const MAX_STORED = 10_000;
/**
 * Stored files are written to the book at most this often: a run of many small files would
 * otherwise rewrite the whole book once per file. `flush()` writes what is left at once.
 */
const STORED_SAVE_DELAY_MS = 1_000;

/**
 * The client's memory of its uploads. Unfinished ones: the same file (same path, size and
 * modification time) sent to the same server gets the same key, so the server can continue where an
 * earlier attempt stopped — after a reconnect, or after this process was killed and run again.
 * Stored ones: the SHA-256 and stored name of a file a server confirmed, so that sending the same
 * unchanged file again can offer its hash without reading it, and the server can skip it. With a
 * file the book survives the process; without one it lasts as long as the client.
 */
export class ResumeBook {
  readonly #file: string | undefined;
  #entries: Entry[] | undefined;
  /** Stored files by server and absolute path (one entry for each). */
  #stored = new Map<string, StoredEntry>();
  #saving: Promise<void> = Promise.resolve();
  /** A save that is queued and has not started: later changes join it rather than queue another. */
  #queued: Promise<void> | undefined;
  /** A save of stored files, due shortly. */
  #later: ReturnType<typeof setTimeout> | undefined;

  constructor(file?: string) {
    this.#file = file;
  }

  /** The key for this file and server, made up and remembered on first use. */
  async keyFor(file: LocalFile, server: string): Promise<string> {
    const entries = await this.#load();
    const absolute = path.resolve(file.path);
    const found = entries.find((e) => e.path === absolute && e.size === file.size && e.mtimeMs === file.mtimeMs && e.server === server);
    if (found) return found.key;
    const entry: Entry = { path: absolute, size: file.size, mtimeMs: file.mtimeMs, server, key: randomBytes(16).toString('hex'), created: Date.now() };
    // A changed file gets a new key; the entry for its old version is of no more use.
    this.#entries = [...entries.filter((e) => !(e.path === absolute && e.server === server)), entry];
    await this.#save();
    return entry.key;
  }

  /** Forgets a key once its upload is stored, or when it cannot be continued. */
  async forget(key: string): Promise<void> {
    const entries = await this.#load();
    if (!entries.some((e) => e.key === key)) return;
    this.#entries = entries.filter((e) => e.key !== key);
    await this.#save();
  }

  /** What this server stored of exactly this file (same path, size and modification time), if known. */
  async storedCopy(file: LocalFile, server: string): Promise<StoredCopy | undefined> {
    await this.#load();
    const found = this.#stored.get(storedKey(server, path.resolve(file.path)));
    if (!found || found.size !== file.size || found.mtimeMs !== file.mtimeMs) return undefined;
    return { sha256: found.sha256, savedAs: found.savedAs };
  }

  /** Remembers that this server stored this file, replacing what was known of an older version. */
  async rememberStored(file: LocalFile, server: string, copy: StoredCopy): Promise<void> {
    await this.#load();
    const absolute = path.resolve(file.path);
    const key = storedKey(server, absolute);
    // Re-inserted, so the map's order stays oldest confirmation first.
    this.#stored.delete(key);
    this.#stored.set(key, { path: absolute, size: file.size, mtimeMs: file.mtimeMs, server, sha256: copy.sha256, savedAs: copy.savedAs, at: Date.now() });
    for (const oldest of this.#stored.keys()) {
      if (this.#stored.size <= MAX_STORED) break;
      this.#stored.delete(oldest);
    }
    this.#saveSoon();
  }

  /** Writes anything not yet in the book's file, and waits for saves under way. */
  async flush(): Promise<void> {
    if (this.#later) {
      clearTimeout(this.#later);
      this.#later = undefined;
      await this.#save();
    }
    await this.#saving;
  }

  #saveSoon(): void {
    if (!this.#file || this.#later) return;
    this.#later = setTimeout(() => {
      this.#later = undefined;
      void this.#save();
    }, STORED_SAVE_DELAY_MS);
    // A process that ends without closing its client only loses the chance to skip a file.
    this.#later.unref?.();
  }

  async #load(): Promise<Entry[]> {
    if (this.#entries) return this.#entries;
    let entries: Entry[] = [];
    let stored: StoredEntry[] = [];
    if (this.#file) {
      try {
        const parsed = JSON.parse(await fs.promises.readFile(this.#file, 'utf8')) as { uploads?: Entry[]; stored?: StoredEntry[] };
        if (Array.isArray(parsed.uploads)) entries = parsed.uploads.filter((e) => typeof e?.key === 'string' && /^[0-9a-f]{32}$/.test(e.key));
        if (Array.isArray(parsed.stored)) stored = parsed.stored.filter(isStoredEntry);
      } catch {
        // No book yet, or an unreadable one: start afresh; the worst case is an upload from zero.
      }
    }
    if (this.#entries) return this.#entries;
    const now = Date.now();
    this.#entries = entries.filter((e) => now - e.created < KEEP_MS);
    for (const entry of stored.sort((a, b) => a.at - b.at)) {
      if (now - entry.at < KEEP_STORED_MS) this.#stored.set(storedKey(entry.server, entry.path), entry);
    }
    return this.#entries;
  }

  #save(): Promise<void> {
    const file = this.#file;
    if (!file) return Promise.resolve();
    if (this.#queued) return this.#queued;
    // Saves run one after another; each writes a complete file and renames it into place.
    const save = this.#saving.then(async () => {
      this.#queued = undefined;
      try {
        await fs.promises.mkdir(path.dirname(file), { recursive: true });
        const temp = `${file}.${process.pid}.tmp`;
        await fs.promises.writeFile(temp, JSON.stringify({ uploads: this.#entries ?? [], stored: [...this.#stored.values()] }));
        await fs.promises.rename(temp, file);
      } catch {
        // Not being able to remember only costs a resume or a skip; the upload itself goes on.
      }
    });
    this.#queued = save;
    this.#saving = save;
    return save;
  }
}

function storedKey(server: string, absolute: string): string {
  return `${server}\n${absolute}`;
}

function isStoredEntry(e: StoredEntry | undefined): e is StoredEntry {
  return (
    typeof e?.path === 'string' &&
    typeof e.server === 'string' &&
    typeof e.size === 'number' &&
    typeof e.mtimeMs === 'number' &&
    typeof e.savedAs === 'string' &&
    typeof e.at === 'number' &&
    typeof e.sha256 === 'string' &&
    /^[0-9a-f]{64}$/.test(e.sha256)
  );
}

/** Where the CLI keeps its state: FERRY_STATE_DIR, else the platform's per-user state folder. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): string {
  if (env.FERRY_STATE_DIR) return env.FERRY_STATE_DIR;
  if (platform === 'win32') return path.join(env.LOCALAPPDATA ?? path.join(os.homedir(), 'AppData', 'Local'), 'ferry');
  if (platform === 'darwin') return path.join(os.homedir(), 'Library', 'Application Support', 'ferry');
  return path.join(env.XDG_STATE_HOME ?? path.join(os.homedir(), '.local', 'state'), 'ferry');
}
