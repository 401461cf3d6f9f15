import { describe, expect, test } from 'vitest';
import { callArguments, callerOf, displayLocation, splitArguments } from './callsite.js';

function probe(_a: unknown, _b?: unknown) {
  return callerOf(probe);
}

describe('call sites', () => {
  test('the caller of a function is this file and line', () => {
    const site = probe(1); // line 10
    expect(site?.path).toMatch(/callsite\.test\.ts$/);
    expect(site?.line).toBe(10);
    expect(displayLocation(site)?.file).toMatch(/^(packages\/testkit\/)?src\/internal\/callsite\.test\.ts$/);
  });

  test('argument texts are read back from the source, across lines', () => {
    const site = probe(
      1 + 2, // a comment with a , comma
      'a,b)',
    );
    expect(callArguments(site, 'probe')).toEqual(['1 + 2', "'a,b)'"]);
  });

  test('splitArguments splits at top-level commas only', () => {
    expect(splitArguments('a, f(b, c), [d, e], { f: 1, g: 2 }) + 1')).toEqual([
      'a',
      'f(b, c)',
      '[d, e]',
      '{ f: 1, g: 2 }',
    ]);
    expect(splitArguments(')')).toEqual([]);
    expect(splitArguments('a, b')).toBeUndefined();
  });
});
