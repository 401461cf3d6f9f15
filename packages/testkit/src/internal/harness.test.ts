import { describe, expect, test } from 'vitest';
import { testAssert, testRequire } from './asserts.js';
import { TestkitError } from './errors.js';
import { defineSuite, KSFT, runSuite, type Suite, tapReporter } from './harness.js';

async function tap(suite: Suite, opts: Parameters<typeof runSuite>[1] = {}) {
  const lines: string[] = [];
  const result = await runSuite(suite, { reporter: tapReporter((l) => lines.push(l)), ...opts });
  return { lines, result };
}

describe('kselftest harness', () => {
  test('prints TAP 13 with a plan and one result line per case; all passing exits 0', async () => {
    const suite = defineSuite({
      name: 'demo',
      cases: [
        { name: 'first', run: () => {} },
        { name: 'second', run: async (ctx) => ctx.log('stage %d reached', 2) },
      ],
    });
    const { lines, result } = await tap(suite);
    expect(lines[0]).toBe('TAP version 13');
    expect(lines[1]).toBe('1..2');
    expect(lines).toContain('ok 1 first');
    expect(lines).toContain('ok 2 second');
    expect(lines).toContain('# stage 2 reached');
    expect(lines.at(-1)).toBe('# Totals: pass:2 fail:0 xfail:0 xpass:0 skip:0 error:0');
    expect(result.exitCode).toBe(KSFT.PASS);
  });

  test('a failing case is reported with its diagnostics and does not stop the next; exit 1', async () => {
    const ran: string[] = [];
    const suite = defineSuite({
      name: 'demo',
      cases: [
        {
          name: 'fails',
          run: () => {
            ran.push('fails');
            testAssert(1 > 2, 'one is not above two');
          },
        },
        { name: 'throws', run: () => Promise.reject(new RangeError('boom')) },
        { name: 'passes', run: () => void ran.push('passes') },
      ],
    });
    const { lines, result } = await tap(suite);
    expect(ran).toEqual(['fails', 'passes']);
    expect(lines).toContain('not ok 1 fails');
    expect(lines).toContain('# ==== Test Assertion Failure ====');
    expect(lines.some((l) => /^# {3}.*harness\.test\.ts:\d+: 1 > 2$/.test(l))).toBe(true);
    expect(lines).toContain('#   one is not above two');
    expect(lines).toContain('not ok 2 throws');
    expect(lines).toContain('# RangeError: boom');
    expect(lines).toContain('ok 3 passes');
    expect(result.counts).toEqual({ pass: 1, fail: 2, skip: 0, timeout: 0 });
    expect(result.exitCode).toBe(KSFT.FAIL);
  });

  test('skips print `ok N name # SKIP reason`; a suite where everything skipped exits 4', async () => {
    const suite = defineSuite({
      name: 'demo',
      cases: [
        { name: 'needs-sev', run: () => testRequire(false, 'SEV is not supported') },
        { name: 'needs-tdx', run: (ctx) => ctx.skip('TDX is not supported') },
      ],
    });
    const { lines, result } = await tap(suite);
    expect(lines).toContain('ok 1 needs-sev # SKIP SEV is not supported');
    expect(lines).toContain('ok 2 needs-tdx # SKIP TDX is not supported');
    expect(result.exitCode).toBe(KSFT.SKIP);
  });

  test('a skip beside a pass exits 0; a skip beside a failure exits 1', async () => {
    const skip = { name: 'skip', run: () => testRequire(false, 'nope') };
    expect(
      (await tap(defineSuite({ name: 's', cases: [skip, { name: 'ok', run: () => {} }] }))).result.exitCode,
    ).toBe(0);
    const fail = { name: 'bad', run: () => testAssert(false) };
    expect((await tap(defineSuite({ name: 's', cases: [skip, fail] }))).result.exitCode).toBe(1);
  });

  test('a case that outlives its timeout is `not ok … # TIMEOUT` and the next case still runs', async () => {
    const suite = defineSuite({
      name: 'demo',
      cases: [
        { name: 'hangs', run: () => new Promise(() => {}), timeoutMs: 20 },
        { name: 'after', run: () => {} },
      ],
    });
    const { lines, result } = await tap(suite);
    expect(lines).toContain('not ok 1 hangs # TIMEOUT 0.02 seconds');
    expect(lines).toContain('ok 2 after');
    expect(result.counts.timeout).toBe(1);
    expect(result.exitCode).toBe(1);
  });

  test('a suite where nothing ran exits 4, as kselftest does for "1..0"', async () => {
    const { lines, result } = await tap(defineSuite({ name: 'empty', cases: [] }));
    expect(lines[1]).toBe('1..0');
    expect(result.exitCode).toBe(KSFT.SKIP);
  });

  test('a filter leaves the other cases out of the plan', async () => {
    const suite = defineSuite({
      name: 'demo',
      cases: [
        { name: 'sev-smoke', run: () => {} },
        { name: 'tdx-smoke', run: () => {} },
      ],
    });
    const { lines, result } = await tap(suite, { filter: 'sev' });
    expect(lines[1]).toBe('1..1');
    expect(lines).toContain('ok 1 sev-smoke');
    expect(result.results.map((r) => r.name)).toEqual(['sev-smoke']);
  });

  test('defineSuite rejects duplicate and untappable case names', () => {
    const run = () => {};
    expect(() =>
      defineSuite({
        name: 's',
        cases: [
          { name: 'a', run },
          { name: 'a', run },
        ],
      }),
    ).toThrow(/case name "a" is used twice/);
    expect(() => defineSuite({ name: 's', cases: [{ name: 'a # b', run }] })).toThrow(TestkitError);
    expect(() => defineSuite({ name: '', cases: [] })).toThrow(/suite name "" must be a non-empty string/);
  });
});
