/**
 * XState inspection for ferry, what `--inspect` starts: sends the inspection events of the server,
 * its sessions and the client to a WebSocket in the format of @statelyai/inspect's WebSocket
 * inspector, or to a local relay page that shows them in the Stately inspector.
 *
 * The events are built by @statelyai/inspect's `createInspector` (so their shape is exactly the
 * library's) and sent by an adapter of our own (./ws-sender.ts). Everything is sanitised before the
 * library sees it (./sanitize.ts): no Buffers, sockets, loggers, secrets or huge strings leave the
 * process.
 *
 * @example
 * ```ts
 * const inspection = await startInspection(true, [token]);
 * console.error(inspection.description);
 * const server = createServer({ port: 0, inspect: inspection.inspect });
 * // …
 * await server.close();
 * await inspection.stop();
 * ```
 */
import { createInspector } from '@statelyai/inspect';
import type { InspectionEvent } from 'xstate';
import { sanitizeInspectionEvent } from './events.js';
import { INSPECTOR_PAGE, startRelay, type Relay } from './relay.js';
import { sanitize, type SanitizeOptions } from './sanitize.js';
import { DEPTH_LIMIT, SocketAdapter } from './ws-sender.js';

export interface Inspection {
  /** Pass as `inspect` to `createServer` / `createClient`. Never throws; a no-op once stopped. */
  inspect: (event: InspectionEvent) => void;
  /** Sends what is still queued (waiting at most about a second), then closes the connection and the local relay. */
  stop(): Promise<void>;
  /** What to tell the user: where the events go, and with `true` the page to open. */
  description: string;
  /** The WebSocket the events are sent to. */
  url: string;
  /** With `true`: the local page to open in a browser. */
  pageUrl?: string;
}

/** Events that happen once per chunk of an upload. */
const CHUNK_EVENTS = new Set(['data', 'upload.progress', 'file.busy', 'file.writable']);
const CHUNK_SAMPLE = 256;

/**
 * Starts sending XState inspection events, sanitised, in @statelyai/inspect's WebSocket format:
 * to `target` (a `ws://` or `wss://` URL where something like a `createWebSocketReceiver` or a
 * Stately inspector relay listens), or with `true` to a relay started here on 127.0.0.1 whose page
 * shows them in the Stately inspector. Strings containing any of `secrets` are redacted.
 *
 * Nobody listening is fine: events are kept (the last 200) and sent once something does; nothing
 * here keeps the process alive or throws. Rejects only for a malformed URL or if the relay cannot
 * listen.
 */
export async function startInspection(target: string | true, secrets: readonly string[] = []): Promise<Inspection> {
  let relay: Relay | undefined;
  let url: string;
  if (target === true) {
    relay = await startRelay();
    url = `ws://127.0.0.1:${relay.port}`;
  } else {
    let parsed: URL;
    try {
      parsed = new URL(target);
    } catch {
      throw new TypeError(`Not an inspector URL: "${target}" (expected ws://host:port or wss://host:port).`);
    }
    if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') throw new TypeError(`The inspector URL must start with ws:// or wss:// (got "${target}").`);
    if (parsed.hash) throw new TypeError(`The inspector URL cannot have a #fragment (got "${target}").`);
    url = parsed.href;
  }

  const adapter = new SocketAdapter(url);
  const inspector = createInspector(adapter, { serializationDepthLimit: DEPTH_LIMIT });
  inspector.start();
  const options: SanitizeOptions = { secrets: [...secrets] };
  const clean = (value: unknown) => sanitize(value, options);
  let stopped = false;

  let chunkEvents = 0;
  const inspect = (event: InspectionEvent): void => {
    if (stopped) return;
    // An upload makes a handful of events per chunk; showing one in CHUNK_SAMPLE keeps the
    // inspector's picture of progress while costing the transfer almost nothing.
    if ('event' in event && CHUNK_EVENTS.has(event.event.type) && ++chunkEvents % CHUNK_SAMPLE !== 0) return;
    try {
      const prepared = sanitizeInspectionEvent(event, clean);
      if (prepared) inspector.inspect.next?.(prepared);
    } catch {
      // Inspection must never disturb the machines.
    }
  };

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      stopped = true;
      // The library converts each event on a setTimeout(0) of its own; let those run first.
      await new Promise((resolve) => setTimeout(resolve, 0));
      await adapter.close();
      await relay?.stop();
    })();
    return stopping;
  };

  const pageUrl = relay ? `http://127.0.0.1:${relay.port}` : undefined;
  const description = pageUrl
    ? `Inspector: open ${pageUrl} in a browser on this computer while ferry runs. The page loads the Stately inspector from ${INSPECTOR_PAGE}, so the browser needs internet access; ferry sends the (sanitised) events only to this local page.`
    : `Inspector: sending XState inspection events to ${url} (Stately inspector WebSocket format).`;
  return { inspect, stop, description, url, ...(pageUrl ? { pageUrl } : {}) };
}
