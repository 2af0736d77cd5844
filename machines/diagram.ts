import type { AnyStateMachine, AnyStateNode, AnyTransitionDefinition } from 'xstate';
import { toDirectedGraph, type DirectedGraphNode } from 'xstate/graph';
import { clientMachine } from './client.machine.js';
import { serverMachine } from './server.machine.js';
import { sessionMachine } from './session.machine.js';

/** ferry's machines by the name `ferry diagram` and docs/machines.md use for them. */
export const machines = { server: serverMachine, session: sessionMachine, client: clientMachine };

export type MachineName = keyof typeof machines;

/*
 * Both drawings come from one model of the machine, built by walking `toDirectedGraph(machine)`:
 *
 * - Every state node becomes a vertex; compound and parallel states contain their children.
 * - Transitions with the same source and target share one arrow, labelled with each transition on its
 *   own line, in definition order. This keeps busy states (say, every unexpected token leading to
 *   `closing`) readable.
 * - A transition without a target only runs actions; it is drawn as a loop on its state.
 * - The machine itself is not a box in the drawing. Its own transitions, which apply in every state,
 *   start from an extra "(any state)" vertex. A compound state's transitions that stay inside it, or
 *   that have no target, start from an "(any state)" vertex inside it, because Mermaid cannot draw an
 *   arrow from a composite state to itself or into its own children.
 *
 * The output depends only on the machine definition, in its written order, so it can be compared
 * byte for byte.
 */

interface Vertex {
  /** Unique in the drawing and usable as is, both as a Mermaid state id and as a DOT node id. */
  id: string;
  /** What a reader sees: the state's key. */
  label: string;
  kind: 'root' | 'state' | 'any';
  /** The state node; the machine's root node for the root; the container's node for an "any" vertex. */
  node: AnyStateNode;
  parent: Vertex | undefined;
  /** Child states, then the "(any state)" vertex if the container has one. */
  children: Vertex[];
  any?: Vertex;
  /** DOT only: the initial pseudo-state inside a container, and the final one, when needed. */
  start?: string;
  end?: string;
}

interface Link {
  from: Vertex;
  to: Vertex;
  labels: string[];
  /** Every transition on this arrow is targetless: it runs actions and leaves the state as it is. */
  internal: boolean;
}

interface Model {
  name: string;
  root: Vertex;
  links: Link[];
}

/** Words that start a statement in Mermaid's state diagram grammar, so a state id must not be one. */
const MERMAID_KEYWORDS = new Set([
  'as',
  'class',
  'classdef',
  'click',
  'default',
  'direction',
  'end',
  'hide',
  'href',
  'note',
  'root',
  'scale',
  'state',
  'statediagram',
  'style',
]);

/** Hands out ids that are valid Mermaid state ids, never clash with the ids Mermaid makes up itself, and are unique. */
class Ids {
  private readonly used = new Set<string>();

  take(candidate: string): string {
    let id = candidate.replace(/[^A-Za-z0-9_]/g, '_') || 'state';
    // The Mermaid lexer reads `default` even at the start of a longer word.
    if (MERMAID_KEYWORDS.has(id.toLowerCase()) || /^default/i.test(id)) id = `s_${id}`;
    // Mermaid names the [*] of a composite state `<id>_start` / `<id>_end`.
    if (/_(start|end)$/.test(id) || /^(start|end)\d*$/.test(id)) id = `${id}_`;
    while (this.used.has(id)) id = `${id}_`;
    this.used.add(id);
    return id;
  }
}

function isContainer(v: Vertex): boolean {
  return v.kind === 'root' || (v.kind === 'state' && (v.node.type === 'compound' || v.node.type === 'parallel'));
}

/** Whether `v` lies somewhere inside `container` (not `container` itself). */
function isInside(v: Vertex, container: Vertex): boolean {
  for (let p = v.parent; p; p = p.parent) if (p === container) return true;
  return false;
}

