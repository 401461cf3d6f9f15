import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AttributeMap } from './memory.js';

describe('AttributeMap (the memory-attribute xarray as ranges)', () => {
  it('agrees with a per-page array after any sequence of range updates', () => {
    const upd = fc.record({
      start: fc.nat(40),
      len: fc.integer({ min: 1, max: 12 }),
      attr: fc.constantFrom(0n, 8n, 16n),
    });
    fc.assert(
      fc.property(fc.array(upd, { maxLength: 30 }), (ups) => {
        const m = new AttributeMap();
        const ref: bigint[] = Array(64).fill(0n);
        for (const u of ups) {
          m.set(BigInt(u.start), BigInt(u.start + u.len), u.attr);
          for (let p = u.start; p < u.start + u.len; p++) ref[p] = u.attr;
        }
        for (let p = 0; p < 64; p++) expect(m.get(BigInt(p))).toBe(ref[p]);
        for (let s = 0; s < 60; s += 7)
          for (const a of [0n, 8n]) {
            const want = ref.slice(s, s + 5).every((x) => x === a);
            expect(m.uniform(BigInt(s), BigInt(s + 5), a)).toBe(want);
          }
      }),
      { numRuns: 300 },
    );
  });
});
