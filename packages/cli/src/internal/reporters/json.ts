// A machine-readable report (`--reporter json=FILE`): every case's result and the summary, the
// input of `kvmtest merge-reports` when CI shards a run.
import type { CaseResult } from '../protocol.js';
import type { Summary } from '../summary.js';
import type { Reporter, Sink } from './reporter.js';

/** The JSON report's shape. */
export interface JsonReport {
  kvmtest: 'report';
  version: 1;
  summary: Summary;
  results: CaseResult[];
}

/** The JSON reporter. */
export function jsonReporter(out: Sink): Reporter {
  return {
    finish(all, summary) {
      const report: JsonReport = { kvmtest: 'report', version: 1, summary, results: [...all] };
      out.write(`${JSON.stringify(report, null, 2)}\n`);
    },
  };
}
