// A user's project outside this repository: the packages built and packed as they would be
// published, installed with npm into a plain scratch project whose package.json names its suite
// files, then `npx kvmtest list` / `npx kvmtest run` there. Offline when npm's cache has the
// registry packages (koffi, fast-xml-parser); a registry fetch that fails skips the test, saying why.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, test } from 'vitest';

const repo = join(import.meta.dirname, '..', '..', '..');
// Dependency order: a package is built after what it imports.
const PACKAGES = ['guest-memory', 'coco', 'kvm', 'kvm-sim', 'ucall', 'kvm-linux', 'testkit', 'cli'];

const SUITE = `import { defineGuest, defineSuite, guestDone, guestPrintf, runUcall, vmCreateWithOneVcpu } from '@kvmtest/testkit';

const guest = defineGuest(async (g) => {
  await guestPrintf(g, 'hello from %s', 'a user project');
  await guestDone(g);
});

export default defineSuite({
  name: 'smoke',
  cases: [
    { name: 'host only', run() {} },
    {
      name: 'a guest runs to DONE',
      async run() {
        const vm = vmCreateWithOneVcpu(guest);
        try {
          for (;;) if ((await runUcall(vm.vcpus[0])).cmd === 4 /* UCALL_DONE */) return;
        } finally {
          vm.close();
        }
      },
    },
  ],
});
`;

function sh(cmd: string, args: string[], cwd: string, timeout = 300_000) {
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    timeout,
    env: { ...process.env, FORCE_COLOR: '0', KVMTEST_BACKEND: '' },
  });
  return { code: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}`, error: r.error };
}

test('npm install of the packed packages into a plain project, then npx kvmtest run finds its suites', {
  timeout: 900_000,
}, (ctx) => {
  const tsc = join(repo, 'node_modules', '.bin', 'tsc');
  const pnpm = join(repo, '.tools', 'node_modules', '.bin', 'pnpm');
  if (!existsSync(pnpm)) ctx.skip(`no pinned pnpm at ${pnpm} (run node scripts/bootstrap.mjs lint)`);
  const tarballs = mkdtempSync(join(tmpdir(), 'kvmtest-tgz-'));
  for (const p of PACKAGES) {
    const dir = join(repo, 'packages', p);
    // tsc writes its output even with type errors; a package whose output is missing cannot ship.
    const built = sh(tsc, ['-p', 'tsconfig.build.json'], dir);
    expect(existsSync(join(dir, 'dist', 'index.js')), `${p} did not build:\n${built.out}`).toBe(true);
    const packed = sh(pnpm, ['pack', '--pack-destination', tarballs], dir);
    expect(packed.code, packed.out).toBe(0);
  }
  const files = readdirSync(tarballs).map((f) => join(tarballs, f));
  expect(files).toHaveLength(PACKAGES.length);

  const project = mkdtempSync(join(tmpdir(), 'kvmtest-project-'));
  writeFileSync(
    join(project, 'package.json'),
    JSON.stringify({
      name: 'scratch',
      private: true,
      type: 'module',
      kvmtest: { suites: ['test/*.suite.mjs'] },
    }),
  );
  mkdirSync(join(project, 'test'));
  writeFileSync(join(project, 'test', 'smoke.suite.mjs'), SUITE);
  const install = sh(
    'npm',
    ['install', '-D', '--no-audit', '--no-fund', '--prefer-offline', ...files],
    project,
    600_000,
  );
  if (
    install.code !== 0 &&
    /ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNREFUSED|ENETUNREACH|network|offline/i.test(install.out)
  )
    ctx.skip(
      `npm could not fetch a registry package: ${install.out.split('\n').find((l) => /ERR/.test(l)) ?? install.out}`,
    );
  expect(install.code, install.out).toBe(0);

  const list = sh('npx', ['--no-install', 'kvmtest', 'list'], project);
  expect(list.code, list.out).toBe(0);
  expect(list.out).toContain('smoke:a guest runs to DONE');
  const run = sh('npx', ['--no-install', 'kvmtest', 'run', '--reporter', 'tap'], project);
  expect(run.code, run.out).toBe(0);
  expect(run.out).toContain('ok 1 smoke: host only');
  expect(run.out).toMatch(/# hello from a user project\n# backend: sim\nok 2 smoke: a guest runs to DONE/);
});
