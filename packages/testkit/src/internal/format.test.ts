import { describe, expect, test } from 'vitest';
import { formatString, hex64 } from './format.js';

describe('formatString', () => {
  test('formats the conversions the selftests use', () => {
    expect(formatString('%d %i %u', -5n, 7, 3n)).toBe('-5 7 3');
    expect(formatString('%#lx != %#lx', 0x29n, 42)).toBe('0x29 != 0x2a');
    expect(formatString('%lx %X %o %#o', 255n, 255, 8, 8)).toBe('ff FF 10 010');
    expect(formatString('%s=%c %p', 'x', 65, 0x1000n)).toBe('x=A 0x1000');
    expect(formatString('100%%')).toBe('100%');
  });

  test('honours width, precision and flags', () => {
    expect(formatString('[%5d|%-5d|%05d|%+d]', 42, 42, 42, 42)).toBe('[   42|42   |00042|+42]');
    expect(formatString('[%.3s|%8.4x]', 'abcdef', 0xabn)).toBe('[abc|    00ab]');
    expect(formatString('[%*d]', 4, 7)).toBe('[   7]');
  });

  test('prints negative values as 64-bit two’s complement for unsigned conversions', () => {
    expect(formatString('%#lx %lu', -1n, -1)).toBe('0xffffffffffffffff 18446744073709551615');
    expect(hex64(-2)).toBe('0xfffffffffffffffe');
  });

  test('never loses a value: missing ones are marked, extra ones appended', () => {
    expect(formatString('%d and %d', 1)).toBe('1 and <missing>');
    expect(formatString('done', 1n, 'x')).toBe('done 1 x');
  });

  test('rejects a non-integer for an integer conversion, naming the conversion', () => {
    expect(() => formatString('%d', 1.5)).toThrow(/%d needs an integer, got number 1.5/);
  });
});

describe('bounded-printf-width', () => {
  test('refuses a width or precision past FORMAT_MAX_WIDTH before padding anything', () => {
    expect(() => formatString('%999999999d', 1)).toThrow(/width 999999999 .* is more than 4096/);
    expect(() => formatString('%.999999999s', 'x')).toThrow(RangeError);
    expect(() => formatString('%*d', 2 ** 40, 1)).toThrow(RangeError);
    expect(formatString('%4096d', 1)).toHaveLength(4096);
  });
  test('names a value it cannot use as a * width instead of an engine error', () => {
    expect(() => formatString('%*d', Symbol('w') as never, 1)).toThrow(
      /\* width must be an integer, got a symbol/,
    );
  });
});
