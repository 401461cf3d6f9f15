// `kvmtest new <name>`: writes a suite package under apps/<name> from the templates folder (its
// manifest has both export targets the CLI loads: `@kvmtest/source` for the sources, `default` for
// the build), then installs the workspace with its pinned pnpm so that pnpm-lock.yaml gains the new
// importer and `npm start` / `npm test` pass right away.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from './args.js';

/** The templates folder shipped with the package (`templates/suite`). */
export function templateDir(): string {
  return fileURLToPath(new URL('../../templates/suite', import.meta.url));
}

/** A suite name: a lower-case npm-safe folder name. */
export function checkSuiteName(name: string): void {
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(name) || name.length > 100)
    throw new UsageError(
      `suite name ${JSON.stringify(name)} must be lower-case letters, digits, ".", "_" or "-", starting with a letter or digit`,
      'new',
    );
}

function copyTemplate(from: string, to: string, vars: Record<string, string>, written: string[]): void {
  mkdirSync(to, { recursive: true });
  for (const e of readdirSync(from, { withFileTypes: true })) {
    const src = join(from, e.name);
    if (e.isDirectory()) {
      copyTemplate(src, join(to, e.name), vars, written);
      continue;
    }
    const dest = join(to, e.name.replace(/\.tmpl$/, ''));
    const text = readFileSync(src, 'utf8').replace(/\{\{(\w+)\}\}/g, (m, k: string) => vars[k] ?? m);
    writeFileSync(dest, text);
    written.push(dest);
  }
}

/** Where `new` reports. */
export interface NewIo {
  stdout: { write(t: string): void };
  stderr: { write(t: string): void };
}

/**
 * Creates apps/<name> in the workspace at `root` and, with `install`, runs the workspace's pnpm
 * (.tools/node_modules/.bin/pnpm, else `pnpm` on PATH) to add it to the lockfile. Resolves with
 * the exit code.
 */
export function newSuite(root: string, name: string, install: boolean, io: NewIo): number {
  checkSuiteName(name);
  const dir = join(root, 'apps', name);
  if (existsSync(dir)) throw new UsageError(`${relative(root, dir)} exists already`, 'new');
  const written: string[] = [];
  copyTemplate(templateDir(), dir, { name, description: `The ${name} suite` }, written);
  io.stdout.write(
    `created ${relative(root, dir)}/:\n${written.map((f) => `  ${relative(dir, f)}\n`).join('')}`,
  );
  if (!install) {
    io.stdout.write('next: install the workspace (npm start does) so that pnpm-lock.yaml lists the suite\n');
    return 0;
  }
  const local = join(root, '.tools', 'node_modules', '.bin', 'pnpm');
  const pnpm = existsSync(local) ? local : 'pnpm';
  io.stdout.write(
    `updating the workspace: ${relative(root, pnpm) || pnpm} install (pnpm-lock.yaml gains apps/${name})\n`,
  );
  const r = spawnSync(pnpm, ['install', '--no-frozen-lockfile', '--prefer-offline', '--reporter=silent'], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
  });
  if (r.error || r.status !== 0) {
    io.stderr.write(
      `kvmtest: the suite is written but the install failed (${r.error?.message ?? `exit ${r.status}`}): ${(r.stderr ?? '').trim()}\nrun \`npm start\` to install and run it\n`,
    );
    return 1;
  }
  io.stdout.write(
    `done: \`npm start\` runs it with the other suites, \`kvmtest run ${name}\` alone; commit apps/${name} and pnpm-lock.yaml\n`,
  );
  return 0;
}
