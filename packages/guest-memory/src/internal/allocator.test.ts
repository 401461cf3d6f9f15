import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PageAllocator } from './allocator.js';
import { GuestMemoryError } from './errors.js';
import { PhysicalMemory } from './physical.js';

function setup(pages = 64) {
  const memory = new PhysicalMemory();
  memory.addRegion({ slot: 0, gpa: 0x10_0000n, size: BigInt(pages * 4096) });
  memory.addRegion({ slot: 1, gpa: 0x100_0000n, size: 0x10_0000n });
  return { memory, alloc: new PageAllocator(memory) };
}

function errorOf(f: () => unknown): GuestMemoryError {
  try {
    f();
  } catch (e) {
    if (e instanceof GuestMemoryError) return e;
    throw e;
  }
  throw new Error('expected a GuestMemoryError');
}

describe('PageAllocator.alloc', () => {
  it('hands out the lowest free pages at or above minGpa and marks them used', () => {
    const { memory, alloc } = setup();
    expect(alloc.alloc({ slot: 0 })).toBe(0x10_0000n);
    expect(alloc.alloc({ slot: 0, pages: 3 })).toBe(0x10_1000n);
    expect(alloc.alloc({ slot: 0, minGpa: 0x10_8000n })).toBe(0x10_8000n);
    expect(alloc.alloc({ slot: 0, minGpa: 0x10_8000n })).toBe(0x10_9000n);
    const r = memory.getRegion(0)!;
    expect([0, 1, 2, 3, 8, 9].every((i) => !r.isPageFree(i))).toBe(true);
    expect(r.isPageFree(4)).toBe(true);
  });

  it('treats a minGpa below the region as the region start', () => {
    const { alloc } = setup();
    expect(alloc.alloc({ slot: 1, minGpa: 0x2000n })).toBe(0x100_0000n);
  });

  it('skips runs that are too short for a multi-page request', () => {
    const { alloc } = setup();
    alloc.alloc({ slot: 0, pages: 4 });
    alloc.free(0x10_1000n, 2); // a 2-page hole at pages 1–2
    expect(alloc.alloc({ slot: 0, pages: 3 })).toBe(0x10_4000n);
    expect(alloc.alloc({ slot: 0, pages: 2 })).toBe(0x10_1000n);
  });

  it('throws OUT_OF_PAGES naming slot, count, minGpa and the free pages left, and changes nothing', () => {
    const { memory, alloc } = setup(8);
    alloc.alloc({ slot: 0, pages: 2, minGpa: 0x10_4000n });
    const e = errorOf(() => alloc.alloc({ slot: 0, pages: 4, minGpa: 0x10_1000n }));
    expect(e.code).toBe('OUT_OF_PAGES');
    expect(e.message).toBe(
      'cannot allocate 4 contiguous page(s) in memslot 0 at or above GPA 0x101000: 5 free page(s) left there ' +
        '(longest free run 3) in memslot 0 [0x100000–0x107fff]',
    );
    expect(e.details).toMatchObject({ slot: 0, pages: 4, minGpa: 0x10_1000n, freePages: 5 });
    const r = memory.getRegion(0)!;
    expect([0, 1, 2, 3, 6, 7].every((i) => r.isPageFree(i))).toBe(true);
  });

  it('throws NO_SUCH_SLOT for an unknown memslot and UNALIGNED for an unaligned minGpa', () => {
    const { alloc } = setup();
    expect(errorOf(() => alloc.alloc({ slot: 4 })).code).toBe('NO_SUCH_SLOT');
    expect(errorOf(() => alloc.alloc({ slot: 0, minGpa: 0x10_0800n })).code).toBe('UNALIGNED');
    expect(() => alloc.alloc({ slot: 0, pages: 0 })).toThrow(RangeError);
    expect(() => alloc.alloc({ slot: 0, minGpa: 5 as unknown as bigint })).toThrow(TypeError);
  });

  it('marks protected allocations in the protected bitmap and reports them as ranges', () => {
    const { memory, alloc } = setup();
    alloc.alloc({ slot: 0, pages: 2, protected: true });
    alloc.alloc({ slot: 0 });
    const p = alloc.alloc({ slot: 0, pages: 3, protected: true });
    alloc.alloc({ slot: 0, protected: true });
    expect(alloc.protectedRanges(0)).toEqual([
      { gpa: 0x10_0000n, pages: 2 },
      { gpa: 0x10_3000n, pages: 4 },
    ]);
    expect(alloc.isProtected(p + 0x123n)).toBe(true);
    expect(alloc.isProtected(0x10_2000n)).toBe(false);
    expect(alloc.isProtected(0xdead_0000n)).toBe(false);
    expect(memory.getRegion(0)!.isPageProtected(3)).toBe(true);
    alloc.free(p, 3);
    expect(alloc.protectedRanges(0)).toEqual([
      { gpa: 0x10_0000n, pages: 2 },
      { gpa: 0x10_6000n, pages: 1 },
    ]);
  });
});

