// Comparison mode (`--backend A,B`): every selected case runs on both backends, each suite in its
// own process per backend, recording observations; the two results of a case become one result
// saying `same`, `differs` (with the first differing observation) or `skipped on X`.
import { firstDifference, isFailure } from '@kvmtest/testkit';
import type { ResolvedBackend } from './backends.js';
import type { CaseResult, CaseStatus, Comparison } from './protocol.js';
import { type CaseSelection, type RunListener, runSuite, type SchedulerOptions } from './scheduler.js';
import type { SuiteRef } from './suite.js';

const failed = (s: CaseStatus) => isFailure(s);

function quote(v: string | undefined): string {
  return v === undefined ? '(nothing: the run ended)' : v;
}

/** Compares one case's two runs (left on `a`, right on `b`). */
export function compareCase(left: CaseResult, right: CaseResult, a: string, b: string): CaseResult {
  const runs: Comparison['runs'] = [
    { status: left.status, ...(left.reason === undefined ? {} : { reason: left.reason }) },
    { status: right.status, ...(right.reason === undefined ? {} : { reason: right.reason }) },
  ];
  let comparison: Comparison;
  if (left.status === 'skip' || right.status === 'skip') {
    const where =
      left.status === 'skip' && right.status === 'skip'
        ? left.reason === right.reason
          ? `skipped on both: ${left.reason ?? ''}`
          : `skipped on both (${a}: ${left.reason ?? ''}; ${b}: ${right.reason ?? ''})`
        : left.status === 'skip'
          ? `skipped on ${a}: ${left.reason ?? ''}`
          : `skipped on ${b}: ${right.reason ?? ''}`;
    comparison = { verdict: 'skipped', backends: [a, b], runs, summary: where.split('\n')[0]! };
  } else {
    const d = firstDifference(left.observations ?? [], right.observations ?? []);
    if (d === undefined && failed(left.status) === failed(right.status))
      comparison = { verdict: 'same', backends: [a, b], runs, summary: 'same' };
    else {
      const at =
        d === undefined
          ? `outcome: ${a} ${left.status}, ${b} ${right.status}`
          : `observation #${d.index + 1} ${d.name}: ${a} ${quote(d.left)}, ${b} ${quote(d.right)}`;
      comparison = {
        verdict: 'differs',
        backends: [a, b],
        runs,
        ...(d === undefined ? {} : { difference: d }),
        summary: `differs at ${at}`,
      };
    }
  }
  // The merged outcome: a failure on either side fails; a skip on one side takes the other's outcome.
  const status: CaseStatus = failed(left.status)
    ? left.status
    : failed(right.status)
      ? right.status
      : left.status === 'skip'
        ? right.status
        : left.status;
  const messages = [
    left.reason && left.status !== 'pass' ? `[${a}] ${left.reason}` : '',
    right.reason && right.status !== 'pass' ? `[${b}] ${right.reason}` : '',
  ].filter(Boolean);
  const output = [
    left.output.trim() ? `[${a}]\n${left.output.trimEnd()}\n` : '',
    right.output.trim() ? `[${b}]\n${right.output.trimEnd()}\n` : '',
  ].join('');
  return {
    suite: left.suite,
    name: left.name,
    status,
    durationMs: left.durationMs + right.durationMs,
    output,
    backend: `${a},${b}`,
    comparison,
    ...(messages.length ? { reason: messages.join('\n') } : {}),
  };
}

const silent: RunListener = {};

/**
 * Runs every suite on both backends (one suite process per backend, up to `jobs` suites at once)
 * and reports the compared cases to `listener`; results keep the suites' order.
 */
export async function compareSuites(
  refs: readonly { ref: SuiteRef; selection: CaseSelection }[],
  backends: readonly [ResolvedBackend, ResolvedBackend],
  opts: Omit<SchedulerOptions, 'backend' | 'backendEnv' | 'observe' | 'listener'>,
  listener: RunListener,
): Promise<CaseResult[][]> {
  const [a, b] = backends;
  const side = (x: ResolvedBackend): SchedulerOptions => ({
    ...opts,
    backend: x.spec,
    backendEnv: x.env,
    observe: true,
    listener: silent,
  });
  const out: CaseResult[][] = new Array(refs.length);
  let next = 0;
  const worker = async () => {
    while (next < refs.length) {
      const i = next++;
      const { ref, selection } = refs[i]!;
      const [left, right] = await Promise.all([
        runSuite(ref, selection, side(a)),
        runSuite(ref, selection, side(b)),
      ]);
      const merged = left.map((l, k) => {
        const r = right.find((x) => x.name === l.name) ?? right[k]!;
        return compareCase(l, r, l.backend ?? a.label, r.backend ?? b.label);
      });
      listener.suiteStart?.(
        ref.name,
        merged.map((m) => m.name),
        `${a.label},${b.label}`,
      );
      for (const m of merged) listener.caseEnd?.(m);
      listener.suiteEnd?.(ref.name, merged);
      out[i] = merged;
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.jobs, refs.length) }, worker));
  return out;
}
