// Published packages contain only what users import: each library's `files` and tsconfig.build
// leave out tests, type tests and test support, and nothing that ships imports a file that does not.
import { readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, expect, test } from 'vitest';
// @ts-expect-error: a plain .mjs script without type declarations
import { importGraph, workspacePackages } from './check-layers.mjs';

type Pkg = { group: string; file: string; manifest: { name: string; files?: string[] } };
const TEST_PATTERNS = ['src/**/*.test.ts', 'src/**/*.test-d.ts', 'src/**/*.test-support.ts'];
const libraries = (workspacePackages() as Pkg[]).filter((p) => p.group === 'packages');

function excluded(rel: string, explicit: readonly string[]): boolean {
  return /\.test(-d|-support)?\.ts$/.test(rel) || explicit.includes(rel);
}

describe('published files', () => {
  test.each(libraries.map((p) => [p.manifest.name, p] as const))(
    '%s leaves out tests and test support',
    (_, p) => {
      const dir = dirname(p.file);
      const files = p.manifest.files ?? [];
      const build = JSON.parse(readFileSync(join(dir, 'tsconfig.build.json'), 'utf8')) as {
        exclude: string[];
      };
      for (const pattern of TEST_PATTERNS) {
        expect(files).toContain(`!${pattern}`);
        expect(build.exclude).toContain(pattern);
      }
      // A file left out by name (test support without the suffix) is left out of both.
      const explicit = files.filter((f) => f.startsWith('!') && !f.includes('*')).map((f) => f.slice(1));
      for (const f of explicit) expect(build.exclude).toContain(f);
      // Nothing that ships imports a file that does not.
      const graph: Map<string, string[]> = importGraph(join(dir, 'src'));
      const broken: string[] = [];
      for (const [from, deps] of graph) {
        const relFrom = relative(dir, from);
        if (excluded(relFrom, explicit)) continue;
        for (const to of deps)
          if (excluded(relative(dir, to), explicit)) broken.push(`${relFrom} → ${relative(dir, to)}`);
      }
      expect(broken).toEqual([]);
    },
  );
});
