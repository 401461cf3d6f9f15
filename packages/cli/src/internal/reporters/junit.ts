// JUnit XML: one <testsuite> per suite, one <testcase> per case, written at the end of the run.
// The failure's message attribute is the assertion's text; the whole banner is the element's body.
import { oneLine } from '@kvmtest/testkit';
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

/** The headline of a failed case: the assertion's text, else the first line of its reason. */
export function failureMessage(r: CaseResult): string {
  return r.summary ?? oneLine((r.reason ?? r.status).split('\n')[0] ?? '');
}

/** The JUnit XML document of a run. */
export function junitXml(all: readonly CaseResult[], s: Summary): string {
  const bySuite = new Map<string, CaseResult[]>();
  for (const r of all) bySuite.set(r.suite, [...(bySuite.get(r.suite) ?? []), r]);
  const lines = ['<?xml version="1.0" encoding="UTF-8"?>'];
  lines.push(
    `<testsuites name="kvmtest" tests="${s.total}" failures="${s.failed - s.interrupted}" errors="${s.interrupted}" skipped="${s.skipped}" time="${seconds(s.durationMs)}">`,
  );
  for (const [suite, rs] of bySuite) {
    const failures = rs.filter((r) => r.status === 'fail' || r.status === 'timeout').length;
    const errors = rs.filter((r) => r.status === 'interrupted').length;
    const skipped = rs.filter((r) => r.status === 'skip').length;
    const time = rs.reduce((t, r) => t + r.durationMs, 0);
    lines.push(
      `  <testsuite name="${xmlEscape(suite)}" tests="${rs.length}" failures="${failures}" errors="${errors}" skipped="${skipped}" time="${seconds(time)}">`,
    );
    for (const r of rs) {
      const name = r.repeat === undefined ? r.name : `${r.name} (repeat ${r.repeat})`;
      const open = `    <testcase classname="${xmlEscape(suite)}" name="${xmlEscape(name)}" time="${seconds(r.durationMs)}"`;
      const body: string[] = [];
      const props: [string, string][] = [];
      if (r.backend) props.push(['backend', r.backend]);
      if (r.comparison) props.push(['comparison', r.comparison.summary]);
      if (props.length)
        body.push(
          `      <properties>${props.map(([k, v]) => `<property name="${k}" value="${xmlEscape(v)}"/>`).join('')}</properties>`,
        );
      if (r.status === 'fail' || r.status === 'timeout')
        body.push(
          `      <failure message="${xmlEscape(failureMessage(r))}" type="${r.status}">${xmlEscape(r.reason ?? '')}</failure>`,
        );
      else if (r.status === 'interrupted')
        body.push(
          `      <error message="${xmlEscape(failureMessage(r))}" type="interrupted">${xmlEscape(r.reason ?? '')}</error>`,
        );
      else if (r.status === 'skip') body.push(`      <skipped message="${xmlEscape(r.reason ?? '')}"/>`);
      if (r.output) body.push(`      <system-out>${xmlEscape(r.output)}</system-out>`);
      lines.push(body.length ? `${open}>\n${body.join('\n')}\n    </testcase>` : `${open}/>`);
    }
    lines.push('  </testsuite>');
  }
  lines.push('</testsuites>');
  return `${lines.join('\n')}\n`;
}

/** The JUnit XML reporter. */
export function junitReporter(out: Sink): Reporter {
  return {
    finish(all, s) {
      out.write(junitXml(all, s));
    },
  };
}
