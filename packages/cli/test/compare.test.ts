import { describe, expect, test } from 'vitest';
import { parseCommand } from '../src/index.js';
import { compareCase } from '../src/internal/compare.js';
import type { CaseResult } from '../src/internal/protocol.js';

const run = (backendFlag: string | undefined, env: Record<string, string> = {}) => {
  const c = parseCommand(['run', ...(backendFlag === undefined ? [] : ['--backend', backendFlag])], env);
  if (c.kind !== 'run') throw new Error('not a run');
  return c.backends;
};

describe('--backend', () => {
  test('one backend, two to compare, sim presets, and KVMTEST_BACKEND as the default', () => {
    expect(run(undefined)).toEqual(['sim']);
    expect(run('linux')).toEqual(['linux']);
    expect(run('sim:mainline-amd, sim:pvm')).toEqual(['sim:mainline-amd', 'sim:pvm']);
    expect(run(undefined, { KVMTEST_BACKEND: 'sim,linux' })).toEqual(['sim', 'linux']);
    expect(run('auto', { KVMTEST_BACKEND: 'linux' })).toEqual(['auto']);
  });
  test('anything else is a UsageError naming the value', () => {
    expect(() => run('kvm')).toThrow(/"kvm" is none of these/);
    expect(() => run('sim:amd')).toThrow(/"sim:amd" is none of these/);
    expect(() => run(undefined, { KVMTEST_BACKEND: 'sim:x' })).toThrow(/^KVMTEST_BACKEND must be/);
  });
});

const result = (status: CaseResult['status'], obs: [string, string][], message?: string): CaseResult => ({
  suite: 's',
  name: 'c',
  status,
  durationMs: 1,
  output: '',
  observations: obs.map(([name, value]) => ({ name, value })),
  ...(message ? { reason: message } : {}),
});

describe('compareCase', () => {
  test('equal observations and outcomes are the same', () => {
    const c = compareCase(result('pass', [['a', '1']]), result('pass', [['a', '1']]), 'x', 'y');
    expect(c.comparison?.verdict).toBe('same');
    expect(c.status).toBe('pass');
    expect(c.backend).toBe('x,y');
  });
  test('the first differing observation is named with both values', () => {
    const c = compareCase(
      result('pass', [
        ['a', '1'],
        ['b', '2'],
        ['c', '3'],
      ]),
      result('pass', [
        ['a', '1'],
        ['b', '5'],
        ['c', '9'],
      ]),
      'x',
      'y',
    );
    expect(c.comparison?.summary).toBe('differs at observation #2 b: x 2, y 5');
  });
  test('a side that ended early (it failed) differs there, and the merged case fails', () => {
    const c = compareCase(
      result('pass', [
        ['a', '1'],
        ['b', '2'],
      ]),
      result('fail', [['a', '1']], 'boom'),
      'x',
      'y',
    );
    expect(c.comparison?.summary).toBe('differs at observation #2 b: x 2, y (nothing: the run ended)');
    expect(c.status).toBe('fail');
    expect(c.reason).toBe('[y] boom');
  });
  test('different outcomes with equal observations differ by outcome', () => {
    const c = compareCase(result('pass', []), result('timeout', [], 'slow'), 'x', 'y');
    expect(c.comparison?.summary).toBe('differs at outcome: x pass, y timeout');
    expect(c.status).toBe('timeout');
  });
  test('a skip on one side is `skipped on X`, not a difference; the other side decides the outcome', () => {
    const c = compareCase(result('skip', [], 'no SEV'), result('pass', [['a', '1']]), 'x', 'y');
    expect(c.comparison).toMatchObject({ verdict: 'skipped', summary: 'skipped on x: no SEV' });
    expect(c.status).toBe('pass');
    expect(compareCase(result('pass', []), result('skip', [], 'r'), 'x', 'y').comparison?.summary).toBe(
      'skipped on y: r',
    );
  });
});
