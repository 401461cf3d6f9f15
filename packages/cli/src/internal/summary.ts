// Counting results and the kselftest exit code they give.
import { KSFT } from '@kvmtest/testkit';
import type { CaseResult } from './protocol.js';

/** Counts of a run. */
export interface Summary {
  passed: number;
  /** Failed, timed out or interrupted. */
  failed: number;
  skipped: number;
  /** Of the failed: cases stopped by Ctrl-C. */
  interrupted: number;
  total: number;
  durationMs: number;
  /** The run was stopped before its end: by Ctrl-C (`interrupt`) or at the first failure (`bail`). */
  stopped?: 'interrupt' | 'bail';
  /** Comparison runs: how many cases were the same, differed, or skipped on a side. */
  compared?: { same: number; differs: number; skipped: number };
}

/** Counts results; a timeout or an interruption counts as a failure. */
export function summarize(
  results: readonly CaseResult[],
  durationMs: number,
  stopped?: Summary['stopped'],
): Summary {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  let interrupted = 0;
  for (const r of results) {
    if (r.status === 'pass') passed++;
    else if (r.status === 'skip') skipped++;
    else failed++;
    if (r.status === 'interrupted') interrupted++;
  }
  const out: Summary = { passed, failed, skipped, interrupted, total: results.length, durationMs };
  if (stopped) out.stopped = stopped;
  if (results.some((r) => r.comparison)) {
    const compared = { same: 0, differs: 0, skipped: 0 };
    for (const r of results) if (r.comparison) compared[r.comparison.verdict]++;
    out.compared = compared;
  }
  return out;
}

/** kselftest exit codes used by a run: KSFT_PASS 0, KSFT_FAIL 1, KSFT_SKIP 4 (every case skipped). */
export const KSFT_EXIT = { PASS: KSFT.PASS, FAIL: KSFT.FAIL, SKIP: KSFT.SKIP } as const;

/** Exit code of a run stopped by Ctrl-C: 128 + SIGINT, as shells report it. */
export const EXIT_INTERRUPTED = 130;

/** The process exit code for a run. */
export function exitCodeFor(s: Summary): number {
  if (s.stopped === 'interrupt') return EXIT_INTERRUPTED;
  if (s.failed > 0) return KSFT_EXIT.FAIL;
  if (s.total > 0 && s.skipped === s.total) return KSFT_EXIT.SKIP;
  return KSFT_EXIT.PASS;
}

/** `1 case` / `2 cases`. */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** The one-line summary printed at the end of a run. */
export function summaryLine(s: Summary): string {
  const interrupted = s.interrupted ? `, ${s.interrupted} interrupted` : '';
  const line = `${s.passed} passed, ${s.failed - s.interrupted} failed${interrupted}, ${s.skipped} skipped (${plural(s.total, 'case')} in ${(s.durationMs / 1000).toFixed(2)} s)${s.stopped === 'interrupt' ? ' — interrupted' : s.stopped === 'bail' ? ' — stopped at the first failure (--bail)' : ''}`;
  const c = s.compared;
  return c
    ? `${line}; compared: ${c.same} same, ${c.differs} differ, ${c.skipped} skipped on a backend`
    : line;
}
