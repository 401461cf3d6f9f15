import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { argBigint, argInteger, argOneOf, argString, argU64, describeValue } from './validate.js';

describe('describeValue', () => {
  it('describes any value without throwing', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.anything(),
          fc.constantFrom(Object.create(null), Symbol('s'), () => 0, 1n),
        ),
        (v) => {
          expect(typeof describeValue(v)).toBe('string');
        },
      ),
    );
  });
  it('names bigints with their n, cuts long strings', () => {
    expect(describeValue(1n)).toBe('bigint 1n');
    expect(describeValue('x'.repeat(100))).toMatch(/^string "x{60}…"$/);
    expect(describeValue(null)).toBe('null');
  });
});

describe('arg checks', () => {
  it('throw TypeError for the wrong type and RangeError outside the range, naming call and argument', () => {
    expect(() => argInteger('f', 'n', 1.5, 0, 9)).toThrow(
      new TypeError('f: n must be an integer number in 0..9, got number 1.5'),
    );
    expect(() => argInteger('f', 'n', 10, 0, 9)).toThrow(new RangeError('f: n 10 is outside 0..9'));
    expect(() => argBigint('f', 'b', 1, 0n, 9n)).toThrow(TypeError);
    expect(() => argU64('f', 'g', -1n)).toThrow(RangeError);
    expect(() => argOneOf('f', 't', 'x', ['a', 'b'])).toThrow(
      new RangeError('f: t must be one of a, b, got string "x"'),
    );
    expect(() => argString('f', 's', 'abc', 2)).toThrow(RangeError);
    expect(argU64('f', 'g', 5n)).toBe(5n);
  });
});
