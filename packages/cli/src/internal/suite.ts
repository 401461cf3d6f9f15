// What the CLI needs from a suite module, where suites live (a kvmtest workspace's apps/*, or a
// user project's suite globs), and how a suite process loads them: from TypeScript sources through
// tsx whenever there are sources, so that no stale build output runs and every location in a report
// is a source line.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import type { Suite } from '@kvmtest/testkit';

/** A suite the CLI can run: its name on the command line and the module to load. */
export interface SuiteRef {
  /** The suite's name on the command line (the app's folder, or the suite file's base name). */
  readonly name: string;
  readonly description: string;
  /** The folder the suite process runs in. */
  readonly dir: string;
  /** Module file holding the sources (TypeScript), loaded through tsx. */
  readonly sourceEntry: string;
  /** Module file of compiled output, used only when the sources cannot be run. */
  readonly distEntry: string;
  /** True in a kvmtest workspace: the `@kvmtest/source` condition resolves the packages to their sources. */
  readonly workspace: boolean;
}

/** Where the suites were found. */
export interface Project {
  /** `workspace`: a kvmtest monorepo (pnpm-workspace.yaml, suites in apps/*); `project`: a user's package. */
  readonly kind: 'workspace' | 'project';
  readonly root: string;
  readonly suites: readonly SuiteRef[];
  /** Suites that could not be described (a bad manifest): named with the reason, the others still run. */
  readonly broken: readonly { name: string; error: string }[];
}

/** A project's configuration: `"kvmtest": { "suites": [globs] }` in package.json or kvmtest.config.json. */
export interface ProjectConfig {
  suites: string[];
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

function readConfig(dir: string): ProjectConfig | undefined {
  const file = join(dir, 'kvmtest.config.json');
  const pkgFile = join(dir, 'package.json');
  let raw: unknown;
  let where = file;
  if (existsSync(file)) raw = JSON.parse(readFileSync(file, 'utf8'));
  else if (existsSync(pkgFile)) {
    raw = (JSON.parse(readFileSync(pkgFile, 'utf8')) as { kvmtest?: unknown }).kvmtest;
    where = `${pkgFile} "kvmtest"`;
  }
  if (raw === undefined || (typeof raw === 'object' && raw !== null && !('suites' in raw))) return undefined;
  const suites = (raw as { suites?: unknown }).suites;
  if (!Array.isArray(suites) || suites.length === 0 || !suites.every((s) => typeof s === 'string'))
    throw new Error(`${where}: "suites" must be a non-empty array of file globs (e.g. ["test/*.suite.ts"])`);
  return { suites };
}

/** A glob (`*` within a name, `**` across folders, `?` one character) as a regular expression on /-paths. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      i++;
      if (glob[i + 1] === '/') {
        i++;
        re += '(?:.*/)?';
      } else re += '.*';
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

function walk(dir: string, root: string, out: string[]): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name.startsWith('.')) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p, root, out);
    else out.push(relative(root, p).split(sep).join('/'));
  }
}

/** The suite name of a suite file: its base name without `.suite` and the extension. */
export function suiteNameOfFile(file: string): string {
  return basename(file)
    .replace(/\.[cm]?[jt]s$/, '')
    .replace(/\.suite$/, '');
}

