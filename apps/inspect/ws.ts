/**
 * The `ws` and `safe-stable-stringify` packages that @statelyai/inspect itself uses, loaded from
 * there (they are its dependencies, not ours), with the little of their API the inspector needs.
 */
import { createRequire } from 'node:module';

export interface WsClient {
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: string): void;
  close(code?: number): void;
  terminate(): void;
  on(event: 'open', listener: () => void): this;
  on(event: 'close', listener: () => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
  on(event: 'message', listener: (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => void): this;
  once(event: 'open' | 'close', listener: () => void): this;
}

export interface WsServer {
  readonly clients: Set<WsClient>;
  on(event: 'connection', listener: (socket: WsClient) => void): this;
  on(event: 'error', listener: (error: Error) => void): this;
  close(): void;
}

interface WsModule {
  WebSocket: { new (url: string, options?: Record<string, unknown>): WsClient; readonly CONNECTING: 0; readonly OPEN: 1 };
  WebSocketServer: new (options: Record<string, unknown>) => WsServer;
}

export type Stringify = (value: unknown) => string | undefined;

const requireFromInspect = createRequire(createRequire(import.meta.url).resolve('@statelyai/inspect'));
export const { WebSocket, WebSocketServer } = requireFromInspect('ws') as WsModule;
export const stableStringify = requireFromInspect('safe-stable-stringify') as { configure(options: { maximumDepth: number }): Stringify };
