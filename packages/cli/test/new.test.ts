// `kvmtest new`: the scaffold in a scratch workspace beside the fixtures (so that the kvmtest
// packages resolve as in this repository), then the new suite listed and run at once.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';

const bin = join(import.meta.dirname, '..', 'src', 'bin.ts');
const scratchRoot = join(import.meta.dirname, '.scratch');
let ws = '';
afterEach(() => {
  if (ws) rmSync(ws, { recursive: true, force: true });
});

function kvmtest(args: string[]) {
  const r = spawnSync(process.execPath, ['--conditions=@kvmtest/source', '--import', 'tsx', bin, ...args], {
    cwd: ws,
    encoding: 'utf8',
    env: { ...process.env, KVMTEST_BACKEND: '', KVMTEST_SIM_HOST: '', FORCE_COLOR: '0' },
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('kvmtest new writes a suite the CLI lists and runs right away', { timeout: 240_000 }, () => {
  mkdirSync(scratchRoot, { recursive: true });
  ws = mkdtempSync(join(scratchRoot, 'ws-'));
  writeFileSync(join(ws, 'pnpm-workspace.yaml'), 'packages:\n  - apps/*\n');
  mkdirSync(join(ws, 'apps'));
  copyFileSync(
    join(import.meta.dirname, '..', '..', '..', 'tsconfig.base.json'),
    join(ws, 'tsconfig.base.json'),
  );

  const made = kvmtest(['new', 'my-suite', '--no-install']);
  expect(made.code).toBe(0);
  expect(made.stdout).toMatch(/created apps\/my-suite\/:[\s\S]*src\/suite\.ts/);
  const manifest = JSON.parse(readFileSync(join(ws, 'apps', 'my-suite', 'package.json'), 'utf8'));
  expect(manifest.name).toBe('@kvmtest/my-suite');
  expect(manifest.kvmtest).toEqual({ suite: '.' });
  expect(manifest.exports['.']).toMatchObject({
    '@kvmtest/source': './src/suite.ts',
    default: './dist/suite.js',
  });
  expect(readFileSync(join(ws, 'apps', 'my-suite', 'src', 'main.ts'), 'utf8')).toContain('runSuiteProgram');

  expect(kvmtest(['new', 'my-suite', '--no-install']).stderr).toMatch(/apps\/my-suite exists already/);
  const bad = kvmtest(['new', 'My Suite']);
  expect(bad.code).toBe(64);
  expect(bad.stderr).toMatch(/suite name "My Suite" must be lower-case/);

  expect(kvmtest(['list']).stdout).toContain('my-suite:a sev-es guest reports to its host');
  const run = kvmtest(['run', 'my-suite', '--reporter', 'tap']);
  expect(run.code).toBe(0);
  expect(run.stdout).toMatch(
    /# hello from the guest, answer 42\n# backend: sim\nok 1 my-suite: a default guest reports to its host/,
  );
  expect(run.stdout).toContain('ok 3 my-suite: a tdx guest reports to its host');
});
