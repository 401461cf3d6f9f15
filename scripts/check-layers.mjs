#!/usr/bin/env node
// Layer check: a workspace package may depend only on packages below it (docs/architecture.md,
// "Layers"), and inside a package no source file may reach itself through its relative imports,
// type-only imports included.
// Reads every workspace package.json and every package's .ts files; fails naming each upward or
// sideways edge and each import cycle not in KNOWN_CYCLES.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

// Rank per package; a dependency must have a strictly lower rank (siblings may not import each other).
export const LAYERS = {
  '@kvmtest/guest-memory': 0,
  '@kvmtest/coco': 0,
  '@kvmtest/kvm': 1,
  '@kvmtest/kvm-sim': 2,
  '@kvmtest/kvm-linux': 2,
  '@kvmtest/ucall': 2,
  '@kvmtest/testkit': 3,
  '@kvmtest/cli': 4,
};
const APP_RANK = 5;

export function workspacePackages(dir = root) {
  const out = [];
  for (const group of ['packages', 'apps']) {
    const base = join(dir, group);
    if (!existsSync(base)) continue;
    for (const name of readdirSync(base)) {
      const file = join(base, name, 'package.json');
      if (existsSync(file)) out.push({ group, file, manifest: JSON.parse(readFileSync(file, 'utf8')) });
    }
  }
  return out;
}

export function layerViolations(pkgs) {
  const problems = [];
  const rankOf = (p) => (p.group === 'apps' ? APP_RANK : LAYERS[p.manifest.name]);
  for (const p of pkgs) {
    const rank = rankOf(p);
    if (rank === undefined) {
      problems.push(`${p.manifest.name} (${p.file}) is not in the layer table of scripts/check-layers.mjs`);
      continue;
    }
    const deps = {
      ...p.manifest.dependencies,
      ...p.manifest.peerDependencies,
      ...p.manifest.devDependencies,
    };
    for (const dep of Object.keys(deps)) {
      if (!dep.startsWith('@kvmtest/')) continue;
      const depRank = LAYERS[dep];
      if (depRank === undefined)
        problems.push(`${p.manifest.name} depends on ${dep}, which is not a library layer`);
      else if (depRank >= rank)
        problems.push(
          `${p.manifest.name} (layer ${rank}) depends on ${dep} (layer ${depRank}): a package may only depend on layers below it`,
        );
    }
  }
  return problems;
}

/**
 * Packages whose import cycles are known and reported without failing, each with the reason. Every
 * entry is work to do: remove it once the package is cycle-free (a stale entry is reported too).
 */
export const KNOWN_CYCLES = {};

// A static import or re-export of a relative path, type-only ones included (`import type`,
// `import { type X }`, `export type { X } from`): a loop of types is a loop of design too, so one
// graph holds both. An inline type query or dynamic import (`import('./x.js')`) is an edge as well.
const IMPORT_RE =
  /(?:^|[\s;])(?:(?:import|export)\s(?:[^'";]*?\sfrom\s)?|import\s*\(\s*)['"](\.{1,2}\/[^'"]+)['"]/g;

function tsFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name === 'dist' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...tsFiles(p));
    else if (/\.(m|c)?ts$/.test(name) && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** The file a relative specifier names (`./x.js` → x.ts, `./dir` → dir/index.ts), or undefined. */
function resolveSpecifier(from, spec, known) {
  const base = resolve(dirname(from), spec);
  const stem = base.replace(/\.(m|c)?js$/, '');
  for (const c of [base, `${stem}.ts`, `${stem}.mts`, `${stem}.cts`, join(base, 'index.ts')])
    if (known.has(c)) return c;
  return undefined;
}

/**
 * The file-level import graph of one package: relative imports and re-exports of every .ts file
 * under `dir`, type-only ones and `import('./x.js')` type queries included. `read` reads a file (for tests).
 */
export function importGraph(
  dir,
  files = existsSync(dir) ? tsFiles(dir) : [],
  read = (f) => readFileSync(f, 'utf8'),
) {
  const known = new Set(files);
  const graph = new Map();
  for (const f of files) {
    const deps = new Set();
    for (const m of read(f).matchAll(IMPORT_RE)) {
      const to = resolveSpecifier(f, m[1], known);
      if (to !== undefined) deps.add(to);
    }
    graph.set(f, [...deps]);
  }
  return graph;
}

/** The import cycles of a graph: every strongly connected component of more than one file (or a file importing itself), files sorted. */
export function importCycles(graph) {
  let index = 0;
  const idx = new Map();
  const low = new Map();
  const onStack = new Set();
  const stack = [];
  const cycles = [];
  const visit = (v) => {
    // Iterative Tarjan: a frame is [node, next-edge index].
    const frames = [[v, 0]];
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    while (frames.length) {
      const frame = frames[frames.length - 1];
      const [node, i] = frame;
      const edges = graph.get(node) ?? [];
      if (i < edges.length) {
        frame[1]++;
        const w = edges[i];
        if (!idx.has(w)) {
          idx.set(w, index);
          low.set(w, index++);
          stack.push(w);
          onStack.add(w);
          frames.push([w, 0]);
        } else if (onStack.has(w)) low.set(node, Math.min(low.get(node), idx.get(w)));
        continue;
      }
      frames.pop();
      if (frames.length) {
        const parent = frames[frames.length - 1][0];
        low.set(parent, Math.min(low.get(parent), low.get(node)));
      }
      if (low.get(node) === idx.get(node)) {
        const scc = [];
        let w;
        do {
          w = stack.pop();
          onStack.delete(w);
          scc.push(w);
        } while (w !== node);
        if (scc.length > 1 || (graph.get(node) ?? []).includes(node)) cycles.push(scc.sort());
      }
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  return cycles.sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

/**
 * Import cycles of every workspace package: `problems` (cycles in packages not in `known`, which
 * fail the check), `knownCycles` (reported, not failing) and `stale` (allow-list entries whose
 * package has no cycle left: remove them). `graphOf` builds a package's graph from its folder (for tests).
 */
export function cycleReport(pkgs, known = KNOWN_CYCLES, graphOf = (dir) => importGraph(dir)) {
  const problems = [];
  const knownCycles = [];
  const cyclic = new Set();
  for (const p of pkgs) {
    const dir = dirname(p.file);
    const name = p.manifest.name;
    for (const cycle of importCycles(graphOf(dir))) {
      cyclic.add(name);
      const text = `${name}: import cycle ${cycle.map((f) => relative(dir, f)).join(' ↔ ')}`;
      if (Object.hasOwn(known, name)) knownCycles.push(`${text} (known: ${known[name]})`);
      else problems.push(text);
    }
  }
  const names = new Set(pkgs.map((p) => p.manifest.name));
  const stale = Object.keys(known).filter((n) => names.has(n) && !cyclic.has(n));
  return { problems, knownCycles, stale };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const pkgs = workspacePackages();
  const problems = layerViolations(pkgs);
  const cycles = cycleReport(pkgs);
  for (const c of cycles.knownCycles) console.warn(`layer check (known): ${c}`);
  for (const n of cycles.stale)
    console.warn(`layer check: ${n} has no import cycle left; remove it from KNOWN_CYCLES`);
  problems.push(...cycles.problems);
  if (problems.length) {
    for (const p of problems) console.error(`layer check: ${p}`);
    process.exit(1);
  }
  console.log(
    `layer check: ${pkgs.length} workspace packages, no upward edges, no import cycles outside KNOWN_CYCLES (${cycles.knownCycles.length} known)`,
  );
}
