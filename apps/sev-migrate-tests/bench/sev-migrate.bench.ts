// Benchmarks of the sev-migrate-tests suite: the whole suite as a process (start included), and
// the migration rate of the locking case.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Bench } from '../../../scripts/bench/measure.js';
import { migrateLocking } from '../src/suite.js';

const appDir = join(import.meta.dirname, '..');
const root = join(appDir, '..', '..');

/** Builds the app (and what it needs) when its compiled entry is missing or older than its source. */
function ensureBuilt(): string {
  const main = join(appDir, 'dist', 'main.js');
  const stale =
    !existsSync(main) || statSync(main).mtimeMs < statSync(join(appDir, 'src', 'suite.ts')).mtimeMs;
  if (stale) {
    const r = spawnSync(
      join(root, 'node_modules', '.bin', 'turbo'),
      ['run', 'build', '--filter=@kvmtest/sev-migrate-tests...', '--output-logs=errors-only'],
      { cwd: root, stdio: 'inherit' },
    );
    if (r.status !== 0) throw new Error('building sev-migrate-tests failed');
  }
  return main;
}

export default [
  {
    name: 'apps.sev-migrate-tests',
    unit: 'ns/op',
    goal: '≤ 1.5 s (1.5e9 ns) for the whole suite as a process',
    async run() {
      const main = ensureBuilt();
      const times: number[] = [];
      for (let i = 0; i < 5; i++) {
        const t0 = process.hrtime.bigint();
        const r = spawnSync(process.execPath, [main], { cwd: appDir, encoding: 'utf8' });
        const t = Number(process.hrtime.bigint() - t0);
        if (r.status !== 0)
          throw new Error(`sev-migrate-tests exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
        times.push(t);
      }
      times.sort((a, b) => a - b);
      return times[2]!;
    },
  },
  {
    name: 'apps.sev-migrate-locking',
    unit: 'ops/s',
    goal: '≥ 100,000 migrations/s',
    async run() {
      await migrateLocking(1000); // warm-up
      const iterations = 10_000;
      const t0 = performance.now();
      await migrateLocking(iterations);
      return (3 * iterations * 1000) / (performance.now() - t0);
    },
  },
] satisfies Bench[];