describe('PageAllocator.free', () => {
  it('throws NOT_ALLOCATED on a double free and frees nothing', () => {
    const { memory, alloc } = setup();
    const a = alloc.alloc({ slot: 0, pages: 4 });
    alloc.free(a + 0x2000n);
    const e = errorOf(() => alloc.free(a, 4));
    expect(e.code).toBe('NOT_ALLOCATED');
    expect(e.message).toBe(
      'cannot free 4 page(s) at GPA 0x100000: page 0x102000 is not allocated (double free?)',
    );
    const r = memory.getRegion(0)!;
    expect([0, 1, 3].every((i) => !r.isPageFree(i))).toBe(true);
  });

  it('rejects unbacked and unaligned GPAs', () => {
    const { alloc } = setup();
    expect(errorOf(() => alloc.free(0x5000_0000n)).message).toMatch(/is not backed by any memslot/);
    expect(errorOf(() => alloc.free(0x10_0010n)).code).toBe('UNALIGNED');
  });
});

describe('PageAllocator against a reference model', () => {
  it('never hands out a page twice and frees exactly what it was given (property)', () => {
    const PAGES = 48;
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('alloc' as const),
        pages: fc.integer({ min: 1, max: 6 }),
        min: fc.integer({ min: 0, max: PAGES + 2 }),
      }),
      fc.record({ kind: fc.constant('free' as const), which: fc.nat(), partial: fc.boolean() }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const { memory, alloc } = setup(PAGES);
        const used = new Set<number>();
        const live: Array<{ page: number; pages: number }> = [];
        for (const o of ops) {
          if (o.kind === 'alloc') {
            // Reference: lowest run of free pages at or above min.
            let expected = -1;
            for (let s = o.min; s + o.pages <= PAGES && expected < 0; s++) {
              let ok = true;
              for (let k = 0; k < o.pages; k++) if (used.has(s + k)) ok = false;
              if (ok) expected = s;
            }
            const minGpa = 0x10_0000n + BigInt(o.min) * 0x1000n;
            if (expected < 0) {
              expect(errorOf(() => alloc.alloc({ slot: 0, pages: o.pages, minGpa })).code).toBe(
                'OUT_OF_PAGES',
              );
              continue;
            }
            const gpa = alloc.alloc({ slot: 0, pages: o.pages, minGpa });
            const page = Number((gpa - 0x10_0000n) / 0x1000n);
            expect(page).toBe(expected);
            for (let k = 0; k < o.pages; k++) {
              expect(used.has(page + k)).toBe(false);
              used.add(page + k);
            }
            live.push({ page, pages: o.pages });
          } else if (live.length > 0) {
            const i = o.which % live.length;
            const a = live[i]!;
            if (o.partial && a.pages > 1) {
              // Free the tail page only.
              alloc.free(0x10_0000n + BigInt(a.page + a.pages - 1) * 0x1000n);
              used.delete(a.page + a.pages - 1);
              a.pages--;
            } else {
              alloc.free(0x10_0000n + BigInt(a.page) * 0x1000n, a.pages);
              for (let k = 0; k < a.pages; k++) used.delete(a.page + k);
              live.splice(i, 1);
              // A second free of the same pages is a double free.
              expect(errorOf(() => alloc.free(0x10_0000n + BigInt(a.page) * 0x1000n, a.pages)).code).toBe(
                'NOT_ALLOCATED',
              );
            }
          }
          const r = memory.getRegion(0)!;
          for (let p = 0; p < PAGES; p++) expect(r.isPageFree(p)).toBe(!used.has(p));
        }
      }),
      { numRuns: 150 },
    );
  });

  it('stays fast and correct across thousands of single-page allocations around a reserved range', () => {
    const memory = new PhysicalMemory();
    memory.addRegion({ slot: 0, gpa: 0n, size: 0x100_0000n });
    const alloc = new PageAllocator(memory);
    const seen = new Set<bigint>();
    for (let i = 0; i < 3000; i++) {
      const data = alloc.alloc({ slot: 0, minGpa: 0x2000n });
      expect(seen.has(data)).toBe(false);
      seen.add(data);
      if (i % 100 === 0) {
        const table = alloc.alloc({ slot: 0, minGpa: 0x18_0000n });
        expect(table >= 0x18_0000n).toBe(true);
        expect(seen.has(table)).toBe(false);
        seen.add(table);
      }
    }
  });
});

describe('PageAllocator above 2^53', () => {
  it('allocates and frees exact GPAs in a region that numbers cannot represent', () => {
    const memory = new PhysicalMemory();
    const base = 0x40_0000_0000_0000n;
    memory.addRegion({ slot: 7, gpa: base, size: 0x10_0000n });
    const alloc = new PageAllocator(memory);
    expect(alloc.alloc({ slot: 7, minGpa: base + 0x3000n, protected: true })).toBe(base + 0x3000n);
    expect(alloc.alloc({ slot: 7 })).toBe(base);
    expect(alloc.protectedRanges(7)).toEqual([{ gpa: base + 0x3000n, pages: 1 }]);
    alloc.free(base + 0x3000n);
    expect(alloc.isProtected(base + 0x3000n)).toBe(false);
  });
});
