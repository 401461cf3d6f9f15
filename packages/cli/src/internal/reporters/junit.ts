// JUnit XML: one <testsuite> per suite, one <testcase> per case, written at the end of the run.
import type { CaseResult } from '../protocol.js';
import type { Summary } from '../summary.js';
import type { Reporter, Sink } from './reporter.js';

/** Escapes text for XML content and attribute values (and drops characters XML 1.0 forbids). */
export function xmlEscape(s: string): string {
  return (
    s
      // biome-ignore lint/suspicious/noControlCharactersInRegex: removing the control characters XML forbids
      .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, '')
      .replace(/&/g, '&amp;')
      .replace(/</g, '&lt;')
      .replace(/>/g, '&gt;')
      .replace(/"/g, '&quot;')
  );
}

const seconds = (ms: number) => (ms / 1000).toFixed(3);

/** The JUnit XML reporter. */
export function junitReporter(out: Sink): Reporter {
  return {
    finish(all: readonly CaseResult[], s: Summary) {
      const bySuite = new Map<string, CaseResult[]>();
      for (const r of all) bySuite.set(r.suite, [...(bySuite.get(r.suite) ?? []), r]);
      const lines = ['<?xml version="1.0" encoding="UTF-8"?>'];
      lines.push(
        `<testsuites name="kvmtest" tests="${s.total}" failures="${s.failed}" skipped="${s.skipped}" time="${seconds(s.durationMs)}">`,
      );
      for (const [suite, rs] of bySuite) {
        const failures = rs.filter((r) => r.status === 'fail' || r.status === 'timeout').length;
        const skipped = rs.filter((r) => r.status === 'skip').length;
        const time = rs.reduce((t, r) => t + r.durationMs, 0);
        lines.push(
          `  <testsuite name="${xmlEscape(suite)}" tests="${rs.length}" failures="${failures}" errors="0" skipped="${skipped}" time="${seconds(time)}">`,
        );
        for (const r of rs) {
          const open = `    <testcase classname="${xmlEscape(suite)}" name="${xmlEscape(r.name)}" time="${seconds(r.durationMs)}"`;
          const body: string[] = [];
          const props: [string, string][] = [];
          if (r.backend) props.push(['backend', r.backend]);
          if (r.comparison) props.push(['comparison', r.comparison.summary]);
          if (props.length)
            body.push(
              `      <properties>${props.map(([k, v]) => `<property name="${k}" value="${xmlEscape(v)}"/>`).join('')}</properties>`,
            );
          if (r.status === 'fail' || r.status === 'timeout') {
            const first = (r.message ?? r.status).split('\n')[0] ?? '';
            body.push(
              `      <failure message="${xmlEscape(first)}" type="${r.status}">${xmlEscape(r.message ?? '')}</failure>`,
            );
          } else if (r.status === 'skip') {
            body.push(`      <skipped message="${xmlEscape(r.message ?? '')}"/>`);
          }
          if (r.output) body.push(`      <system-out>${xmlEscape(r.output)}</system-out>`);
          lines.push(body.length ? `${open}>\n${body.join('\n')}\n    </testcase>` : `${open}/>`);
        }
        lines.push('  </testsuite>');
      }
      lines.push('</testsuites>');
      out.write(`${lines.join('\n')}\n`);
    },
  };
}