function buildModel(machine: AnyStateMachine): Model {
  const graph = toDirectedGraph(machine);
  const ids = new Ids();
  const vertices = new Map<AnyStateNode, Vertex>();
  const root: Vertex = { id: '', label: machine.id, kind: 'root', node: graph.stateNode, parent: undefined, children: [] };
  vertices.set(graph.stateNode, root);
  const nodes: DirectedGraphNode[] = [graph];

  const addChildren = (g: DirectedGraphNode, parent: Vertex): void => {
    for (const child of g.children) {
      const node = child.stateNode;
      const id = ids.take(parent.kind === 'root' ? node.key : `${parent.id}_${node.key}`);
      const v: Vertex = { id, label: node.key, kind: 'state', node, parent, children: [] };
      vertices.set(node, v);
      parent.children.push(v);
      nodes.push(child);
      addChildren(child, v);
    }
  };
  addChildren(graph, root);

  const anyOf = (container: Vertex): Vertex => {
    if (!container.any) {
      const id = ids.take(container.kind === 'root' ? 'any_state' : `${container.id}_any`);
      container.any = { id, label: '(any state)', kind: 'any', node: container.node, parent: container, children: [] };
      container.children.push(container.any);
    }
    return container.any;
  };

  const links: Link[] = [];
  const byEnds = new Map<string, Link>();
  for (const g of nodes) {
    const source = vertices.get(g.stateNode)!;
    for (const { transition, target } of transitionsOf(g)) {
      let from = source;
      let to = target ? vertices.get(target)! : source;
      if (from.kind === 'root' || (isContainer(from) && (to === from || isInside(to, from)))) from = anyOf(from);
      if (to.kind === 'root' || (isContainer(to) && (from === to.any || isInside(from, to)))) to = anyOf(to);
      const key = `${from.id}\u0000${to.id}`;
      let link = byEnds.get(key);
      if (!link) {
        link = { from, to, labels: [], internal: true };
        byEnds.set(key, link);
        links.push(link);
      }
      const label = transitionLabel(transition, g.stateNode);
      if (!link.labels.includes(label)) link.labels.push(label);
      if (target) link.internal = false;
    }
  }

  // DOT draws initial and final states as nodes of their own; they come last so that they never
  // change the ids of real states.
  const addPseudoStates = (container: Vertex): void => {
    if (container.node.initial) container.start = ids.take(container.kind === 'root' ? 'initial' : `${container.id}_initial`);
    if (container.children.some((c) => c.kind === 'state' && c.node.type === 'final')) {
      container.end = ids.take(container.kind === 'root' ? 'final' : `${container.id}_final`);
    }
    for (const child of container.children) if (isContainer(child)) addPseudoStates(child);
  };
  addPseudoStates(root);

  return { name: machine.id, root, links };
}

/** Each transition of a state node with each of its targets (undefined when it has none), in definition order. */
function transitionsOf(g: DirectedGraphNode): { transition: AnyTransitionDefinition; target: AnyStateNode | undefined }[] {
  const list: { transition: AnyTransitionDefinition; target: AnyStateNode | undefined }[] = [];
  // toDirectedGraph gives a targetless transition its own state as the target.
  for (const edge of g.edges) list.push({ transition: edge.transition, target: edge.transition.target?.length ? edge.target : undefined });
  // Eventless transitions are not among the graph's edges.
  for (const transition of (g.stateNode.always ?? []) as AnyTransitionDefinition[]) {
    if (transition.target?.length) for (const target of transition.target) list.push({ transition, target });
    else list.push({ transition, target: undefined });
  }
  return list;
}

/** The event as written, `after <delay>`, `always`, or `done <actor>`, then `[guard]` when there is one. */
function transitionLabel(transition: AnyTransitionDefinition, source: AnyStateNode): string {
  const type = transition.eventType;
  let label = type;
  if (type === '') label = 'always';
  else if (type.startsWith('xstate.after.')) {
    const delay = (transition as { delay?: unknown }).delay;
    const written = typeof delay === 'number' || typeof delay === 'string' ? delay : type.slice('xstate.after.'.length, type.length - source.id.length - 1);
    label = `after ${typeof written === 'number' ? `${written}ms` : written}`;
  } else if (type === `xstate.done.state.${source.id}`) label = 'done';
  else {
    for (const invoke of source.invoke) {
      const name = typeof invoke.src === 'string' && !invoke.src.startsWith('xstate.invoke.') ? invoke.src : invoke.id;
      if (type === `xstate.done.actor.${invoke.id}`) label = `done ${name}`;
      else if (type === `xstate.error.actor.${invoke.id}`) label = `error ${name}`;
      else if (type === `xstate.snapshot.${invoke.id}`) label = `snapshot ${name}`;
    }
  }
  const guard = guardText(transition.guard);
  return guard === undefined ? label : `${label} [${guard}]`;
}

function guardText(guard: unknown): string | undefined {
  if (guard === undefined || guard === null) return undefined;
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'function') {
    // not(), and() and or() return functions that carry the guards they combine.
    const combined = guard as { name?: string; guards?: unknown[]; check?: unknown };
    if (Array.isArray(combined.guards) && combined.check) {
      const parts = combined.guards.map((g) => {
        const text = guardText(g) ?? 'guard';
        return /\s/.test(text) ? `(${text})` : text;
      });
      if (combined.name === 'not') return `not ${parts[0] ?? 'guard'}`;
      if (combined.name === 'and' || combined.name === 'or') return parts.join(` ${combined.name} `);
    }
    return combined.name || 'inline guard';
  }
  if (typeof guard === 'object' && 'type' in guard) return String((guard as { type: unknown }).type);
  return 'guard';
}

