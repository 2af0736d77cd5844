import net from 'node:net';
import { fromCallback } from 'xstate';
import { NetTransport } from '../../transport/net-transport.js';
import type { Transport } from '../../transport/transport.js';

export interface ListenerInput {
  host: string;
  port: number;
}

export type ListenerEvent =
  | { type: 'listening'; host: string; port: number }
  | { type: 'listen-failed'; error: Error }
  | { type: 'connection'; transport: Transport };

export type ListenerCommand = { type: 'stop-accepting' };

/** Owns the listening socket: reports each accepted connection as a Transport. */
export const listener = fromCallback<ListenerCommand, ListenerInput, ListenerEvent>(({ input, sendBack, receive }) => {
  const server = net.createServer({ noDelay: true, allowHalfOpen: true });
  let open = true;

  server.on('connection', (socket) => {
    sendBack({ type: 'connection', transport: new NetTransport(socket) });
  });
  server.on('error', (error) => {
    sendBack({ type: 'listen-failed', error });
  });
  server.listen({ host: input.host, port: input.port }, () => {
    const address = server.address() as net.AddressInfo;
    sendBack({ type: 'listening', host: address.address, port: address.port });
  });

  const stop = () => {
    if (!open) return;
    open = false;
    server.close();
  };
  receive((command) => {
    if (command.type === 'stop-accepting') stop();
  });
  return stop;
});
