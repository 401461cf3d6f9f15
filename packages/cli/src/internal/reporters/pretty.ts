// Human output: a line per case with its time, failure details indented, a progress line on a
// terminal for long cases, and the one-line summary.
import type { CaseResult } from '../protocol.js';
import { type Summary, summaryLine } from '../summary.js';
import type { Reporter, Sink } from './reporter.js';

const color = (on: boolean, code: number) => (s: string) => (on ? `\u001b[${code}m${s}\u001b[0m` : s);

function ms(d: number): string {
  return d >= 1000 ? `${(d / 1000).toFixed(2)} s` : `${Math.round(d)} ms`;
}

/** The pretty reporter. */
export function prettyReporter(out: Sink): Reporter {
  const green = color(out.isTTY, 32);
  const red = color(out.isTTY, 31);
  const yellow = color(out.isTTY, 33);
  const dim = color(out.isTTY, 2);
  let progressShown = false;
  const clearProgress = () => {
    if (progressShown) out.write('\r\u001b[2K');
    progressShown = false;
  };
  const indent = (s: string) =>
    s
      .replace(/\s+$/, '')
      .split('\n')
      .map((l) => `      ${l}`)
      .join('\n');
  const verdict = (r: CaseResult) => {
    const c = r.comparison;
    if (!c) return '';
    if (c.verdict === 'same') return ` ${green('same')}`;
    if (c.verdict === 'skipped') return ` ${yellow(c.summary)}`;
    return ` ${red(c.summary)}`;
  };
  return {
    runStart(backends) {
      const named = (b: (typeof backends)[number]) => `${b.label}${b.note ? dim(` (${b.note})`) : ''}`;
      if (backends.length === 1) out.write(`backend: ${named(backends[0]!)}\n`);
      else out.write(`comparing backends: ${backends.map(named).join(' with ')}\n`);
    },
    suiteStart(suite, cases) {
      clearProgress();
      out.write(`${suite} ${dim(`(${cases.length} cases)`)}\n`);
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
      if (r.status === 'pass') out.write(`  ${green('✓')} ${r.name} ${time}${verdict(r)}\n`);
      else if (r.status === 'skip')
        out.write(
          `  ${yellow('-')} ${r.name} ${yellow(r.comparison ? r.comparison.summary : `skipped: ${r.message ?? ''}`)}\n`,
        );
      else {
        out.write(
          `  ${red('✗')} ${r.name} ${time}${r.status === 'timeout' ? red(' TIMEOUT') : ''}${verdict(r)}\n`,
        );
        if (r.message) out.write(`${indent(r.message)}\n`);
        if (r.output.trim()) out.write(`${dim(indent(r.output))}\n`);
      }
    },
    finish(_all, s: Summary) {
      clearProgress();
      const line = summaryLine(s);
      out.write(`\n${s.failed ? red(line) : green(line)}\n`);
    },
  };
}
