// Host-side asserts and skips in the selftests' idiom: TEST_ASSERT, TEST_ASSERT_EQ, TEST_FAIL,
// TEST_REQUIRE. A failed assert throws TestAssertionError carrying file:line, the expression text
// and the formatted message; an unmet requirement throws KsftSkip, which the harness reports as
// `ok N name # SKIP reason` (exit code 4 when every case skipped).

import { argTypeError, describeValue } from '@kvmtest/kvm';
import { callArguments, callerOf, displayLocation } from './callsite.js';
import { KsftSkip, TestAssertionError } from './errors.js';
import { type FormatValue, formatString, hex64 } from './format.js';

/** TEST_ASSERT: throws TestAssertionError with file:line, the condition's text and the formatted message unless `cond`. */
export function testAssert(cond: unknown, fmt = '', ...values: FormatValue[]): asserts cond {
  if (cond) return;
  const site = callerOf(testAssert);
  const expression = callArguments(site, 'testAssert')?.[0];
  throw new TestAssertionError({
    location: displayLocation(site),
    expression,
    userMessage: formatString(fmt, ...values),
  });
}

/** TEST_ASSERT_EQ: throws unless `a === b`, printing both values as `%#lx != %#lx (a != b)`. */
export function testAssertEq<T extends bigint | number | string | boolean>(
  a: T,
  b: T,
  fmt = '',
  ...values: FormatValue[]
): void {
  if (a === b) return;
  const site = callerOf(testAssertEq);
  const args = callArguments(site, 'testAssertEq');
  const ea = args?.[0] ?? 'a';
  const eb = args?.[1] ?? 'b';
  const show = (v: T) =>
    typeof v === 'bigint' || (typeof v === 'number' && Number.isInteger(v))
      ? hex64(v)
      : typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean'
        ? JSON.stringify(v)
        : describeValue(v);
  const extra = fmt === '' ? '' : `\n${formatString(fmt, ...values)}`;
  throw new TestAssertionError({
    location: displayLocation(site),
    expression: `${ea} == ${eb}`,
    userMessage: `${show(a)} != ${show(b)} (${ea} != ${eb})${extra}`,
  });
}

/** TEST_FAIL: an unconditional failure with a formatted message. */
export function testFail(fmt: string, ...values: FormatValue[]): never {
  const site = callerOf(testFail);
  throw new TestAssertionError({
    location: displayLocation(site),
    expression: 'Unconditional test failure',
    userMessage: formatString(fmt, ...values),
  });
}

/** TEST_REQUIRE: skips the test (KsftSkip, exit code 4) with `why` unless `cond`. */
export function testRequire(cond: unknown, why?: string): asserts cond {
  if (why !== undefined && typeof why !== 'string')
    throw argTypeError('testRequire', 'why', 'a string or undefined', why);
  if (cond) return;
  if (why === undefined) {
    const expr = callArguments(callerOf(testRequire), 'testRequire')?.[0];
    throw new KsftSkip(`- Requirement not met: ${expr ?? '<condition>'}`);
  }
  throw new KsftSkip(why);
}
