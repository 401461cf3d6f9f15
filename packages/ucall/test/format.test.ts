import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatGuestString as f } from '../src/index.js';

describe('formatGuestString', () => {
  it.each([
    ['%d', [42], '42'],
    ['%i', [-7], '-7'],
    ['%5d|', [42], '   42|'],
    ['%-5d|', [42], '42   |'],
    ['%05d', [-42], '-0042'],
    ['%+d % d', [5, 5], '+5  5'],
    ['%u', [-1], '4294967295'],
    ['%x', [-1], 'ffffffff'],
    ['%lx', [-1n], 'ffffffffffffffff'],
    ['%llx', [0xdead_beef_cafen], 'deadbeefcafe'],
    ['%lu', [2n ** 64n - 1n], '18446744073709551615'],
    ['%ld', [2n ** 63n], '-9223372036854775808'],
    ['%d', [2 ** 32 + 5], '5'],
    ['%hd', [0x18000], '-32768'],
    ['%#x', [255], '0xff'],
    ['%#lx != %#lx (%s != %s)', [1n, 2n, 'a', 'b'], '0x1 != 0x2 (a != b)'],
    ['%#X', [0xabc], '0xABC'],
    ['%#x', [0], '0x0'],
    ['%#o', [8], '010'],
    ['%p', [0xdeadbeefn], '0x000000deadbeef'],
    ['%c%c', [65, 'b'], 'Ab'],
    ['%3c|%-3c|', [120, 121], '  x|y  |'],
    ['%.3s|%5s|%-5s|', ['abcdef', 'ab', 'cd'], 'abc|   ab|cd   |'],
    ['%*d|%-*d|', [4, 1, 3, 2], '   1|2  |'],
    ['%.5d', [42], '00042'],
    ['100%%', [], '100%'],
    ['%q', [], '%q'],
    ['%5q', [], '%q'],
    ['trailing %', [], 'trailing %'],
    ['%s', [12n], '12'],
    ['%d', [true], '1'],
  ] as const)('formats %s', (fmt, values, out) => {
    expect(f(fmt, values)).toBe(out);
  });

  it('rejects a missing argument, a non-integer, an object for %s, and %n', () => {
    expect(() => f('%d %d', [1])).toThrow(/needs an argument for %d \(argument 2\)/);
    expect(() => f('%d', [1.5])).toThrow(/needs an integer.*number 1.5/);
    expect(() => f('%s', [{}])).toThrow(/%s needs a string, got object/);
    expect(() => f('%n', [0])).toThrow(/%n is not supported/);
  });

  // What tools/testing/selftests/kvm/lib/guest_sprintf.c prints, written as C's printf rules plus the
  // places number() departs from them: `#` prints its prefix for 0 too (no `num != 0` test: `%#x` of 0 is
  // `0x0`, `%#o` of 0 is `00`), `%#X` prints a lower-case `0x`, `#o` adds its `0` in front of the
  // precision zeros, a value of 0 prints `0` even at precision 0, and `0` pads with zeros even when a
  // precision is given. `-` wins over `0`; `+` and space only matter for d and i.
  function reference(
    flags: string,
    width: number,
    precision: number | undefined,
    qual: string,
    conv: string,
    v: bigint,
  ): string {
    const bits = qual === 'h' ? 16 : qual === 'l' || qual === 'll' ? 64 : 32;
    const signed = conv === 'd' || conv === 'i';
    const n = signed ? BigInt.asIntN(bits, v) : BigInt.asUintN(bits, v);
    const neg = n < 0n;
    const base = conv === 'x' || conv === 'X' ? 16 : conv === 'o' ? 8 : 10;
    let body = (neg ? -n : n).toString(base);
    if (conv === 'X') body = body.toUpperCase();
    if (precision !== undefined) body = body.padStart(precision, '0');
    let prefix = neg ? '-' : signed && flags.includes('+') ? '+' : signed && flags.includes(' ') ? ' ' : '';
    if (flags.includes('#') && base === 16) prefix += '0x';
    if (flags.includes('#') && base === 8) prefix += '0';
    const len = prefix.length + body.length;
    if (width <= len) return prefix + body;
    const pad = width - len;
    if (flags.includes('-')) return prefix + body + ' '.repeat(pad);
    if (flags.includes('0')) return prefix + '0'.repeat(pad) + body;
    return ' '.repeat(pad) + prefix + body;
  }

  it.each([
    ['%-#x', [0], '0x0'],
    ['%-#5x|', [0], '0x0  |'],
    ['%#05x', [0], '0x000'],
    ['%#o', [0], '00'],
    ['%#.3o', [8], '0010'],
    ['%.0d', [0], '0'],
    ['%05.3d', [1], '00001'],
    ['%#X', [0], '0x0'],
  ] as const)('prints %s as guest_sprintf.c number() does', (fmt, values, out) => {
    expect(f(fmt, values)).toBe(out);
  });

  it('agrees with guest_sprintf.c on integers for every flag combination, width, precision and qualifier', () => {
    fc.assert(
      fc.property(
        fc
          .subarray(['-', '0', '+', ' ', '#'])
          .chain((fl) => fc.shuffledSubarray(fl, { minLength: fl.length })),
        fc.integer({ min: 0, max: 30 }),
        fc.option(fc.integer({ min: 0, max: 25 }), { nil: undefined }),
        fc.constantFrom('', 'h', 'l', 'll'),
        fc.constantFrom('d', 'i', 'u', 'x', 'X', 'o'),
        fc.oneof(fc.constant(0n), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n })),
        (flagList, width, precision, qual, conv, v) => {
          const flags = flagList.join('');
          const fmt = `%${flags}${width || ''}${precision === undefined ? '' : `.${precision}`}${qual}${conv}`;
          expect(f(fmt, [v])).toBe(reference(flags, width, precision, qual, conv, v));
        },
      ),
    );
  });

  it('ends a huge width or precision with an error, in time independent of it', () => {
    for (const fmt of ['%999999999d', '%.999999999d', '%-999999999s|', '%999999999c', '%0999999999lx', '%*d'])
      expect(() => f(fmt, fmt === '%*d' ? [2 ** 31 - 1, 1] : [1])).toThrow(RangeError);
    expect(() => f('%2000d', [1], 1000)).toThrow(/passes maxLength 1000/);
    expect(f('%1000d', [1], 1000)).toHaveLength(1000);
  });

  it('agrees with C printf on %s with width, precision and left alignment', () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 40 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 50 }),
        fc.option(fc.integer({ min: 0, max: 50 })),
        (s, left, width, precision) => {
          const fmt = `<%${left ? '-' : ''}${width || ''}${precision === null ? '' : `.${precision}`}s>`;
          const cut = precision === null ? s : s.slice(0, precision);
          const padded = left ? cut.padEnd(width) : cut.padStart(width);
          expect(f(fmt, [s])).toBe(`<${padded}>`);
        },
      ),
    );
  });

  it('copies text without conversions unchanged', () => {
    fc.assert(
      fc.property(
        fc.string().filter((s) => !s.includes('%')),
        (s) => {
          expect(f(s, [])).toBe(s);
        },
      ),
    );
  });
});
