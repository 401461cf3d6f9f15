// `--reporter html[=DIR]`: writes DIR/index.html (self-contained: inline CSS and script, no network)
// and DIR/report.json (the same results as data) at the end of the run, then prints where the report
// is (after the summary line when no other reporter prints one). Cases record their VMs' memory maps through testkit while this reporter runs.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ResolvedBackend } from '../backends.js';
import type { CaseResult } from '../protocol.js';
import type { Reporter, Sink } from '../reporters/reporter.js';
import { type Summary, summaryLine } from '../summary.js';
import { renderReport } from './page.js';

/** Options of the HTML reporter. */
export interface HtmlReporterOptions {
  /** Folders a relative location in a failure resolves against (the first is also where paths are shown from). */
  roots?: readonly string[];
  /** The time shown as written (default: now, ISO 8601). */
  now?: () => Date;
  /** Print the summary line before the report's path (default true; false beside another reporter). */
  summary?: boolean;
}

/** The HTML reporter: the report folder `dir`; `out` gets the summary line and the report's path. */
export function htmlReporter(dir: string, out: Sink, opts: HtmlReporterOptions = {}): Reporter {
  let backends: readonly ResolvedBackend[] = [];
  return {
    runStart(b) {
      backends = b;
    },
    finish(all: readonly CaseResult[], summary: Summary) {
      mkdirSync(dir, { recursive: true });
      const html = renderReport({
        results: all,
        summary,
        backends,
        roots: opts.roots ?? [process.cwd()],
        generatedAt: (opts.now?.() ?? new Date()).toISOString(),
      });
      writeFileSync(join(dir, 'index.html'), html);
      writeFileSync(
        join(dir, 'report.json'),
        `${JSON.stringify({ summary, backends: backends.map((b) => b.label), results: all }, null, 1)}\n`,
      );
      const where = `HTML report: ${join(dir, 'index.html')}\n`;
      out.write(opts.summary === false ? where : `${summaryLine(summary)}\n${where}`);
    },
  };
}
