// What the CLI needs from a suite module, and where suites live in a workspace.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

import type { Suite } from '@kvmtest/testkit';

/** A suite found in the workspace: its app package and the module to load. */
export interface SuiteRef {
  /** The app's folder name, which is the suite's name on the command line. */
  readonly name: string;
  readonly description: string;
  readonly dir: string;
  /** Module file for processes that read sources (the `@kvmtest/source` condition). */
  readonly sourceEntry: string;
  /** Module file for compiled output. */
  readonly distEntry: string;
}

/** True when this process resolves the repo-only `@kvmtest/source` export condition. */
export function sourceConditionActive(): boolean {
  const args = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  return (
    args.some((a) => /^(--conditions|-C)=?@kvmtest\/source$/.test(a)) || args.includes('@kvmtest/source')
  );
}

/** The workspace root: the nearest folder at or above `from` holding pnpm-workspace.yaml. */
export function findWorkspaceRoot(from: string): string | undefined {
  let dir = resolve(from);
  for (;;) {
    if (existsSync(join(dir, 'pnpm-workspace.yaml'))) return dir;
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

interface AppManifest {
  name?: string;
  description?: string;
  kvmtest?: { suite?: string };
  exports?: Record<string, unknown>;
}

function exportTarget(manifest: AppManifest, subpath: string, condition: string): string | undefined {
  const entry = manifest.exports?.[subpath];
  if (typeof entry === 'string') return entry;
  if (entry && typeof entry === 'object') {
    const v = (entry as Record<string, unknown>)[condition];
    return typeof v === 'string' ? v : undefined;
  }
  return undefined;
}

/**
 * Suites of a workspace: every `apps/<name>/package.json` with a `"kvmtest": { "suite": "<subpath>" }`
 * field naming the export that default-exports the suite. Sorted by name.
 */
export function discoverSuites(root: string): SuiteRef[] {
  const appsDir = join(root, 'apps');
  if (!existsSync(appsDir)) return [];
  const out: SuiteRef[] = [];
  for (const name of readdirSync(appsDir).sort()) {
    const dir = join(appsDir, name);
    const file = join(dir, 'package.json');
    if (!existsSync(file)) continue;
    const manifest = JSON.parse(readFileSync(file, 'utf8')) as AppManifest;
    const subpath = manifest.kvmtest?.suite;
    if (subpath === undefined) continue;
    const src = exportTarget(manifest, subpath, '@kvmtest/source');
    const dist = exportTarget(manifest, subpath, 'default');
    if (!src || !dist)
      throw new Error(
        `${file}: export ${JSON.stringify(subpath)} needs "@kvmtest/source" and "default" targets`,
      );
    out.push({
      name,
      description: manifest.description ?? '',
      dir,
      sourceEntry: join(dir, src),
      distEntry: join(dir, dist),
    });
  }
  return out;
}

/** Checks a loaded module's shape and returns its suite, or throws naming what is wrong. */
export function suiteFromModule(mod: Record<string, unknown>, where: string): Suite {
  const s = (mod.default ?? mod.suite) as Partial<Suite> | undefined;
  if (!s || typeof s.name !== 'string' || !Array.isArray(s.cases))
    throw new Error(`${where} does not export a suite (a default export with "name" and "cases")`);
  for (const c of s.cases)
    if (!c || typeof c.name !== 'string' || typeof c.run !== 'function')
      throw new Error(`${where}: every case needs a "name" and a "run" function`);
  return s as Suite;
}
