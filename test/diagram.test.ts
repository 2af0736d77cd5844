import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { and, createMachine, not, setup, type AnyStateMachine, type AnyStateNode } from 'xstate';
import { MACHINE_NAMES, registerDiagram } from '../apps/diagram.js';
import { machines, toDot, toDotCombined, toMermaid, toStateTable } from '../machines/diagram.js';

const OUT_OF_DATE = 'docs/machines.md is out of date: run `npm run build && npm run diagrams`';

/* ----------------------------------------------------------------------------------------------
 * A reader for the subset of Mermaid's stateDiagram-v2 that toMermaid writes. It fails on anything
 * Mermaid would read differently: a state id that is a keyword or holds punctuation, a label with a
 * character that ends or comments out the line, an arrow to a state that was never declared.
 */

interface MermaidDiagram {
  /** id → label, for every declared state. */
  states: Map<string, string>;
  /** id → id of the composite state it is declared in ('' at the top level). */
  parents: Map<string, string>;
  edges: { from: string; to: string; label: string }[];
  initial: Map<string, string[]>;
  final: Map<string, string[]>;
  problems: string[];
}

const ID = '[A-Za-z0-9_]+';
const KEYWORDS = /^(as|class|classdef|click|default\w*|direction|end|hide|href|note|root|scale|state|statediagram|style)$/i;
/** Label text: anything but the characters Mermaid reads as syntax, which must come as entity codes like `#42;`. */
const SAFE_TEXT = /^(?:[^:;#*%"`<>{}\\\n]|#\w+;)*$/;

function readMermaid(text: string): MermaidDiagram {
  const d: MermaidDiagram = { states: new Map(), parents: new Map(), edges: [], initial: new Map(), final: new Map(), problems: [] };
  const lines = text.split('\n');
  if (lines[0] !== 'stateDiagram-v2') d.problems.push(`first line is ${JSON.stringify(lines[0])}`);
  if (lines.at(-1) !== '') d.problems.push('no newline at the end');
  const stack = [''];
  const declare = (id: string, label: string, lineNo: number): void => {
    if (KEYWORDS.test(id) || /_(start|end)$/.test(id)) d.problems.push(`line ${lineNo}: state id ${id} clashes with Mermaid`);
    if (d.states.has(id)) d.problems.push(`line ${lineNo}: ${id} declared twice`);
    if (!SAFE_TEXT.test(label)) d.problems.push(`line ${lineNo}: unsafe label ${JSON.stringify(label)}`);
    d.states.set(id, label);
    d.parents.set(id, stack.at(-1)!);
  };
  const list = (map: Map<string, string[]>, key: string, value: string): void => {
    map.set(key, [...(map.get(key) ?? []), value]);
  };
  lines.slice(1, -1).forEach((raw, i) => {
    const lineNo = i + 2;
    const line = raw.trim();
    let m: RegExpMatchArray | null;
    if ((m = line.match(new RegExp(`^state (${ID}) \\{$`)))) {
      declare(m[1]!, m[1]!, lineNo);
      stack.push(m[1]!);
    } else if ((m = line.match(new RegExp(`^state "([^"]*)" as (${ID})( \\{)?$`)))) {
      declare(m[2]!, m[1]!, lineNo);
      if (m[3]) stack.push(m[2]!);
    } else if (line === '}') {
      if (stack.length === 1) d.problems.push(`line ${lineNo}: } without {`);
      stack.pop();
    } else if (line === '--') {
      if (stack.length === 1) d.problems.push(`line ${lineNo}: -- outside a composite state`);
    } else if ((m = line.match(new RegExp(`^\\[\\*\\] --> (${ID})$`)))) {
      list(d.initial, stack.at(-1)!, m[1]!);
    } else if ((m = line.match(new RegExp(`^(${ID}) --> \\[\\*\\]$`)))) {
      list(d.final, stack.at(-1)!, m[1]!);
    } else if ((m = line.match(new RegExp(`^(${ID}) --> (${ID}) : (.+)$`)))) {
      if (stack.length !== 1) d.problems.push(`line ${lineNo}: arrow inside a composite state`);
      for (const part of m[3]!.split('<br>')) {
        if (!SAFE_TEXT.test(part) || part.trim() === '' || /direction\s/i.test(part)) d.problems.push(`line ${lineNo}: unsafe label ${JSON.stringify(part)}`);
      }
      d.edges.push({ from: m[1]!, to: m[2]!, label: m[3]! });
    } else if ((m = line.match(new RegExp(`^(${ID})$`)))) {
      declare(m[1]!, m[1]!, lineNo);
    } else {
      d.problems.push(`line ${lineNo}: cannot read ${JSON.stringify(raw)}`);
    }
  });
  if (stack.length !== 1) d.problems.push('unbalanced braces');
  const known = (id: string): boolean => d.states.has(id);
  for (const e of d.edges) if (!known(e.from) || !known(e.to)) d.problems.push(`arrow ${e.from} --> ${e.to} uses an undeclared state`);
  for (const ids of [...d.initial.values(), ...d.final.values()]) for (const id of ids) if (!known(id)) d.problems.push(`[*] with undeclared ${id}`);
  return d;
}

/* ----------------------------------------------------------------------------------------------
 * A structural reader for DOT: balanced braces and brackets, and every edge between declared nodes,
 * every lhead/ltail naming a declared cluster.
 */

interface DotGraph {
  nodes: Map<string, string>;
  clusters: Map<string, string>;
  edges: { from: string; to: string; attrs: Map<string, string> }[];
  problems: string[];
}

function readDot(text: string): DotGraph {
  const g: DotGraph = { nodes: new Map(), clusters: new Map(), edges: [], problems: [] };
  const tokens = [...text.matchAll(/\/\/[^\n]*|"(?:[^"\\\n]|\\.)*"|->|[{}[\];=,]|[A-Za-z_][A-Za-z0-9_]*|-?\d+(?:\.\d+)?|\S/g)]
    .map((m) => m[0])
    .filter((t) => !t.startsWith('//'));
  const value = (t: string | undefined): string => (t?.startsWith('"') ? (JSON.parse(t) as string) : (t ?? ''));
  const depth = { '{': 0, '[': 0 };
  let graphs = 0;
  const clusterStack: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t === '{') depth['{']++;
    else if (t === '}') {
      depth['{']--;
      clusterStack.pop();
    } else if (t === '[') depth['[']++;
    else if (t === ']') depth['[']--;
    if (depth['{'] < 0 || depth['['] < 0) g.problems.push(`closing ${t} without an opening one`);
    if (t === 'digraph') {
      graphs++;
      clusterStack.push('');
    }
    if (t === 'subgraph') {
      const name = value(tokens[i + 1]);
      if (!name.startsWith('cluster')) g.problems.push(`subgraph ${name} is not a cluster`);
      if (g.clusters.has(name)) g.problems.push(`cluster ${name} declared twice`);
      g.clusters.set(name, '');
      clusterStack.push(name);
      i++;
      continue;
    }
    if (t === 'label' && tokens[i + 1] === '=' && depth['['] === 0) g.clusters.set(clusterStack.at(-1)!, value(tokens[i + 2]));
    if (!t.startsWith('"')) continue;
    if (tokens[i + 1] === '->') {
      const from = value(t);
      const to = value(tokens[i + 2]);
      const attrs = new Map<string, string>();
      let j = i + 3;
      if (tokens[j] === '[') {
        for (j++; tokens[j] !== ']' && j < tokens.length; j++) {
          if (tokens[j + 1] === '=') attrs.set(tokens[j]!, value(tokens[j + 2]));
        }
      }
      g.edges.push({ from, to, attrs });
      i += 2;
    } else if (tokens[i + 1] === '[' && tokens[i - 1] !== '=' && tokens[i - 1] !== '->') {
      const id = value(t);
      if (g.nodes.has(id)) g.problems.push(`node ${id} declared twice`);
      let label = id;
      for (let j = i + 2; tokens[j] !== ']' && j < tokens.length; j++) if (tokens[j] === 'label' && tokens[j + 1] === '=') label = value(tokens[j + 2]);
      g.nodes.set(id, label);
    }
  }
  if (depth['{'] !== 0) g.problems.push('unbalanced braces');
  if (depth['['] !== 0) g.problems.push('unbalanced brackets');
  if (graphs === 0) g.problems.push('no digraph');
  for (const e of g.edges) {
    for (const end of [e.from, e.to]) if (!g.nodes.has(end)) g.problems.push(`edge ${e.from} -> ${e.to} uses undeclared node ${end}`);
    for (const key of ['lhead', 'ltail']) {
      const cluster = e.attrs.get(key);
      if (cluster !== undefined && !g.clusters.has(cluster)) g.problems.push(`edge ${e.from} -> ${e.to}: ${key} ${cluster} is not a cluster`);
    }
  }
  return g;
}

