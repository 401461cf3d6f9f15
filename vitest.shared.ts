// Vitest settings every workspace project shares: sibling packages are read from source through
// the repo-only "@kvmtest/source" export condition, so tests need no build step.
import { basename, join } from 'node:path';
import { defineConfig } from 'vitest/config';

export function projectConfig(dir: string) {
  return defineConfig({
    resolve: { conditions: ['@kvmtest/source', 'import', 'default'] },
    ssr: { resolve: { conditions: ['@kvmtest/source', 'import', 'default'] } },
    test: {
      name: basename(dir),
      root: dir,
      include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
      passWithNoTests: true,
      testTimeout: 30_000,
      // fast-check: fixed seed in CI, KVMTEST_FC_SEED / KVMTEST_FC_RUNS on demand (README).
      setupFiles: [join(import.meta.dirname, 'vitest.fast-check.ts')],
    },
  });
}
