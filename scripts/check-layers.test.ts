import { describe, expect, test } from 'vitest';
// @ts-expect-error: a plain .mjs script without type declarations
import {
  cycleReport,
  importCycles,
  importGraph,
  KNOWN_CYCLES,
  LAYERS,
  layerViolations,
  workspacePackages,
} from './check-layers.mjs';

type Pkg = { group: string; file: string; manifest: { name: string; dependencies?: Record<string, string> } };
const pkg = (name: string, deps: string[] = [], group = 'packages'): Pkg => ({
  group,
  file: `${group}/${name}/package.json`,
  manifest: { name, dependencies: Object.fromEntries(deps.map((d) => [d, 'workspace:^'])) },
});

describe('layer check', () => {
  test('the real workspace has no upward edges', () => {
    expect(layerViolations(workspacePackages())).toEqual([]);
  });

  test('a dependency on a higher layer is reported with both names and layers', () => {
    const problems = layerViolations([pkg('@kvmtest/guest-memory', ['@kvmtest/kvm'])]);
    expect(problems).toEqual([
      '@kvmtest/guest-memory (layer 0) depends on @kvmtest/kvm (layer 1): a package may only depend on layers below it',
    ]);
  });

  test('siblings may not depend on each other', () => {
    expect(layerViolations([pkg('@kvmtest/ucall', ['@kvmtest/kvm-sim'])])).toHaveLength(1);
    expect(LAYERS['@kvmtest/ucall']).toBe(LAYERS['@kvmtest/kvm-sim']);
  });

  test('apps may use any library, and libraries may not use an app', () => {
    expect(layerViolations([pkg('coco-smoke', ['@kvmtest/cli', '@kvmtest/testkit'], 'apps')])).toEqual([]);
    expect(layerViolations([pkg('@kvmtest/cli', ['sev-migrate-tests'])])).toEqual([]);
    expect(layerViolations([pkg('@kvmtest/testkit', ['@kvmtest/sev-migrate-tests'])])).toEqual([
      '@kvmtest/testkit depends on @kvmtest/sev-migrate-tests, which is not a library layer',
    ]);
  });

  test('a package missing from the layer table is reported', () => {
    expect(layerViolations([pkg('@kvmtest/new-thing')])[0]).toMatch(/is not in the layer table/);
  });
});

describe('import-cycle check', () => {
  const graphOf = (files: Record<string, string>) =>
    importGraph('/p', Object.keys(files), (f: string) => files[f] ?? '');

  test('the real workspace has no import cycle outside the allow-list', () => {
    // A stale entry (a package that became cycle-free) is only a warning of the script, so the
    // package that empties it need not edit this file in the same change.
    expect(cycleReport(workspacePackages()).problems).toEqual([]);
  });

  test('every allow-list entry names a workspace package and gives a reason', () => {
    const names = new Set(workspacePackages().map((p: Pkg) => p.manifest.name));
    for (const [name, reason] of Object.entries(KNOWN_CYCLES)) {
      expect(names.has(name)).toBe(true);
      expect(String(reason).length).toBeGreaterThan(20);
    }
  });

  test('a loop through three files is one cycle naming all three', () => {
    const g = graphOf({
      '/p/a.ts': "import { b } from './b.js';",
      '/p/b.ts': "export { c } from './sub/c.js';",
      '/p/sub/c.ts': "import * as a from '../a.js';\nimport { x } from 'pkg';",
      '/p/d.ts': "import { a } from './a.js';",
    });
    expect(importCycles(g)).toEqual([['/p/a.ts', '/p/b.ts', '/p/sub/c.ts']]);
  });

  test('package imports and a DAG make no cycle', () => {
    const g = graphOf({
      '/p/a.ts': "import type { B } from './b.js';\nimport { c } from './c.js';",
      '/p/b.ts': "import { z } from '@kvmtest/kvm';\nexport type { C } from './c.js';",
      '/p/c.ts': "import { z } from '@kvmtest/kvm';\nimport type { Y } from '@kvmtest/coco';",
    });
    expect(importCycles(g)).toEqual([]);
  });

  test('a loop through type-only imports is a cycle too', () => {
    const g = graphOf({
      '/p/a.ts': "import type { B } from './b.js';",
      '/p/b.ts': "import type { A } from './a.js';",
    });
    expect(importCycles(g)).toEqual([['/p/a.ts', '/p/b.ts']]);
  });

  test('every form of a type-only edge counts: import type, inline type, export type, multi-line, import()', () => {
    const forms = [
      "import type { A } from './a.js';",
      "import { type A, type Z } from './a.js';",
      "export type { A } from './a.js';",
      "import type {\n  A,\n  Z,\n} from './a.js';",
      "let x: import('./a.js').A;",
      "export interface I { f: readonly import( './a.js' ).A[] }",
    ];
    for (const form of forms) {
      const g = graphOf({ '/p/a.ts': "import { b } from './b.js';", '/p/b.ts': form });
      expect(importCycles(g), form).toEqual([['/p/a.ts', '/p/b.ts']]);
    }
  });

  test('a directory import resolves to its index, and a file importing itself is a cycle', () => {
    const g = graphOf({
      '/p/a.ts': "import { x } from './dir';",
      '/p/dir/index.ts': "import { a } from '../a.js';",
      '/p/self.ts': "import { s } from './self.js';",
    });
    expect(importCycles(g)).toEqual([['/p/a.ts', '/p/dir/index.ts'], ['/p/self.ts']]);
  });

  test('a cycle in an allow-listed package is known, elsewhere a problem; an entry with no cycle is stale', () => {
    const loop = graphOf({ '/p/a.ts': "import './b.js';", '/p/b.ts': "import './a.js';" });
    const pkgs = [pkg('@kvmtest/kvm-sim'), pkg('@kvmtest/ucall'), pkg('@kvmtest/coco')];
    const graphs: Record<string, unknown> = {
      'packages/@kvmtest/kvm-sim': loop,
      'packages/@kvmtest/ucall': loop,
      'packages/@kvmtest/coco': graphOf({ '/p/a.ts': '' }),
    };
    const report = cycleReport(
      pkgs,
      { '@kvmtest/kvm-sim': 'being split', '@kvmtest/coco': 'was split' },
      (dir: string) => graphs[dir],
    );
    expect(report.problems).toHaveLength(1);
    expect(report.problems[0]).toMatch(/^@kvmtest\/ucall: import cycle \S*p\/a\.ts ↔ \S*p\/b\.ts$/);
    expect(report.knownCycles).toHaveLength(1);
    expect(report.knownCycles[0]).toMatch(/^@kvmtest\/kvm-sim: import cycle .* \(known: being split\)$/);
    expect(report.stale).toEqual(['@kvmtest/coco']);
  });
});
