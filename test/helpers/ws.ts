/** The parts of `ws` (a dependency of @statelyai/inspect, without TypeScript types here) that tests use. */
import type http from 'node:http';
import { createRequire } from 'node:module';
import type net from 'node:net';

export interface WsSocket {
  on(event: 'message', listener: (data: Buffer) => void): this;
  on(event: 'open' | 'close', listener: () => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
  close(): void;
  terminate(): void;
}

export interface WsServer {
  readonly clients: Set<WsSocket>;
  on(event: 'connection', listener: (socket: WsSocket, req: http.IncomingMessage) => void): this;
  address(): net.AddressInfo;
  close(): void;
}

export const ws = createRequire(import.meta.url)('ws') as {
  WebSocket: new (url: string, options?: { origin?: string }) => WsSocket;
  WebSocketServer: new (options: { host: string; port: number }) => WsServer;
};
