// Where things are, for the bench and its child scripts (no side effects on import).
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const benchDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const rootDir = path.resolve(benchDir, '..');
export const cli = path.join(rootDir, 'dist', 'apps', 'cli.js');
export const libraryEntry = path.join(rootDir, 'dist', 'index.js');
export const nativeCodecModule = path.join(rootDir, 'dist', 'transport', 'native-codec.js');
export const memoryTransportModule = path.join(rootDir, 'dist', 'transport', 'memory-transport.js');
export const pipeScript = path.join(benchDir, 'pipe-baseline.mjs');
export const usagePreload = path.join(benchDir, 'lib', 'report-usage.mjs');
export const serversScript = path.join(benchDir, 'lib', 'servers.mjs');
export const idleClientsScript = path.join(benchDir, 'lib', 'idle-clients.mjs');
export const uploadClientsScript = path.join(benchDir, 'lib', 'upload-clients.mjs');
export const memorySessionsScript = path.join(benchDir, 'lib', 'memory-sessions.mjs');
export const loadClientsScript = path.join(benchDir, 'lib', 'load-clients.mjs');