/** The suites a project's globs name, sorted by name; two files with one name are an error. */
export function projectSuites(root: string, config: ProjectConfig): SuiteRef[] {
  const files: string[] = [];
  walk(root, root, files);
  const patterns = config.suites.map(globToRegExp);
  const out = new Map<string, SuiteRef>();
  for (const f of files.sort()) {
    if (!patterns.some((p) => p.test(f)) || /\.test\.[cm]?[jt]s$/.test(f)) continue;
    const name = suiteNameOfFile(f);
    const prev = out.get(name);
    if (prev)
      throw new Error(`two suite files are named ${name}: ${relative(root, prev.sourceEntry)} and ${f}`);
    const abs = join(root, f);
    out.set(name, { name, description: '', dir: root, sourceEntry: abs, distEntry: abs, workspace: false });
  }
  return [...out.values()].sort((a, b) => a.name.localeCompare(b.name));
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
 * field naming the export that default-exports the suite. Sorted by name. A manifest that cannot be
 * read or lacks an export target is returned in `broken`, with the reason, and the others stay.
 */
export function workspaceSuites(root: string): {
  suites: SuiteRef[];
  broken: { name: string; error: string }[];
} {
  const appsDir = join(root, 'apps');
  const suites: SuiteRef[] = [];
  const broken: { name: string; error: string }[] = [];
  if (!existsSync(appsDir)) return { suites, broken };
  for (const name of readdirSync(appsDir).sort()) {
    const dir = join(appsDir, name);
    const file = join(dir, 'package.json');
    if (!existsSync(file)) continue;
    try {
      const manifest = JSON.parse(readFileSync(file, 'utf8')) as AppManifest;
      const subpath = manifest.kvmtest?.suite;
      if (subpath === undefined) continue;
      const src = exportTarget(manifest, subpath, '@kvmtest/source');
      const dist = exportTarget(manifest, subpath, 'default');
      if (!src || !dist)
        throw new Error(
          `${file}: export ${JSON.stringify(subpath)} needs "@kvmtest/source" and "default" targets (see \`kvmtest new\`)`,
        );
      suites.push({
        name,
        description: manifest.description ?? '',
        dir,
        sourceEntry: join(dir, src),
        distEntry: join(dir, dist),
        workspace: true,
      });
    } catch (e) {
      broken.push({ name, error: (e as Error).message });
    }
  }
  return { suites, broken };
}

/** Suites of a workspace (throws on the first broken manifest; `workspaceSuites` reports them instead). */
export function discoverSuites(root: string): SuiteRef[] {
  const { suites, broken } = workspaceSuites(root);
  if (broken[0]) throw new Error(broken[0].error);
  return suites;
}

/**
 * Finds the project at or above `from`: the nearest folder whose package.json has a `kvmtest.suites`
 * key or that holds kvmtest.config.json (a user's project), else the nearest kvmtest workspace.
 */
export function findProject(from: string): Project | undefined {
  let dir = resolve(from);
  for (;;) {
    const config = readConfig(dir);
    if (config) return { kind: 'project', root: dir, suites: projectSuites(dir, config), broken: [] };
    if (existsSync(join(dir, 'pnpm-workspace.yaml')) && existsSync(join(dir, 'apps'))) {
      const { suites, broken } = workspaceSuites(dir);
      return { kind: 'workspace', root: dir, suites, broken };
    }
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

/** The file URL of tsx's loader as seen from `from` (a folder), or undefined when tsx is not installed there. */
export function tsxLoader(from: string): string | undefined {
  try {
    const manifest = createRequire(join(from, 'noop.js')).resolve('tsx/package.json');
    const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { exports?: Record<string, unknown> };
    const dot = pkg.exports?.['.'];
    const target =
      typeof dot === 'string' ? dot : ((dot as Record<string, string> | undefined)?.import ?? undefined);
    return target ? pathToFileURL(join(dirname(manifest), target)).href : undefined;
  } catch {
    return undefined;
  }
}

/** How a suite process is started: the child module and Node's flags. */
export interface SuiteRunner {
  readonly childEntry: string;
  readonly execArgv: readonly string[];
  /** The module the child loads. */
  readonly entry: string;
  /** `source`: TypeScript run through tsx; `built`: compiled JavaScript. */
  readonly mode: 'source' | 'built';
}

const here = fileURLToPath(import.meta.url);

function childModule(source: boolean): string {
  const sibling = here.replace(/suite\.(ts|js)$/, 'child.$1');
  if (!source || sibling.endsWith('.ts')) return sibling;
  // Built CLI, sources beside it (this repository, or the published package's src/): run those.
  const src = sibling.replace(/([/\\])dist([/\\]internal[/\\])child\.js$/, '$1src$2child.ts');
  return existsSync(src) ? src : sibling;
}

/** Node flags of this process minus those the runner decides (loader, conditions, source maps). */
function ownFlagsRemoved(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (/^(--conditions|-C|--import|--loader|--experimental-loader|--require|-r)$/.test(a)) i++;
    else if (
      !/^(--conditions|--import|--loader|--experimental-loader|--require)=|^--enable-source-maps$/.test(a)
    )
      out.push(a);
  }
  return out;
}

/**
 * How to run `ref`: through tsx from its sources when they exist and tsx can be found (from the
 * suite's folder or the CLI's), with the `@kvmtest/source` condition in a workspace so that the
 * kvmtest packages load from their sources too; otherwise its compiled module with plain Node.
 */
export function suiteRunner(ref: SuiteRef): SuiteRunner {
  const isTs = /\.[cm]?ts$/.test(ref.sourceEntry);
  const loader =
    isTs && existsSync(ref.sourceEntry) ? (tsxLoader(ref.dir) ?? tsxLoader(dirname(here))) : undefined;
  const keep = ownFlagsRemoved(process.execArgv);
  if (loader) {
    const conditions = ref.workspace ? ['--conditions=@kvmtest/source'] : [];
    return {
      childEntry: childModule(ref.workspace),
      execArgv: [...keep, ...conditions, '--import', loader, '--enable-source-maps'],
      entry: ref.sourceEntry,
      mode: 'source',
    };
  }
  if (!existsSync(ref.distEntry) || (isTs && ref.distEntry === ref.sourceEntry))
    throw new Error(
      `suite ${ref.name}: ${ref.sourceEntry} is TypeScript and tsx is not installed (npm install -D tsx), and there is no built ${ref.distEntry}`,
    );
  if (existsSync(ref.sourceEntry) && statSync(ref.sourceEntry).mtimeMs > statSync(ref.distEntry).mtimeMs)
    process.emitWarning(
      `suite ${ref.name}: ${ref.distEntry} is older than its source; install tsx to run sources`,
    );
  return {
    childEntry: childModule(false),
    execArgv: [...keep, '--enable-source-maps'],
    entry: ref.distEntry,
    mode: 'built',
  };
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
