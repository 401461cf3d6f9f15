import { defineConfig } from 'vitest/config';

// Tests of the repository's own scripts (layer check, bench runner helpers).
export default defineConfig({
  test: { name: 'scripts', root: import.meta.dirname, include: ['**/*.test.ts'] },
});
