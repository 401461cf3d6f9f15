// @kvmtest/testkit/vitest — run kselftest-style suites under vitest: each case becomes a vitest
// test; a KsftSkip (testRequire) becomes a vitest skip. Kept out of the main entry so the library
// does not load vitest at runtime.

import { describe, test } from 'vitest';
import { KsftSkip } from './internal/errors.js';
import { caseContext, type Suite } from './internal/harness.js';

/** Options of vitestSuite. */
export interface VitestSuiteOptions {
  /** Per-case timeout in milliseconds (default: the case's own, else vitest's). */
  timeoutMs?: number;
}

/** Registers every case of `suite` as a vitest test inside `describe(suite.name)`; a KsftSkip skips the test. */
export function vitestSuite(suite: Suite, opts: VitestSuiteOptions = {}): void {
  describe(suite.name, () => {
    for (const c of suite.cases) {
      test(
        c.name,
        async (ctx) => {
          const caseCtx = caseContext(suite.name, c.name, (line) => console.log(`# ${line}`));
          try {
            await c.run(caseCtx);
          } catch (e) {
            if (e instanceof KsftSkip) {
              ctx.skip(e.reason);
              return;
            }
            throw e;
          }
        },
        c.timeoutMs ?? opts.timeoutMs,
      );
    }
  });
}
