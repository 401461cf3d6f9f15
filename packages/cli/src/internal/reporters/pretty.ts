// Human output: a header per suite, a line per case with its time, failure details and the case's
// output (logs, guest printf) indented — for every case with --verbose —, a progress line on a
// terminal for long cases, and the one-line summary.
import { painter } from '../colors.js';
import type { CaseResult } from '../protocol.js';
import { plural, type Summary, summaryLine } from '../summary.js';
import type { Reporter, ReporterContext, Sink } from './reporter.js';

function ms(d: number): string {
  return d >= 1000 ? `${(d / 1000).toFixed(2)} s` : `${Math.round(d)} ms`;
}

const indent = (s: string) =>
  s
    .replace(/\s+$/, '')
    .split('\n')
    .map((l) => `      ${l}`)
    .join('\n');

/** The pretty reporter. */
export function prettyReporter(out: Sink, ctx: Partial<Omit<ReporterContext, 'out'>> = {}): Reporter {
  const paint = ctx.paint ?? painter(false);
  const verbose = ctx.verbose ?? false;
  const green = (s: string) => paint('green', s);
  const red = (s: string) => paint('red', s);
  const yellow = (s: string) => paint('yellow', s);
  const dim = (s: string) => paint('dim', s);
  let progressShown = false;
  const clearProgress = () => {
    if (progressShown) out.write('\r\u001b[2K');
    progressShown = false;
  };
  const verdict = (r: CaseResult) => {
    const c = r.comparison;
    if (!c) return '';
    if (c.verdict === 'same') return ` ${green('same')}`;
    if (c.verdict === 'skipped') return ` ${yellow(c.summary)}`;
    return ` ${red(c.summary)}`;
  };
  const again = (r: CaseResult) => (r.repeat === undefined ? '' : dim(` [repeat ${r.repeat}]`));
  return {
    runStart(backends) {
      const named = (b: (typeof backends)[number]) => `${b.label}${b.note ? dim(` (${b.note})`) : ''}`;
      if (backends.length === 1) out.write(`backend: ${named(backends[0]!)}\n`);
      else out.write(`comparing backends: ${backends.map(named).join(' with ')}\n`);
    },
    suiteStart(suite, cases) {
      clearProgress();
      if (cases.length > 0) out.write(`${suite} ${dim(`(${plural(cases.length, 'case')})`)}\n`);
    },
    caseProgress(suite, name, done, total) {
      if (!out.isTTY) return;
      const pct = total > 0 ? Math.floor((done / total) * 100) : 0;
      out.write(`\r\u001b[2K  … ${suite}: ${name} ${done}/${total} (${pct}%)`);
      progressShown = true;
    },
    caseEnd(r: CaseResult) {
      clearProgress();
      const time = dim(ms(r.durationMs));
      if (r.status === 'pass') out.write(`  ${green('✓')} ${r.name}${again(r)} ${time}${verdict(r)}\n`);
      else if (r.status === 'skip')
        out.write(
          `  ${yellow('-')} ${r.name}${again(r)} ${yellow(r.comparison ? r.comparison.summary : `skipped: ${r.reason ?? ''}`)}\n`,
        );
      else {
        const tag =
          r.status === 'timeout' ? red(' TIMEOUT') : r.status === 'interrupted' ? red(' INTERRUPTED') : '';
        out.write(`  ${red('✗')} ${r.name}${again(r)} ${time}${tag}${verdict(r)}\n`);
        if (r.reason) out.write(`${indent(r.reason)}\n`);
      }
      if (r.output.trim() && (verbose || (r.status !== 'pass' && r.status !== 'skip')))
        out.write(`${dim(indent(r.output))}\n`);
    },
    finish(_all, s: Summary) {
      clearProgress();
      const line = summaryLine(s);
      out.write(`\n${s.failed ? red(line) : green(line)}\n`);
    },
  };
}
