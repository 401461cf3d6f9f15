// TAP version 13, in the shape kselftest's runner prints: "ok N suite: case", "# SKIP" directives,
// diagnostics as "# " lines, and the plan "1..N" at the end (TAP allows a trailing plan).
import type { CaseResult } from '../protocol.js';
import type { Summary } from '../summary.js';
import type { Reporter, Sink } from './reporter.js';

function diag(text: string): string {
  return text
    .replace(/\s+$/, '')
    .split('\n')
    .map((l) => (l ? `# ${l}` : '#'))
    .join('\n');
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

/** Escapes "#" in a description so it is not read as a directive. */
function description(r: CaseResult): string {
  return `${r.suite}: ${r.name}`.replace(/#/g, '\\#');
}

/** The TAP 13 reporter. */
export function tapReporter(out: Sink): Reporter {
  let n = 0;
  out.write('TAP version 13\n');
  return {
    runStart(backends) {
      for (const b of backends) out.write(`# backend: ${b.label}${b.note ? ` (${oneLine(b.note)})` : ''}\n`);
    },
    caseEnd(r) {
      n++;
      if (r.output.trim()) out.write(`${diag(r.output)}\n`);
      if (r.backend) out.write(`# backend: ${r.backend}\n`);
      if (r.comparison) out.write(`# comparison: ${oneLine(r.comparison.summary)}\n`);
      switch (r.status) {
        case 'pass':
          out.write(`ok ${n} ${description(r)}\n`);
          break;
        case 'skip':
          out.write(`ok ${n} ${description(r)} # SKIP ${(r.message ?? '').split('\n')[0]}\n`);
          break;
        case 'timeout':
          out.write(`not ok ${n} ${description(r)} # TIMEOUT ${r.message ?? ''}\n`);
          break;
        case 'fail':
          if (r.message) out.write(`${diag(r.message)}\n`);
          out.write(`not ok ${n} ${description(r)}\n`);
          break;
      }
    },
    finish(_all, s: Summary) {
      out.write(`1..${n}\n`);
      out.write(`# Totals: pass:${s.passed} fail:${s.failed} xfail:0 xpass:0 skip:${s.skipped} error:0\n`);
    },
  };
}
