/**
 * The XState patch (patches/, applied by `npm ci`).
 * - On Node 20 an object literal that starts with a spread and then adds properties gets a hidden
 *   class of its own every time. Unpatched, XState builds each actor's options and each spawn's
 *   children that way, so no two sessions' actors shared a shape.
 * - A snapshot copied without a change of state (an assign) keeps its state value and tags instead
 *   of computing them again from the active state nodes.
 * Each check runs in a node of its own, where V8's `%HaveSameMap` says whether two objects share a
 * shape, for the build node loads by default and for the development build (the one vitest loads).
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');

const probe = `
const { assign, createActor, createMachine, fromCallback, setup } = require('xstate');
const connection = fromCallback(() => () => undefined);
// Two invoked children: the second is added to a children map that already holds the first.
const machine = setup({ actors: { connection } }).createMachine({
  invoke: [
    { id: 'connection', src: 'connection', input: ({ context }) => ({ id: context.id }) },
    { id: 'heartbeat', src: 'connection' },
  ],
  context: ({ input }) => ({ id: input.id }),
  initial: 'idle',
  states: { idle: {} },
});
const parent = createActor(createMachine({}));
parent.start();
// Warm up, as a server does after its first connections.
const actors = [];
for (let i = 0; i < 200; i++) actors.push(createActor(machine, { id: 's' + i, input: { id: i }, parent }).start());
const [a, b] = actors.slice(-2);
// A step that only assigns keeps the active states, so their value and tags need no recomputing; a
// step that changes state computes them anew.
const counter = createActor(createMachine({
  context: { n: 0 },
  initial: 'on',
  states: {
    on: {
      initial: 'low',
      states: { low: { tags: ['live'], on: { up: 'high' } }, high: { tags: ['busy'] } },
      on: { add: { actions: assign({ n: ({ context }) => context.n + 1 }) } },
    },
  },
})).start();
const before = counter.getSnapshot();
counter.send({ type: 'add' });
const added = counter.getSnapshot();
counter.send({ type: 'up' });
const moved = counter.getSnapshot();
// Transition selection, which the patch makes cheaper, must choose as before: exact event types
// before partial descriptors before the wildcard, the innermost state first, both regions of a
// parallel state in document order, and of the eventless transitions enabled, the innermost state's.
const seen = [];
const note = (what) => () => seen.push(what);
const picker = createActor(createMachine({
  context: { ready: false },
  type: 'parallel',
  states: {
    left: {
      initial: 'a',
      always: { guard: ({ context }) => context.ready, target: '.c', actions: [assign({ ready: false }), note('left always')] },
      states: {
        a: { on: { 'file.saved': { target: 'b', actions: note('left exact') }, 'file.*': { actions: note('left partial') } } },
        b: {
          // Both this and the region's eventless transition are enabled once ready: the innermost wins.
          always: { guard: ({ context }) => context.ready, target: 'c', actions: [assign({ ready: false }), note('b always')] },
          on: { ready: { actions: [assign({ ready: true }), note('ready')] }, '*': { actions: note('left wildcard') } },
        },
        c: {},
      },
      on: { 'file.*': { actions: note('left outer partial') } },
    },
    right: {
      initial: 'x',
      states: { x: { on: { 'file.saved': { target: 'y', actions: note('right exact') } } }, y: {} },
    },
  },
})).start();
for (const type of ['file.ready', 'file.saved', 'file.failed', 'other', 'ready']) picker.send({ type });
console.log(JSON.stringify({
  selection: JSON.stringify(seen) === JSON.stringify(['left partial', 'left exact', 'right exact', 'left wildcard', 'left wildcard', 'ready', 'b always'])
    && JSON.stringify(picker.getSnapshot().value) === JSON.stringify({ left: 'c', right: 'y' }),
  options: %HaveSameMap(a.options, b.options),
  childOptions: %HaveSameMap(a.getSnapshot().children.connection.options, b.getSnapshot().children.connection.options),
  children: %HaveSameMap(a.getSnapshot().children, b.getSnapshot().children),
  assignKeepsValueAndTags: added.context.n === 1 && added !== before && added.value === before.value && added.tags === before.tags && added.hasTag('live'),
  transitionRecomputes: moved.value !== added.value && moved.value.on === 'high' && moved.hasTag('busy') && !moved.hasTag('live'),
}));
`;

function shapes(conditions: string[]): Record<string, boolean> {
  const run = spawnSync(process.execPath, ['--allow-natives-syntax', ...conditions, '-e', probe], { cwd: root, encoding: 'utf8' });
  expect(run.stderr).toBe('');
  expect(run.status).toBe(0);
  return JSON.parse(run.stdout) as Record<string, boolean>;
}

describe('XState as installed', () => {
  it.each([
    ['the default build', []],
    ['the development build', ['--conditions=development']],
  ])('gives every actor of %s options, and every session children, of one shared shape, and copies a snapshot without recomputing what did not change, and selects transitions as published', (_, conditions) => {
    expect(shapes(conditions)).toEqual({ options: true, childOptions: true, children: true, assignKeepsValueAndTags: true, transitionRecomputes: true, selection: true });
  });
});