/** Every state node of a machine, nested ones included, in definition order. */
function stateNodes(machine: AnyStateMachine): AnyStateNode[] {
  const all: AnyStateNode[] = [];
  const walk = (node: AnyStateNode): void => {
    for (const child of Object.values(node.states) as AnyStateNode[]) {
      all.push(child);
      walk(child);
    }
  };
  walk(machine.root);
  return all;
}

/** A machine made to trip every rule: keyword names, punctuation in events, delays, combined guards, parallel and history states. */
const tricky = setup({
  guards: { ok: () => true, ready: () => true },
  delays: { wait: 10 },
}).createMachine({
  id: 'tricky',
  initial: 'default',
  on: { 'reset:all': '.default', 'ping;': {} },
  states: {
    default: {
      description: 'A state | with a pipe.',
      on: { 'go*': 'state', 'file.*': { target: 'note', guard: not('ok') }, '#tag%%': 'note' },
      after: { 500: 'note', wait: 'state' },
    },
    state: { always: { guard: and(['ok', 'ready']), target: 'note' } },
    note: {
      initial: 'start',
      on: { again: '.start', stay: {}, 'direction TB': 'par' },
      onDone: 'par',
      states: {
        start: { on: { 'a<b>"c"': 'end', 'x{y}': 'hist' } },
        end: { type: 'final' },
        hist: { type: 'history', history: 'deep' },
      },
    },
    par: {
      type: 'parallel',
      states: {
        left: { initial: 'x', states: { x: { on: { next: '#tricky.done' } } } },
        right: { initial: 'y', states: { y: {} } },
      },
    },
    done: { type: 'final' },
  },
});

