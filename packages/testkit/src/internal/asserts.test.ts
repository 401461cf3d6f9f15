import { describe, expect, test } from 'vitest';
import { testAssert, testAssertEq, testFail, testRequire } from './asserts.js';
import { KsftSkip, TestAssertionError } from './errors.js';

function failure(fn: () => void): TestAssertionError {
  try {
    fn();
  } catch (e) {
    if (e instanceof TestAssertionError) return e;
    throw e;
  }
  throw new Error('expected a TestAssertionError');
}

describe('host asserts', () => {
  test('testAssert passes silently and fails with file:line, expression and message', () => {
    testAssert(1 + 1 === 2, 'never shown');
    const nr: number = 3;
    const e = failure(() => testAssert(nr === 4, 'nr is %d, wanted %d', nr, 4));
    expect(e.file).toMatch(/(^|\/)src\/internal\/asserts\.test\.ts$/);
    expect(e.line).toBe(19);
    expect(e.expression).toBe('nr === 4');
    expect(e.userMessage).toBe('nr is 3, wanted 4');
    expect(e.message).toBe(`==== Test Assertion Failure ====\n  ${e.file}:19: nr === 4\n  nr is 3, wanted 4`);
  });

  test('testAssertEq prints both values and both expressions', () => {
    const got = 0x29n;
    const e = failure(() => testAssertEq(got, 42n));
    expect(e.expression).toBe('got == 42n');
    expect(e.userMessage).toBe('0x29 != 0x2a (got != 42n)');
  });

  test('testFail always fails', () => {
    const e = failure(() => testFail('stage %d', 2));
    expect(e.expression).toBe('Unconditional test failure');
    expect(e.userMessage).toBe('stage 2');
  });

  test('testRequire skips with the reason, or with the unmet condition', () => {
    expect(() => testRequire(false, 'SEV not supported')).toThrow(KsftSkip);
    const hasSev = false;
    try {
      testRequire(hasSev);
    } catch (e) {
      expect((e as KsftSkip).reason).toBe('- Requirement not met: hasSev');
    }
    testRequire(true, 'fine');
  });
});
