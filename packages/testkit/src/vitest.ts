// @kvmtest/testkit/vitest — run kselftest-style suites under vitest: each case becomes a vitest
// test; a KsftSkip (testRequire) becomes a vitest skip. Kept out of the main entry so the library
// does not load vitest at runtime.

import { describe, test } from 'vitest';
import { KsftSkip } from './internal/errors.js';
import {
  caseContext,
  DEFAULT_CASE_TIMEOUT_MS,
  runWithTimeout,
  seedLine,
  type Suite,
} from './internal/harness.js';

/** How much longer vitest's own timeout is than the case's, so the case's report (naming the guest) wins. */
const VITEST_GRACE_MS = 2_000;

/** Options of vitestSuite. */
export interface VitestSuiteOptions {
  /** Per-case timeout in milliseconds (default 30 000); a case's own `timeoutMs` wins. */
  timeoutMs?: number;
}

/**
 * Registers every case of `suite` as a vitest test inside `describe(suite.name)`; a KsftSkip skips
 * the test. A case that outlives its timeout (its own `timeoutMs`, else `opts.timeoutMs`, else 30 s)
 * fails with a CaseTimeoutError naming the case and what each guest was doing, and its guests are
 * ended; vitest's own timeout is set a little later, as a backstop. A guest or body looping in
 * plain JavaScript is ended by runWithTimeout's watchdog in vitest's default `forks` pool (tests on
 * a process's main thread), not in the `threads` pool. A failure's message ends with the
 * KVMTEST_SEED that replays the interleaving.
 */
export function vitestSuite(suite: Suite, opts: VitestSuiteOptions = {}): void {
  describe(suite.name, () => {
    for (const c of suite.cases) {
      const timeoutMs = c.timeoutMs ?? opts.timeoutMs ?? DEFAULT_CASE_TIMEOUT_MS;
      test(
        c.name,
        async (ctx) => {
          const caseCtx = caseContext(suite.name, c.name, (line) => console.log(`# ${line}`));
          let timedOut: Error | undefined;
          try {
            timedOut = await runWithTimeout(c, caseCtx, timeoutMs);
          } catch (e) {
            if (e instanceof KsftSkip) {
              ctx.skip(e.reason);
              return;
            }
            if (e instanceof Error) e.message += `\n${seedLine()}`;
            throw e;
          }
          if (timedOut !== undefined) {
            timedOut.message += `\n${seedLine()}`;
            throw timedOut;
          }
        },
        timeoutMs + VITEST_GRACE_MS,
      );
    }
  });
}
