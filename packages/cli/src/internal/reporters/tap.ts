// TAP version 13, in the shape kselftest's runner prints: "ok N suite: case", "# SKIP" and
// "# TIMEOUT" directives, the case's output and failure as "# " lines before its result line, and
// the plan "1..N" at the end (TAP allows a trailing plan) with ksft_print_cnts()'s totals. The
// lines come from testkit, which its own harness shares. Numbers follow the planned order of the
// suites (the run replays the suites in order), so they are the same from run to run.
import { oneLine, tapDiagnostics, tapResultLine, tapTotals } from '@kvmtest/testkit';
import type { CaseResult } from '../protocol.js';
import type { Summary } from '../summary.js';
import type { Reporter, Sink } from './reporter.js';

function description(r: CaseResult): string {
  return `${r.suite}: ${r.name}${r.repeat === undefined ? '' : ` (repeat ${r.repeat})`}`;
}

/** The TAP 13 reporter. */
export function tapReporter(out: Sink): Reporter {
  let n = 0;
  const lines = (ls: string[]) => {
    if (ls.length) out.write(`${ls.join('\n')}\n`);
  };
  out.write('TAP version 13\n');
  return {
    runStart(backends) {
      for (const b of backends) out.write(`# backend: ${b.label}${b.note ? ` (${oneLine(b.note)})` : ''}\n`);
    },
    caseEnd(r) {
      n++;
      lines(tapDiagnostics(r.output));
      if (r.backend) out.write(`# backend: ${r.backend}\n`);
      if (r.comparison) out.write(`# comparison: ${oneLine(r.comparison.summary)}\n`);
      if (r.status === 'fail' || r.status === 'interrupted') lines(tapDiagnostics(r.reason ?? ''));
      out.write(`${tapResultLine(n, description(r), r)}\n`);
    },
    finish(_all, s: Summary) {
      if (s.stopped === 'interrupt')
        out.write('# interrupted (SIGINT): the cases not yet run are not reported\n');
      if (s.stopped === 'bail') out.write('# --bail: stopped at the first failure\n');
      out.write(`1..${n}\n`);
      out.write(`${tapTotals({ pass: s.passed, fail: s.failed, skip: s.skipped })}\n`);
    },
  };
}
