/**
 * The local relay behind `--inspect` without a URL: a page on 127.0.0.1 that shows the events in
 * the Stately inspector, and the WebSocket that ferry sends them to and the page reads them from.
 */
import http from 'node:http';
import type net from 'node:net';
import { WebSocket, WebSocketServer } from './ws.js';

/** Where the relay's page loads the Stately inspector from. */
export const INSPECTOR_PAGE = 'https://stately.ai/inspect';
/** Messages replayed to a client that connects later (a page opened after ferry started). */
const RELAY_REPLAY = 200;

export interface Relay {
  port: number;
  stop(): Promise<void>;
}

/**
 * The page the relay serves: like @statelyai/inspect/server's bridge page, it embeds the Stately
 * inspector and forwards what arrives on the relay's WebSocket into it.
 */
function bridgePage(inspectorUrl: string): string {
  return `<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <title>ferry – Stately Inspector</title>
  <style>
    * { margin: 0; padding: 0; }
    html, body { height: 100%; }
    iframe { width: 100%; height: 100%; border: none; }
  </style>
</head>
<body>
  <iframe id="inspector" src="${inspectorUrl}"></iframe>
  <script>
    const iframe = document.getElementById('inspector');
    const buffer = [];
    let connected = false;

    window.addEventListener('message', (e) => {
      if (e.data && e.data.type === '@statelyai.connected') {
        connected = true;
        buffer.forEach((event) => {
          iframe.contentWindow.postMessage(event, '*');
        });
        buffer.length = 0;
      }
    });

    const ws = new WebSocket('ws://' + location.host);
    ws.onmessage = (event) => {
      const data = JSON.parse(event.data);
      if (connected) {
        iframe.contentWindow.postMessage(data, '*');
      } else {
        buffer.push(data);
      }
    };
  </script>
</body>
</html>`;
}

/**
 * A relay like `createInspectorServer` from @statelyai/inspect/server (the page above over HTTP; on
 * its WebSocket, every message is passed to the other clients and the last 200 are replayed to new
 * ones), but bound to 127.0.0.1 on a free port, answering only pages served by itself (Host and
 * Origin checked, so other web sites cannot read the events), and not keeping the process alive.
 */
export async function startRelay(): Promise<Relay> {
  let port = 0;
  const allowedHosts = () => [`127.0.0.1:${port}`, `localhost:${port}`];
  const server = http.createServer((req, res) => {
    if (!allowedHosts().includes(req.headers.host ?? '')) {
      res.writeHead(421, { 'Content-Type': 'text/plain' }).end('Misdirected request\n');
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' }).end(bridgePage(INSPECTOR_PAGE));
  });
  server.on('connection', (socket) => socket.unref());
  const wss = new WebSocketServer({
    server,
    perMessageDeflate: false,
    maxPayload: 16 * 1024 * 1024,
    verifyClient: (info: { origin?: string; req: http.IncomingMessage }) => {
      if (!allowedHosts().includes(info.req.headers.host ?? '')) return false;
      // Browsers always send an Origin; node clients (ferry itself) send none.
      return info.origin === undefined || allowedHosts().some((host) => info.origin === `http://${host}`);
    },
  });
  wss.on('error', () => {});
  const replay: string[] = [];
  wss.on('connection', (client) => {
    client.on('error', () => {});
    for (const message of replay) client.send(message);
    client.on('message', (data) => {
      const message = Array.isArray(data) ? Buffer.concat(data).toString() : Buffer.from(data as ArrayBuffer).toString();
      replay.push(message);
      if (replay.length > RELAY_REPLAY) replay.shift();
      for (const other of wss.clients) if (other !== client && other.readyState === WebSocket.OPEN) other.send(message);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.unref();
  port = (server.address() as net.AddressInfo).port;
  let stopping: Promise<void> | undefined;
  return {
    port,
    stop() {
      stopping ??= new Promise<void>((resolve) => {
        for (const client of wss.clients) client.terminate();
        wss.close();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return stopping;
    },
  };
}
