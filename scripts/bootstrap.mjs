#!/usr/bin/env node
// The entry point behind `npm start`, `npm test`, `npm run bench`, …: on a fresh clone with only
// Node and npm it installs the pinned pnpm into .tools/, installs the workspace from the frozen
// lockfile, then runs the task. Nothing global is assumed or changed.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const pnpmVersion = pkg.packageManager.replace(/^pnpm@/, '');
const toolsDir = join(root, '.tools');
const toolsBin = join(toolsDir, 'node_modules', '.bin');
const binDir = join(root, 'node_modules', '.bin');

// Turbo's first-run telemetry notice is not part of what `npm start` shows; no telemetry either.
const env = {
  ...process.env,
  TURBO_TELEMETRY_DISABLED: '1',
  PATH: [binDir, toolsBin, process.env.PATH].join(delimiter),
};

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env, ...opts });
  if (r.error) throw r.error;
  return r.status ?? 1;
}

function must(cmd, args, opts) {
  const status = run(cmd, args, opts);
  if (status !== 0) process.exit(status);
}

function installedPnpmVersion() {
  const manifest = join(toolsDir, 'node_modules', 'pnpm', 'package.json');
  return existsSync(manifest) ? JSON.parse(readFileSync(manifest, 'utf8')).version : undefined;
}

function ensurePnpm() {
  if (installedPnpmVersion() === pnpmVersion) return;
  console.error(`bootstrap: installing pnpm ${pnpmVersion} into .tools/`);
  must('npm', [
    'install',
    '--prefix',
    toolsDir,
    '--no-audit',
    '--no-fund',
    '--loglevel=error',
    `pnpm@${pnpmVersion}`,
  ]);
}

// In CI the lockfile is the truth: a workspace that does not match it fails the install. On a
// developer's machine a new package (a suite made by hand or by `kvmtest new`) is welcome: the
// install updates pnpm-lock.yaml and says so, so the change can be committed.
function ensureWorkspace() {
  const quiet = ['--reporter=silent'];
  if (process.env.CI) {
    must('pnpm', ['install', '--frozen-lockfile', '--prefer-offline', ...quiet]);
    return;
  }
  const lockfile = join(root, 'pnpm-lock.yaml');
  const before = existsSync(lockfile) ? readFileSync(lockfile, 'utf8') : '';
  must('pnpm', ['install', '--prefer-offline', ...quiet]);
  const after = existsSync(lockfile) ? readFileSync(lockfile, 'utf8') : '';
  if (after !== before)
    console.error(
      'bootstrap: the workspace changed since pnpm-lock.yaml was written; updated it (commit it: CI installs from the lockfile as it is)',
    );
}

const tasks = {
  // `npm start -- <run options>` (e.g. `--backend sim,linux`): the options go to `kvmtest run`.
  start: (args) => must('node', ['scripts/start.mjs', ...args]),
  test: (args) => {
    must('node', ['scripts/check-layers.mjs']);
    must('vitest', ['run', ...args]);
  },
  typecheck: () => must('turbo', ['run', 'typecheck', '--output-logs=errors-only']),
  lint: () => must('biome', ['ci', '.']),
  bench: (args) => must('tsx', ['scripts/bench.ts', ...args]),
  // `npm run kvmtest -- <command>`: the CLI from its sources (never a stale build).
  kvmtest: (args) =>
    must('node', ['--conditions=@kvmtest/source', '--import', 'tsx', 'packages/cli/src/bin.ts', ...args], {
      // biome-ignore lint/suspicious/noUndeclaredEnvVars: npm's own variable (where `npm run` was typed), not a turbo task input
      cwd: process.env.INIT_CWD ?? process.cwd(),
    }),
};

const [task, ...args] = process.argv.slice(2);
if (!task || !(task in tasks)) {
  console.error(`usage: node scripts/bootstrap.mjs <${Object.keys(tasks).join('|')}> [args…]`);
  process.exit(2);
}
ensurePnpm();
ensureWorkspace();
tasks[task](args);
