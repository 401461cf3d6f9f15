// `kvmtest merge-reports`: joins the reports of several runs (CI shards) — JSON reports
// (--reporter json=FILE) or JUnit XML (--reporter junit=FILE) — into one list of results.
import { readFileSync } from 'node:fs';
import { XMLParser } from 'fast-xml-parser';
import { UsageError } from './args.js';
import type { CaseResult } from './protocol.js';
import type { JsonReport } from './reporters/json.js';

/** The results and the run time a report file holds. */
export interface ReadReport {
  results: CaseResult[];
  durationMs: number;
}

type XmlNode = Record<string, unknown>;

const text = (v: unknown): string =>
  typeof v === 'string' || typeof v === 'number'
    ? String(v)
    : v && typeof v === 'object'
      ? text((v as XmlNode)['#text'] ?? '')
      : '';

/** Reads the results of a JUnit XML document written by the junit reporter (or a compatible one). */
export function readJunit(xml: string, where = 'JUnit report'): ReadReport {
  const parser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: '',
    parseAttributeValue: false,
    parseTagValue: false,
    trimValues: false,
    isArray: (name) => ['testsuite', 'testcase', 'property'].includes(name),
  });
  const doc = parser.parse(xml) as XmlNode;
  const root = (doc.testsuites ?? (doc.testsuite ? { testsuite: doc.testsuite } : undefined)) as
    | XmlNode
    | undefined;
  if (!root)
    throw new UsageError(`${where} is not JUnit XML (no <testsuites> or <testsuite>)`, 'merge-reports');
  const results: CaseResult[] = [];
  for (const suite of (root.testsuite ?? []) as XmlNode[]) {
    for (const c of (suite.testcase ?? []) as XmlNode[]) {
      const props = ((c.properties as XmlNode | undefined)?.property ?? []) as XmlNode[];
      const backend = props.find((p) => p.name === 'backend')?.value;
      const failure = c.failure as XmlNode | undefined;
      const error = c.error as XmlNode | undefined;
      const skipped = c.skipped as XmlNode | string | undefined;
      const rawName = String(c.name ?? '');
      const rep = /^(.*) \(repeat (\d+)\)$/.exec(rawName);
      const r: { -readonly [K in keyof CaseResult]: CaseResult[K] } = {
        suite: String(c.classname ?? suite.name ?? ''),
        name: rep ? rep[1]! : rawName,
        status: failure
          ? failure.type === 'timeout'
            ? 'timeout'
            : 'fail'
          : error
            ? 'interrupted'
            : skipped !== undefined
              ? 'skip'
              : 'pass',
        durationMs: Math.round(Number(c.time ?? 0) * 1000),
        output: text(c['system-out']),
        ...(rep ? { repeat: Number(rep[2]) } : {}),
        ...(typeof backend === 'string' ? { backend } : {}),
      };
      const detail = failure ?? error;
      if (detail) {
        r.reason = text(detail) || String(detail.message ?? '');
        if (typeof detail.message === 'string') r.summary = detail.message;
      } else if (skipped !== undefined && typeof skipped === 'object' && typeof skipped.message === 'string')
        r.reason = skipped.message;
      results.push(r);
    }
  }
  return { results, durationMs: Math.round(Number(root.time ?? 0) * 1000) };
}

/** Reads a JSON or JUnit report file. */
export function readReport(file: string): ReadReport {
  let body: string;
  try {
    body = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${(e as Error).message}`, 'merge-reports');
  }
  if (body.trimStart().startsWith('<')) return readJunit(body, file);
  let report: JsonReport;
  try {
    report = JSON.parse(body) as JsonReport;
  } catch (e) {
    throw new UsageError(`${file} is neither JUnit XML nor JSON: ${(e as Error).message}`, 'merge-reports');
  }
  if (report?.kvmtest !== 'report' || !Array.isArray(report.results))
    throw new UsageError(`${file} is not a kvmtest JSON report (--reporter json=FILE)`, 'merge-reports');
  return { results: report.results, durationMs: report.summary?.durationMs ?? 0 };
}

/**
 * Joins reports: results grouped by suite (suites by name), each suite's cases in the order the
 * files give them; the run time is the longest report's (shards run side by side).
 */
export function mergeReports(reports: readonly ReadReport[]): ReadReport {
  const bySuite = new Map<string, CaseResult[]>();
  for (const rep of reports)
    for (const r of rep.results) bySuite.set(r.suite, [...(bySuite.get(r.suite) ?? []), r]);
  const results = [...bySuite.keys()].sort().flatMap((s) => bySuite.get(s)!);
  return { results, durationMs: Math.max(0, ...reports.map((r) => r.durationMs)) };
}
