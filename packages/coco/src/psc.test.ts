import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodePscDesc,
  decodePscEntry,
  encodePscDesc,
  encodePscEntry,
  PSC_DESC_SIZE,
  PSC_OP,
  type PscEntry,
  VMGEXIT_PSC_MAX_ENTRY,
} from './index.js';

const entryArb: fc.Arbitrary<PscEntry> = fc.record({
  curPage: fc.nat({ max: 0xfff }),
  gfn: fc.bigInt({ min: 0n, max: (1n << 40n) - 1n }),
  op: fc.nat({ max: 15 }),
  pageSize: fc.constantFrom('4k' as const, '2m' as const),
});

describe('PSC descriptor', () => {
  it('fills exactly the GHCB shared buffer', () => {
    expect(PSC_DESC_SIZE).toBe(2032);
  });

  it('lays out an entry as sev-common.h does', () => {
    expect(encodePscEntry({ curPage: 0, gfn: 0x123n, op: PSC_OP.PRIVATE, pageSize: '2m' })).toBe(
      (1n << 56n) | (1n << 52n) | (0x123n << 12n),
    );
  });

  it('round-trips entries and descriptors', () => {
    fc.assert(
      fc.property(entryArb, (e) => {
        expect(decodePscEntry(encodePscEntry(e))).toEqual(e);
      }),
    );
    fc.assert(
      fc.property(
        fc.array(entryArb, { minLength: 1, maxLength: VMGEXIT_PSC_MAX_ENTRY }),
        fc.nat({ max: 0xffff }),
        (entries, curEntry) => {
          expect(decodePscDesc(encodePscDesc({ curEntry, entries }))).toEqual({ curEntry, entries });
        },
      ),
      { numRuns: 30 },
    );
  });

  it('rejects a header KVM calls INVALID_HDR and reserved entry bits', () => {
    const buf = new Uint8Array(PSC_DESC_SIZE);
    new DataView(buf.buffer).setUint16(2, 253, true);
    expect(() => decodePscDesc(buf)).toThrow(/end_entry 253 is not below 253/);
    expect(() => decodePscEntry(1n << 60n)).toThrow(/reserved bit 60 set/);
    expect(() => encodePscDesc({ curEntry: 0, entries: [] })).toThrow(/1..253 entries, got 0/);
  });
});
