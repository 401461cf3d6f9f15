import { describe, expect, test } from 'vitest';
import { defineSuite } from './harness.js';
import { runSuiteProgram } from './program.js';
import { tapResultLine } from './results.js';

const suite = defineSuite({
  name: 'prog',
  cases: [
    { name: 'one', run: () => {} },
    { name: 'two', run: () => {} },
    {
      name: 'three',
      run: () => {
        throw new Error('boom');
      },
    },
  ],
});

async function run(argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runSuiteProgram(suite, argv, { stdout: (l) => out.push(l), stderr: (l) => err.push(l) });
  return { code, out, err };
}

describe('a suite as a kselftest program', () => {
  test('-l lists the cases on stderr and exits KSFT_SKIP', async () => {
    const r = await run(['-l']);
    expect(r.code).toBe(4);
    expect(r.err.join('\n')).toMatch(/# FIXTURE\s+VARIANT\s+TEST\nprog\s+one\n\s+two\n\s+three/);
    expect(r.out).toEqual([]);
  });

  test('-h prints the usage and exits KSFT_SKIP; an unknown option exits KSFT_FAIL', async () => {
    expect((await run(['-h'])).code).toBe(4);
    const bad = await run(['-x']);
    expect(bad.code).toBe(1);
    expect(bad.err.join('\n')).toMatch(/invalid option -- 'x'[\s\S]*-t name {2}include test/);
    expect((await run(['-t'])).code).toBe(1);
  });

  test('-t NAME runs only the named cases, -T NAME leaves one out', async () => {
    const only = await run(['-t', 'two', '-tone']);
    expect(only.code).toBe(0);
    expect(only.out).toContain('1..2');
    expect(only.out).toContain('ok 1 one');
    expect(only.out).toContain('ok 2 two');
    const except = await run(['-T', 'three']);
    expect(except.code).toBe(0);
    expect(except.out).toContain('1..2');
    const all = await run([]);
    expect(all.code).toBe(1);
    expect(all.out).toContain('not ok 3 three');
  });
});

describe('TAP result lines', () => {
  test('each status in kselftest form, "#" escaped in descriptions', () => {
    expect(tapResultLine(1, 'a', { status: 'pass' })).toBe('ok 1 a');
    expect(tapResultLine(2, 'a#b', { status: 'skip', reason: 'no\nSEV' })).toBe('ok 2 a\\#b # SKIP no SEV');
    expect(tapResultLine(3, 'a', { status: 'timeout', reason: '30 seconds' })).toBe(
      'not ok 3 a # TIMEOUT 30 seconds',
    );
    expect(tapResultLine(4, 'a', { status: 'fail', reason: 'x' })).toBe('not ok 4 a');
    expect(tapResultLine(5, 'a', { status: 'interrupted' })).toBe('not ok 5 a # interrupted');
  });
});
