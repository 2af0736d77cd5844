import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import type { AnyStateMachine } from 'xstate';
import { sentence } from './output.js';

type Format = 'mermaid' | 'dot' | 'svg';

interface DiagramOptions {
  format: Format;
  output?: string;
}

const GRAPHVIZ_MISSING =
  'Graphviz is not installed; install it with `apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) or from graphviz.org.';

/** The machines it draws, by name: the keys of `machines` in machines/diagram.ts (which is loaded only to draw them). */
export const MACHINE_NAMES = ['server', 'session', 'client'] as const;

export function registerDiagram(program: Command): void {
  const names = MACHINE_NAMES;
  program
    .command('diagram')
    .description('Draw ferry\u2019s state machines from their definitions, as Mermaid, Graphviz DOT or SVG.')
    .argument('[machine]', `${names.join(', ')}; all of them when left out`)
    .addOption(new Option('--format <format>', 'mermaid, dot, or svg (svg needs Graphviz\u2019s `dot` command)').choices(['mermaid', 'dot', 'svg']).default('mermaid'))
    .option('--output <file>', 'write to FILE instead of standard output')
    .addHelpText(
      'after',
      `
Without MACHINE, mermaid and dot print every machine, each under a comment with its name; svg draws them
all in one picture. docs/machines.md shows the same Mermaid diagrams.`,
    )
    .action(async (name: string | undefined, options: DiagramOptions) => {
      process.exitCode = await diagram(name, options);
    });
}

async function diagram(name: string | undefined, options: DiagramOptions): Promise<number> {
  const { machines, toDot, toDotCombined, toMermaid } = await import('../machines/diagram.js');
  const names = Object.keys(machines);
  let selected: Record<string, AnyStateMachine> = machines;
  if (name !== undefined) {
    const machine = Object.hasOwn(machines, name) ? (machines as Record<string, AnyStateMachine>)[name] : undefined;
    if (!machine) {
      process.stderr.write(`ferry: There is no machine called "${name}"; choose one of ${names.join(', ')}.\n`);
      return 2;
    }
    selected = { [name]: machine };
  }

  let text: string;
  if (options.format === 'svg') {
    const entries = Object.entries(selected);
    const dot = entries.length === 1 ? toDot(entries[0]![1]) : toDotCombined(selected);
    const drawn = await runGraphviz(dot);
    if (!drawn.ok) {
      process.stderr.write(`ferry: ${drawn.message}\n`);
      return 1;
    }
    text = drawn.svg;
  } else {
    const draw = options.format === 'dot' ? toDot : toMermaid;
    const comment = options.format === 'dot' ? '//' : '%%';
    const parts = Object.entries(selected).map(([machineName, machine]) =>
      name === undefined ? `${comment} ${machineName}\n${draw(machine)}` : draw(machine),
    );
    text = parts.join('\n');
  }

  if (options.output === undefined) {
    process.stdout.write(text);
    return 0;
  }
  try {
    await writeFile(options.output, text);
  } catch (err) {
    process.stderr.write(`ferry: ${options.output} cannot be written: ${sentence(err)}\n`);
    return 1;
  }
  return 0;
}

type GraphvizResult = { ok: true; svg: string } | { ok: false; message: string };

/** Pipes DOT through `dot -Tsvg`. */
function runGraphviz(dot: string): Promise<GraphvizResult> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (result: GraphvizResult): void => {
      if (!settled) {
        settled = true;
        resolve(result);
      }
    };
    const child = spawn('dot', ['-Tsvg'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', (error: NodeJS.ErrnoException) => {
      finish({ ok: false, message: error.code === 'ENOENT' ? GRAPHVIZ_MISSING : `Graphviz could not be started: ${sentence(error)}` });
    });
    child.on('close', (code) => {
      if (code === 0) finish({ ok: true, svg: Buffer.concat(out).toString('utf8') });
      else {
        const detail = Buffer.concat(err).toString('utf8').trim().split('\n')[0] ?? '';
        finish({ ok: false, message: `Graphviz could not draw the diagram${detail ? `: ${detail}` : ` (exit status ${code})`}.` });
      }
    });
    // When `dot` is missing or fails early, writing to it fails too; the events above report why.
    child.stdin.on('error', () => {});
    child.stdin.end(dot);
  });
}
