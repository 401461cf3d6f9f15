// What a case's result is and how it is written as TAP 13, shared by the kselftest harness
// (runSuite) and the kvmtest CLI so that both speak the same statuses, exit codes and lines
// (tools/testing/selftests/kselftest.h: ksft_test_result_*, ksft_print_cnts).

import { TestAssertionError } from './errors.js';

/** kselftest exit codes (tools/testing/selftests/kselftest.h). */
export const KSFT = {
  PASS: 0,
  FAIL: 1,
  XFAIL: 2,
  XPASS: 3,
  SKIP: 4,
} as const;

/**
 * How a case ended. `timeout`: it outlived its timeout; `interrupted`: the run was stopped
 * (Ctrl-C) while it ran. Both count as failures.
 */
export type CaseStatus = 'pass' | 'fail' | 'skip' | 'timeout' | 'interrupted';

/** What every report of a case carries, in the harness and in the CLI. */
export interface CaseOutcome {
  readonly name: string;
  readonly status: CaseStatus;
  readonly durationMs: number;
  /** Skip reason, failure message, timeout or interruption note. */
  readonly reason?: string;
}

/** True for the statuses that make a run fail. */
export function isFailure(status: CaseStatus): boolean {
  return status === 'fail' || status === 'timeout' || status === 'interrupted';
}

/** Joins a multi-line text into one line (TAP directives and XML attributes carry one line). */
export function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

/** A TAP description: "#" escaped so that it is not read as a directive, newlines folded. */
export function tapDescription(text: string): string {
  return oneLine(text).replace(/#/g, '\\#');
}

/** Text as TAP diagnostic lines (`# …`), trailing blank lines dropped. */
export function tapDiagnostics(text: string): string[] {
  const t = text.replace(/\s+$/, '');
  if (!t) return [];
  return t.split('\n').map((l) => (l ? `# ${l}` : '#'));
}

/**
 * The TAP result line of a case, as kselftest writes it: `ok N desc`, `ok N desc # SKIP why`,
 * `not ok N desc # TIMEOUT …`, `not ok N desc # interrupted`, `not ok N desc`.
 */
export function tapResultLine(
  number: number,
  description: string,
  outcome: Pick<CaseOutcome, 'status' | 'reason'>,
): string {
  const d = tapDescription(description);
  const why = oneLine(outcome.reason ?? '');
  switch (outcome.status) {
    case 'pass':
      return `ok ${number} ${d}`;
    case 'skip':
      return `ok ${number} ${d} # SKIP ${why}`.trimEnd();
    case 'timeout':
      return `not ok ${number} ${d} # TIMEOUT ${why}`.trimEnd();
    case 'interrupted':
      return `not ok ${number} ${d} # interrupted`;
    case 'fail':
      return `not ok ${number} ${d}`;
  }
}

/** Counts of a run, by kselftest's categories. */
export interface TapCounts {
  pass: number;
  fail: number;
  skip: number;
}

/** The closing line of ksft_print_cnts(). */
export function tapTotals(c: TapCounts): string {
  return `# Totals: pass:${c.pass} fail:${c.fail} xfail:0 xpass:0 skip:${c.skip} error:0`;
}

/**
 * The one line that says what failed, for a report's headline (JUnit `<failure message>`): an
 * assertion's own text (its message, else its expression), else the error's first message line.
 */
export function failureSummary(error: unknown): string {
  if (error instanceof TestAssertionError) {
    const text = error.userMessage.trim() || error.expression || error.message.split('\n')[0] || '';
    const at =
      error.file === undefined ? '' : ` (${error.file}${error.line === undefined ? '' : `:${error.line}`})`;
    return `${oneLine(text)}${at}`;
  }
  if (error instanceof Error) return oneLine(error.message.split('\n')[0] ?? error.name) || error.name;
  return `thrown value: ${String(error)}`;
}
