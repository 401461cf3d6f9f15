// Counting results and the kselftest exit code they give.
import type { CaseResult } from './protocol.js';

/** Counts of a run. */
export interface Summary {
  passed: number;
  failed: number;
  skipped: number;
  total: number;
  durationMs: number;
  /** Comparison runs: how many cases were the same, differed, or skipped on a side. */
  compared?: { same: number; differs: number; skipped: number };
}

/** Counts results; a timeout counts as a failure. */
export function summarize(results: readonly CaseResult[], durationMs: number): Summary {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  for (const r of results) {
    if (r.status === 'pass') passed++;
    else if (r.status === 'skip') skipped++;
    else failed++;
  }
  const out: Summary = { passed, failed, skipped, total: results.length, durationMs };
  if (results.some((r) => r.comparison)) {
    const compared = { same: 0, differs: 0, skipped: 0 };
    for (const r of results) if (r.comparison) compared[r.comparison.verdict]++;
    out.compared = compared;
  }
  return out;
}

/** kselftest exit codes: KSFT_PASS 0, KSFT_FAIL 1, KSFT_SKIP 4 (every case skipped). */
export const KSFT_EXIT = { PASS: 0, FAIL: 1, SKIP: 4 } as const;

/** The process exit code for a run. */
export function exitCodeFor(s: Summary): number {
  if (s.failed > 0) return KSFT_EXIT.FAIL;
  if (s.total > 0 && s.skipped === s.total) return KSFT_EXIT.SKIP;
  return KSFT_EXIT.PASS;
}

/** The one-line summary printed at the end of a run. */
export function summaryLine(s: Summary): string {
  const line = `${s.passed} passed, ${s.failed} failed, ${s.skipped} skipped (${s.total} cases in ${(s.durationMs / 1000).toFixed(2)} s)`;
  const c = s.compared;
  return c
    ? `${line}; compared: ${c.same} same, ${c.differs} differ, ${c.skipped} skipped on a backend`
    : line;
}
