import { defineConfig } from 'vitest/config';

// `npm test`: every workspace project's tests in one run.
export default defineConfig({
  test: { projects: ['packages/*/vitest.config.ts', 'apps/*/vitest.config.ts', 'scripts/vitest.config.ts'] },
});