/* ---------------------------------------------------------------- Mermaid */

const MERMAID_ENTITIES: Record<string, string> = {
  '#': '#35;',
  '%': '#37;',
  '&': '#amp;',
  '*': '#42;',
  ':': '#58;',
  ';': '#59;',
  '"': '#quot;',
  '<': '#lt;',
  '>': '#gt;',
  '\\': '#92;',
  '`': '#96;',
  '{': '#123;',
  '}': '#125;',
};

/**
 * Text that Mermaid shows as written. The characters its state diagram grammar gives a meaning to
 * (`:` and `;` end a label, `#` and `%%` start comments, `*`, quotes, braces, ...) become Mermaid entity
 * codes, which it turns back into the characters when it draws. A line mentioning "direction" followed
 * by a space is read as a layout statement, so that word is spelled with an entity too.
 */
function mermaidText(text: string): string {
  return text
    .replace(/\s+/g, ' ')
    .replace(/[#%&*:;"<>\\`{}]/g, (c) => MERMAID_ENTITIES[c] ?? c)
    .replace(/direction(?=\s)/gi, (word) => `#${word.charCodeAt(0)};${word.slice(1)}`);
}

function mermaidState(v: Vertex): string {
  return v.id === v.label ? v.id : `state "${mermaidText(v.label)}" as ${v.id}`;
}

function mermaidBlock(container: Vertex, indent: string, lines: string[]): void {
  for (const target of container.node.initial?.target ?? []) lines.push(`${indent}[*] --> ${findVertex(container, target).id}`);
  const parallel = container.kind === 'state' && container.node.type === 'parallel';
  container.children.forEach((child, i) => {
    if (parallel && i > 0 && child.kind === 'state') lines.push(`${indent}--`);
    if (!isContainer(child)) {
      lines.push(indent + mermaidState(child));
      return;
    }
    lines.push(`${indent}${child.id === child.label ? `state ${child.id}` : mermaidState(child)} {`);
    mermaidBlock(child, `${indent}  `, lines);
    lines.push(`${indent}}`);
  });
  for (const child of container.children) if (child.kind === 'state' && child.node.type === 'final') lines.push(`${indent}${child.id} --> [*]`);
}

function findVertex(container: Vertex, node: AnyStateNode): Vertex {
  const stack = [...container.children];
  for (let v = stack.shift(); v; v = stack.shift()) {
    if (v.kind === 'state' && v.node === node) return v;
    stack.push(...v.children);
  }
  throw new Error(`The initial state ${node.id} is not inside ${container.node.id}.`);
}

/**
 * The machine as a Mermaid `stateDiagram-v2`: every state (composite states as `state X { … }`
 * blocks), `[*]` for initial and final states, and one labelled arrow per source and target.
 * All arrows between states are listed after the blocks, at the top level, so that no arrow moves a
 * state into another block.
 */
export function toMermaid(machine: AnyStateMachine): string {
  const model = buildModel(machine);
  const lines = ['stateDiagram-v2'];
  mermaidBlock(model.root, '  ', lines);
  for (const link of model.links) lines.push(`  ${link.from.id} --> ${link.to.id} : ${link.labels.map(mermaidText).join('<br>')}`);
  return `${lines.join('\n')}\n`;
}

/* ---------------------------------------------------------------- DOT */

function dotString(text: string): string {
  return `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\r?\n/g, '\\n')}"`;
}

/** The node an arrow to or from a container attaches to: its initial pseudo-state (or its first region's). */
function anchor(v: Vertex): string {
  if (!isContainer(v)) return v.id;
  if (v.start) return v.start;
  const first = v.children.find((c) => c.kind === 'state') ?? v.children[0];
  if (!first) throw new Error(`The state ${v.node.id} has no states inside it.`);
  return anchor(first);
}

function dotBlock(container: Vertex, prefix: string, indent: string, lines: string[]): void {
  const id = (raw: string): string => dotString(prefix + raw);
  const cluster = (v: Vertex): string => dotString(`cluster_${prefix}${v.id}`);
  if (container.start) lines.push(`${indent}${id(container.start)} [shape=point, width=0.15];`);
  for (const child of container.children) {
    if (isContainer(child)) {
      lines.push(`${indent}subgraph ${cluster(child)} {`);
      lines.push(`${indent}  label=${dotString(child.label)};`);
      lines.push(`${indent}  style=${child.node.type === 'parallel' ? '"rounded,dashed"' : 'rounded'};`);
      dotBlock(child, prefix, `${indent}  `, lines);
      lines.push(`${indent}}`);
      continue;
    }
    const attrs = [`label=${dotString(child.label)}`];
    if (child.kind === 'any') attrs.push('style="rounded,dashed"');
    else if (child.node.type === 'final') attrs.push('peripheries=2');
    else if (child.node.type === 'history') attrs.push('shape=circle');
    lines.push(`${indent}${id(child.id)} [${attrs.join(', ')}];`);
  }
  if (container.end) lines.push(`${indent}${id(container.end)} [shape=point, width=0.15, peripheries=2];`);
  for (const target of container.node.initial?.target ?? []) {
    const v = findVertex(container, target);
    const attrs = isContainer(v) ? ` [lhead=${cluster(v)}]` : '';
    lines.push(`${indent}${id(container.start!)} -> ${id(anchor(v))}${attrs};`);
  }
  for (const child of container.children) {
    if (child.kind === 'state' && child.node.type === 'final') lines.push(`${indent}${id(child.id)} -> ${id(container.end!)};`);
  }
}

function dotLinks(model: Model, prefix: string, indent: string, lines: string[]): void {
  const id = (raw: string): string => dotString(prefix + raw);
  const cluster = (v: Vertex): string => dotString(`cluster_${prefix}${v.id}`);
  for (const link of model.links) {
    const attrs = [`label=${dotString(link.labels.join('\n'))}`];
    if (isContainer(link.from)) attrs.push(`ltail=${cluster(link.from)}`);
    if (isContainer(link.to)) attrs.push(`lhead=${cluster(link.to)}`);
    if (link.internal) attrs.push('style=dashed');
    lines.push(`${indent}${id(anchor(link.from))} -> ${id(anchor(link.to))} [${attrs.join(', ')}];`);
  }
}

const DOT_DEFAULTS = [
  'compound=true;',
  'fontname="Helvetica";',
  'node [shape=box, style=rounded, fontname="Helvetica", fontsize=11];',
  'edge [fontname="Helvetica", fontsize=9];',
];

/**
 * The machine as a Graphviz digraph: compound states are clusters, arrows to and from them are
 * clipped at the cluster's border, and targetless transitions are dashed loops.
 */
export function toDot(machine: AnyStateMachine): string {
  const model = buildModel(machine);
  const lines = [`digraph ${dotString(model.name)} {`, ...DOT_DEFAULTS.map((l) => `  ${l}`)];
  dotBlock(model.root, '', '  ', lines);
  dotLinks(model, '', '  ', lines);
  lines.push('}');
  return `${lines.join('\n')}\n`;
}

/** Several machines in one digraph, each in a cluster named after it: one picture for all of them. */
export function toDotCombined(named: Record<string, AnyStateMachine>, title = 'ferry'): string {
  const lines = [`digraph ${dotString(title)} {`, ...DOT_DEFAULTS.map((l) => `  ${l}`)];
  for (const [name, machine] of Object.entries(named)) {
    const model = buildModel(machine);
    const prefix = `${name}.`;
    lines.push(`  // ${name.replace(/\s+/g, ' ')}`);
    lines.push(`  subgraph ${dotString(`cluster_${name}`)} {`);
    lines.push(`    label=${dotString(name)};`);
    lines.push('    style=bold;');
    dotBlock(model.root, prefix, '    ', lines);
    lines.push('  }');
    dotLinks(model, prefix, '  ', lines);
  }
  lines.push('}');
  return `${lines.join('\n')}\n`;
}

/* ---------------------------------------------------------------- state table */

/**
 * A Markdown table of the machine's states, one line each, taken from their `description:` fields.
 * Nested states are written as their path (`receivingFile.opening`).
 */
export function toStateTable(machine: AnyStateMachine): string {
  const model = buildModel(machine);
  const rows = ['| state | what it means |', '| --- | --- |'];
  const walk = (container: Vertex): void => {
    for (const v of container.children) {
      if (v.kind !== 'state') continue;
      const description = (v.node.description ?? '(no description)').replace(/\s+/g, ' ').trim().replace(/\|/g, '\\|');
      const final = v.node.type === 'final' ? ' (final)' : '';
      rows.push(`| \`${v.node.path.join('.')}\` | ${description}${final} |`);
      walk(v);
    }
  };
  walk(model.root);
  return `${rows.join('\n')}\n`;
}
