/**
 * What the CLI loads before it knows the command. Its static imports (not `import type`, not
 * `await import()`) are followed from apps/cli.ts through the sources: a client command must not pay
 * for loading the server, its logger, the diagram code or the inspector, each of which is loaded
 * only by the command that uses it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');

/** The specifiers a file imports for its values, at load time. */
function staticImports(file: string): string[] {
  const source = fs.readFileSync(file, 'utf8');
  const found: string[] = [];
  for (const match of source.matchAll(/^\s*(?:import|export)\s+(type\s+)?(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]/gm)) {
    if (match[1] === undefined) found.push(match[2]!);
  }
  return found;
}

/** Every source file and package reached from `entry` by static imports. */
function loadedBy(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string) => {
    const rel = path.relative(root, file);
    if (files.has(rel)) return;
    files.add(rel);
    for (const specifier of staticImports(file)) {
      if (specifier.startsWith('.')) visit(path.resolve(path.dirname(file), specifier.replace(/\.js$/, '.ts')));
      else if (!specifier.startsWith('node:')) packages.add(specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]!);
    }
  };
  visit(path.join(root, entry));
  return { files, packages };
}

describe('CLI start-up', () => {
  it('finds the imports it follows: the CLI reaches the client and commander', () => {
    const { files, packages } = loadedBy('apps/cli.ts');
    expect(files).toContain('client.ts');
    expect(files).toContain('machines/client.machine.ts');
    expect(packages).toContain('commander');
    expect(packages).toContain('xstate');
  });

  it('loads nothing of the server, its logger, the diagrams or the inspector until a command needs them', () => {
    const { files, packages } = loadedBy('apps/cli.ts');
    for (const heavy of ['server.ts', 'index.ts', 'machines/server.machine.ts', 'machines/session.machine.ts', 'media/upload-store.ts', 'machines/diagram.ts', 'apps/logger.ts', 'apps/inspect/start.ts']) {
      expect(files).not.toContain(heavy);
    }
    for (const heavy of ['pino', 'pino-pretty', '@statelyai/inspect', 'file-type', 'cli-progress']) expect(packages).not.toContain(heavy);
  });

  it('the server module does load the server machine (the walk sees through re-exports)', () => {
    const { files, packages } = loadedBy('index.ts');
    expect(files).toContain('server.ts');
    expect(files).toContain('machines/server.machine.ts');
    expect(packages).toContain('pino');
  });
});
