/**
 * ferry as a library: a server that receives messages and files, and a client that sends them.
 * The CLI (`apps/`) is built on exactly these two functions.
 *
 * @example
 * ```ts
 * import { createServer, createClient } from 'ferry';
 * const server = createServer({ port: 0, uploadDir: './upload' });
 * const { port } = await server.listen();
 * const client = createClient({ port });
 * console.log(await client.message('hello'));        // "hello"
 * console.log(await client.upload('./photo.png'));   // { savedAs: 'photo.png', sha256: '…', … }
 * await client.close();
 * await server.close();
 * ```
 */
export * from './client.js';
export * from './server.js';
export { AGENT, DEFAULT_HOST, DEFAULT_PORT } from './transport/frames.js';
export { FerryError, ProtocolError, ErrorCodes, type ErrorCode } from './transport/errors.js';
export type { Transport, Dialer } from './transport/transport.js';
export type { OpenResultInfo } from './transport/frames.js';
export type { MediaApps } from './media/launcher.js';
export { clientMachine } from './machines/client.machine.js';
export { serverMachine } from './machines/server.machine.js';
export { sessionMachine } from './machines/session.machine.js';
