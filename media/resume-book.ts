import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Which local file an upload key belongs to, and where it was going. */
interface Entry {
  path: string;
  size: number;
  mtimeMs: number;
  server: string;
  key: string;
  created: number;
}

const KEEP_MS = 7 * 24 * 3600_000;

/**
 * The client's memory of unfinished uploads: the same file (same path, size and modification time)
 * sent to the same server gets the same key, so the server can continue where an earlier attempt
 * stopped — after a reconnect, or after this process was killed and run again. With a file the
 * book survives the process; without one it lasts as long as the client.
 */
export class ResumeBook {
  readonly #file: string | undefined;
  #entries: Entry[] | undefined;
  #saving: Promise<void> = Promise.resolve();

  constructor(file?: string) {
    this.#file = file;
  }

  /** The key for this file and server, made up and remembered on first use. */
  async keyFor(file: { path: string; size: number; mtimeMs: number }, server: string): Promise<string> {
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

  async #load(): Promise<Entry[]> {
    if (this.#entries) return this.#entries;
    let entries: Entry[] = [];
    if (this.#file) {
      try {
        const parsed = JSON.parse(await fs.promises.readFile(this.#file, 'utf8')) as { uploads?: Entry[] };
        if (Array.isArray(parsed.uploads)) entries = parsed.uploads.filter((e) => typeof e?.key === 'string' && /^[0-9a-f]{32}$/.test(e.key));
      } catch {
        // No book yet, or an unreadable one: start afresh; the worst case is an upload from zero.
      }
    }
    const now = Date.now();
    this.#entries ??= entries.filter((e) => now - e.created < KEEP_MS);
    return this.#entries;
  }

  #save(): Promise<void> {
    const file = this.#file;
    if (!file) return Promise.resolve();
    // Saves run one after another; each writes a complete file and renames it into place.
    this.#saving = this.#saving.then(async () => {
      try {
        await fs.promises.mkdir(path.dirname(file), { recursive: true });
        const temp = `${file}.${process.pid}.tmp`;
        await fs.promises.writeFile(temp, JSON.stringify({ uploads: this.#entries ?? [] }, null, 1));
        await fs.promises.rename(temp, file);
      } catch {
        // Not being able to remember only costs a resume; the upload itself goes on.
      }
    });
    return this.#saving;
  }
}

/** Where the CLI keeps its state: FERRY_STATE_DIR, else the platform's per-user state folder. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): string {
  if (env.FERRY_STATE_DIR) return env.FERRY_STATE_DIR;
  if (platform === 'win32') return path.join(env.LOCALAPPDATA ?? path.join(os.homedir(), 'AppData', 'Local'), 'ferry');
  if (platform === 'darwin') return path.join(os.homedir(), 'Library', 'Application Support', 'ferry');
  return path.join(env.XDG_STATE_HOME ?? path.join(os.homedir(), '.local', 'state'), 'ferry');
}