const all: Record<string, AnyStateMachine> = { ...machines, tricky };

describe('toMermaid', () => {
  it('draws the client states', () => {
    const d = readMermaid(toMermaid(machines.client));
    const labels = [...d.states.values()];
    for (const state of ['online', 'connecting', 'connected', 'idle', 'uploading', 'closing', 'retrying', 'disconnected']) expect(labels).toContain(state);
    expect(d.parents.get('online_connecting')).toBe('online');
    expect(d.parents.get('online_connected_idle')).toBe('online_connected');
    expect(d.initial.get('')).toEqual(['online']);
    expect(d.final.get('')).toEqual(['disconnected']);
    expect(d.edges).toContainEqual({ from: 'retrying', to: 'online', label: 'after backoff' });
    expect(d.edges).toContainEqual({ from: 'online', to: 'disconnected', label: 'link.down [fatal]' });
  });

  it('draws the session states, with the upload phases inside receivingFile', () => {
    const d = readMermaid(toMermaid(machines.session));
    for (const state of ['handshaking', 'awaitingHeader', 'receivingBody', 'receivingFile', 'dispatchingMedia', 'closing', 'closed']) {
      expect(d.states.get(state)).toBe(state);
      expect(d.parents.get(state)).toBe('');
    }
    for (const phase of ['opening', 'streaming', 'verifying']) {
      expect(d.states.get(`receivingFile_${phase}`)).toBe(phase);
      expect(d.parents.get(`receivingFile_${phase}`)).toBe('receivingFile');
    }
    expect(d.initial.get('')).toEqual(['handshaking']);
    expect(d.initial.get('receivingFile')).toEqual(['receivingFile_opening']);
    expect(d.final.get('')).toEqual(['closed']);
    const toClosing = d.edges.find((e) => e.from === 'handshaking' && e.to === 'closing');
    expect(toClosing?.label.split('<br>')).toContain('handshake.expired');
    // The machine's own transitions apply in every state.
    expect(d.edges.find((e) => e.from === 'any_state' && e.to === 'closed')?.label).toBe('peer-gone');
  });

  it('labels guards, delays, eventless and wildcard transitions', () => {
    const server = readMermaid(toMermaid(machines.server));
    expect(server.edges).toContainEqual({ from: 'draining', to: 'stopped', label: 'after grace<br>always [noSessions]' });
    expect(server.edges.find((e) => e.from === 'listening' && e.to === 'listening')?.label.split('<br>')).toContain('session.ended');
    // A wildcard event keeps its `*`, escaped for Mermaid.
    const wildcard = createMachine({ id: 'w', initial: 'a', states: { a: { on: { 'xstate.done.actor.*': 'b' } }, b: {} } });
    expect(readMermaid(toMermaid(wildcard)).edges).toContainEqual({ from: 'a', to: 'b', label: 'xstate.done.actor.#42;' });
    expect(toDot(wildcard)).toContain('xstate.done.actor.*');
  });

  it('keeps awkward names and events readable and valid', () => {
    const text = toMermaid(tricky);
    const d = readMermaid(text);
    expect(d.problems).toEqual([]);
    // Keyword names get another id and keep their name as the label.
    expect(d.states.get('s_default')).toBe('default');
    expect(d.states.get('s_state')).toBe('state');
    expect(d.states.get('s_note')).toBe('note');
    // A child named like Mermaid's own [*] ids does not clash with them.
    expect(d.states.get('s_note_start_')).toBe('start');
    expect(d.final.get('s_note')).toEqual(['s_note_end_']);
    const labels = d.edges.flatMap((e) => e.label.split('<br>'));
    expect(labels).toEqual(
      expect.arrayContaining([
        'go#42;',
        'file.#42; [not ok]',
        '#35;tag#37;#37;',
        'after 500ms',
        'after wait',
        'always [ok and ready]',
        'reset#58;all',
        'ping#59;',
        'a#lt;b#gt;#quot;c#quot;',
        'x#123;y#125;',
        '#100;irection TB',
        'done',
      ]),
    );
    // Parallel regions are separated by --.
    expect(text).toMatch(/\n {2}state par \{\n(?:.*\n)*? {4}--\n {4}state "right" as par_right \{\n/);
    // Transitions of a composite state that stay inside it start from its "(any state)".
    expect(d.states.get('s_note_any')).toBe('(any state)');
    expect(d.edges).toContainEqual({ from: 's_note_any', to: 's_note_start_', label: 'again' });
    expect(d.edges).toContainEqual({ from: 's_note_any', to: 's_note_any', label: 'stay' });
    expect(d.edges).toContainEqual({ from: 'any_state', to: 's_default', label: 'reset#58;all' });
  });
});

describe.each(Object.entries(all))('the %s machine', (_name, machine) => {
  it('is valid Mermaid', () => {
    expect(readMermaid(toMermaid(machine)).problems).toEqual([]);
  });

  it('is valid DOT', () => {
    expect(readDot(toDot(machine)).problems).toEqual([]);
  });

  it('draws every state node in Mermaid and in DOT', () => {
    const mermaid = readMermaid(toMermaid(machine));
    const dot = readDot(toDot(machine));
    const nodes = stateNodes(machine);
    expect(nodes.length).toBeGreaterThan(0);
    for (const node of nodes) {
      const mermaidId = [...mermaid.states.entries()].find(([id, label]) => label === node.key && mermaid.parents.get(id) === parentId(mermaid, node));
      expect(mermaidId, `${node.id} in Mermaid`).toBeDefined();
      const container = node.type === 'compound' || node.type === 'parallel';
      const inDot = container ? [...dot.clusters.values()].includes(node.key) : [...dot.nodes.values()].includes(node.key);
      expect(inDot, `${node.id} in DOT`).toBe(true);
    }
    // One Mermaid state per state node, plus the "(any state)" helpers.
    expect([...mermaid.states.values()].filter((label) => label !== '(any state)')).toHaveLength(nodes.length);
  });

  it('draws the same text every time, whatever the machine object', () => {
    const again = machine.provide({});
    expect(again).not.toBe(machine);
    expect(toMermaid(again)).toBe(toMermaid(machine));
    expect(toMermaid(machine)).toBe(toMermaid(machine));
    expect(toDot(again)).toBe(toDot(machine));
    expect(toStateTable(again)).toBe(toStateTable(machine));
  });
});

/** The Mermaid id of the composite state that holds `node` ('' at the top level), found through the labels. */
function parentId(d: MermaidDiagram, node: AnyStateNode): string {
  let id = '';
  for (const key of node.path.slice(0, -1)) {
    const found = [...d.states.entries()].find(([child, label]) => label === key && d.parents.get(child) === id);
    if (!found) return '?';
    id = found[0];
  }
  return id;
}

describe('toDotCombined', () => {
  it('draws all machines in one valid digraph', () => {
    const g = readDot(toDotCombined(machines));
    expect(g.problems).toEqual([]);
    for (const name of Object.keys(machines)) expect(g.clusters.get(`cluster_${name}`)).toBe(name);
    expect(g.nodes.has('session.receivingFile_opening')).toBe(true);
    expect(g.nodes.has('client.online_closing')).toBe(true);
  });
});

describe('toStateTable', () => {
  it('lists every state with its description', () => {
    const table = toStateTable(machines.session);
    expect(table).toContain('| `receivingFile.opening` | Checking the name, size and free space, and opening the partial file. |');
    expect(table).toMatch(/\| `closed` \| .* \(final\) \|/);
    expect(toStateTable(tricky)).toContain('| `default` | A state \\| with a pipe. |');
  });
});

describe('docs/machines.md', () => {
  it.each(Object.entries(machines))('shows the current %s diagram and states', async (name, machine) => {
    const text = await readFile(new URL('../docs/machines.md', import.meta.url), 'utf8').catch(() => '');
    const diagram = text.match(new RegExp(`<!-- diagram:${name}:start -->\\n\`\`\`mermaid\\n([\\s\\S]*?)\`\`\`\\n<!-- diagram:${name}:end -->`));
    expect(diagram?.[1], OUT_OF_DATE).toBe(toMermaid(machine));
    const states = text.match(new RegExp(`<!-- states:${name}:start -->\\n([\\s\\S]*?)<!-- states:${name}:end -->`));
    expect(states?.[1], OUT_OF_DATE).toBe(toStateTable(machine));
  });
});

describe('ferry diagram', () => {
  it('names every machine there is to draw, in the order they are drawn', () => {
    expect(MACHINE_NAMES).toEqual(Object.keys(machines));
  });

  let stdout: string;
  let stderr: string;
  let dir: string;
  const savedPath = process.env.PATH;

  beforeEach(async () => {
    stdout = '';
    stderr = '';
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      stdout += String(chunk);
      return true;
    });
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      stderr += String(chunk);
      return true;
    });
    dir = await mkdtemp(path.join(tmpdir(), 'ferry-diagram-'));
  });

  afterEach(async () => {
    vi.restoreAllMocks();
    process.env.PATH = savedPath;
    process.exitCode = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  async function run(...args: string[]): Promise<number | string | undefined> {
    const program = new Command().exitOverride();
    registerDiagram(program);
    process.exitCode = undefined;
    await program.parseAsync(['diagram', ...args], { from: 'user' });
    return process.exitCode;
  }

  it('prints one machine as Mermaid', async () => {
    expect(await run('session')).toBe(0);
    expect(stdout).toBe(toMermaid(machines.session));
  });

  it('prints every machine under a heading when none is named', async () => {
    expect(await run('--format', 'dot')).toBe(0);
    expect(stdout).toBe(Object.entries(machines).map(([name, machine]) => `// ${name}\n${toDot(machine)}`).join('\n'));
  });

  it('writes to --output', async () => {
    const file = path.join(dir, 'client.dot');
    expect(await run('client', '--format', 'dot', '--output', file)).toBe(0);
    expect(await readFile(file, 'utf8')).toBe(toDot(machines.client));
    expect(stdout).toBe('');
  });

  it('refuses an unknown machine with exit status 2 and the valid names', async () => {
    expect(await run('sesion')).toBe(2);
    expect(stderr).toBe('ferry: There is no machine called "sesion"; choose one of server, session, client.\n');
    expect(stdout).toBe('');
  });

  it('says how to install Graphviz when svg is asked for and `dot` cannot be found', async () => {
    process.env.PATH = dir;
    expect(await run('server', '--format', 'svg')).toBe(1);
    expect(stderr).toBe(
      'ferry: Graphviz is not installed; install it with `apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) or from graphviz.org.\n',
    );
    expect(stdout).toBe('');
  });
});
