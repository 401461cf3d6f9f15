import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AddressSpace, type AddressSpaceOptions } from './address-space.js';
import { GuestMemoryError } from './errors.js';
import { PTE } from './paging.js';
import { PhysicalMemory } from './physical.js';

const PAGE = 0x1000n;

function space(opts: Partial<AddressSpaceOptions> = {}, size = 0x400_0000n): AddressSpace {
  const memory = new PhysicalMemory();
  memory.addRegion({ slot: 0, gpa: 0n, size });
  return new AddressSpace({ memory, ...opts });
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

function leafPte(s: AddressSpace, gva: bigint): bigint {
  const r = s.pageTables.walk(gva, { withPtes: true });
  if (!r.ok) throw new Error(`GVA ${gva} not mapped`);
  return r.ptes[r.ptes.length - 1]!;
}

describe('AddressSpace', () => {
  it('puts page tables at or above 0x180000 and data at or above 0x2000, like the selftests library', () => {
    const s = space();
    expect(s.pageTables.root).toBe(0x18_0000n);
    const gva = s.vaddrAlloc(3n * PAGE);
    expect(gva).toBe(0x2000n);
    expect(s.gvaToGpa(gva)).toBe(0x2000n);
    expect(s.gvaToGpa(gva + 2n * PAGE + 5n)).toBe(0x4005n);
  });

  it('rounds allocation sizes up to whole pages and never reuses a GVA', () => {
    const s = space();
    const a = s.vaddrAlloc(1n);
    const b = s.vaddrAlloc(PAGE + 1n);
    const c = s.vaddrAlloc(PAGE);
    expect(b - a).toBe(PAGE);
    expect(c - b).toBe(2n * PAGE);
  });

  it('honours minGva and writable/nx options', () => {
    const s = space();
    const gva = s.vaddrAlloc(PAGE, { minGva: 0x1234_5678n, writable: false, nx: true });
    expect(gva).toBe(0x1234_6000n);
    expect(s.pageTables.walk(gva)).toMatchObject({ ok: true, writable: false, nx: true });
  });

  it('marks private allocations protected and sets the SEV C-bit only on their leaves', () => {
    const s = space({ tag: { bit: 51, setWhen: 'private' }, protectedByDefault: true, physBits: 52 });
    const priv = s.vaddrAlloc(PAGE);
    const shared = s.vaddrAlloc(PAGE, { visibility: 'shared' });
    expect(s.isPrivate(s.gvaToGpa(priv))).toBe(true);
    expect(s.isPrivate(s.gvaToGpa(shared))).toBe(false);
    expect(leafPte(s, priv) & (1n << 51n)).toBe(1n << 51n);
    expect(leafPte(s, shared) & (1n << 51n)).toBe(0n);
    const r = s.pageTables.walk(priv, { withPtes: true });
    if (!r.ok) throw new Error('unmapped');
    for (const upper of r.ptes.slice(0, -1)) expect(upper & (1n << 51n)).toBe(0n);
    // The page tables themselves are private on a CoCo VM.
    expect(s.isPrivate(s.pageTables.root)).toBe(true);
    expect(s.allocator.protectedRanges(0)[0]!.gpa).toBe(0x2000n);
  });

  it('sets the TDX S-bit only on shared leaves', () => {
    const s = space({ tag: { bit: 47, setWhen: 'shared' }, protectedByDefault: true, physBits: 48 });
    const priv = s.vaddrAlloc(PAGE);
    const shared = s.vaddrAlloc(PAGE, { visibility: 'shared' });
    expect(s.pageTables.walk(priv)).toMatchObject({ ok: true, tagged: false });
    expect(s.pageTables.walk(shared)).toMatchObject({ ok: true, tagged: true });
    expect(s.gvaToGpa(shared) >> 47n).toBe(0n);
  });

  it('allocates unprotected memory by default on a non-CoCo VM', () => {
    const s = space();
    const gva = s.vaddrAlloc(PAGE);
    expect(s.isPrivate(s.gvaToGpa(gva))).toBe(false);
    expect(s.allocator.protectedRanges(0)).toEqual([]);
  });

  it('uses the configured memslots for data and page tables', () => {
    const memory = new PhysicalMemory();
    memory.addRegion({ slot: 0, gpa: 0n, size: 0x40_0000n });
    memory.addRegion({ slot: 3, gpa: 0x1000_0000n, size: 0x10_0000n });
    const s = new AddressSpace({ memory, slots: { pageTables: 3, data: 0 }, pageTableMinGpa: 0n });
    expect(s.pageTables.root).toBe(0x1000_0000n);
    expect(s.gvaToGpa(s.vaddrAlloc(PAGE))).toBe(0x2000n);
  });

  it('throws OUT_OF_PAGES when physical memory runs out and leaves the space unchanged', () => {
    const s = space({}, 0x20_0000n);
    const before = s.pageTables.mappings().length;
    expect(errorOf(() => s.vaddrAlloc(0x40_0000n)).code).toBe('OUT_OF_PAGES');
    expect(s.pageTables.mappings().length).toBe(before);
    expect(s.vaddrAlloc(PAGE)).toBe(0x2000n);
  });

  it('rolls back when the page-table slot runs out in the middle of an allocation', () => {
    const memory = new PhysicalMemory();
    memory.addRegion({ slot: 0, gpa: 0n, size: 0x100_0000n });
    memory.addRegion({ slot: 1, gpa: 0x1000_0000n, size: 0x4000n }); // root + 3 tables only
    const s = new AddressSpace({ memory, slots: { pageTables: 1 }, pageTableMinGpa: 0n });
    s.vaddrAlloc(PAGE);
    // Crossing into a second page table needs one more table page than slot 1 has.
    const e = errorOf(() => s.vaddrAlloc(0x20_0000n));
    expect(e.code).toBe('OUT_OF_PAGES');
    expect(s.pageTables.mappings().length).toBe(1);
    expect(memory.getRegion(0)!.isPageFree(3)).toBe(true);
  });

  it('skips GVAs that were mapped directly through the page tables', () => {
    const s = space();
    s.pageTables.map(0x3000n, 0x10_0000n);
    const gva = s.vaddrAlloc(2n * PAGE);
    expect(gva).toBe(0x4000n);
    expect(s.vaddrAlloc(PAGE)).toBe(0x2000n);
  });

  it('rejects zero and non-bigint sizes', () => {
    const s = space();
    expect(errorOf(() => s.vaddrAlloc(0n)).code).toBe('ZERO_SIZE');
    expect(() => s.vaddrAlloc(4096 as unknown as bigint)).toThrow(TypeError);
    expect(() => s.vaddrAlloc(PAGE, { visibility: 'secret' as 'private' })).toThrow(RangeError);
  });

  it('hands out disjoint GVA and GPA pages across random allocations and frees (property)', () => {
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('alloc' as const),
        pages: fc.integer({ min: 1, max: 5 }),
        min: fc.nat(40),
      }),
      fc.record({ kind: fc.constant('free' as const), which: fc.nat() }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const s = space({}, 0x80_0000n);
        const live: Array<{ gva: bigint; pages: number }> = [];
        for (const o of ops) {
          if (o.kind === 'alloc') {
            const gva = s.vaddrAlloc(BigInt(o.pages) * PAGE, { minGva: BigInt(o.min) * PAGE });
            expect(gva >= BigInt(Math.max(o.min, 0)) * PAGE).toBe(true);
            live.push({ gva, pages: o.pages });
          } else if (live.length) {
            const [a] = live.splice(o.which % live.length, 1);
            s.vaddrFree(a!.gva);
            expect(s.pageTables.translate(a!.gva)).toBeUndefined();
          }
        }
        const gvas = new Set<bigint>();
        const gpas = new Set<bigint>();
        for (const a of live)
          for (let i = 0n; i < BigInt(a.pages); i++) {
            const gva = a.gva + i * PAGE;
            const gpa = s.gvaToGpa(gva);
            expect(gvas.has(gva)).toBe(false);
            expect(gpas.has(gpa)).toBe(false);
            expect(gpa >= 0x2000n).toBe(true);
            // Physically contiguous, like __vm_phy_pages_alloc.
            expect(gpa).toBe(s.gvaToGpa(a.gva) + i * PAGE);
            gvas.add(gva);
            gpas.add(gpa);
          }
      }),
      { numRuns: 60 },
    );
  });
});

describe('AddressSpace.vaddrFree', () => {
  it('unmaps, frees the pages and lets the GVAs be reused', () => {
    const s = space();
    const a = s.vaddrAlloc(2n * PAGE);
    s.vaddrFree(a);
    expect(() => s.gvaToGpa(a)).toThrow(GuestMemoryError);
    expect(s.vaddrAlloc(PAGE)).toBe(a);
  });

  it('throws NOT_MAPPED for a GVA that is not the start of an allocation', () => {
    const s = space();
    const a = s.vaddrAlloc(2n * PAGE);
    expect(() => s.vaddrFree(a + PAGE)).toThrow('GVA 0x3000 is not the start of a vaddrAlloc allocation');
  });
});

describe('AddressSpace.mapRange', () => {
  it('map-range-rolls-back: a mapRange that runs out of page-table pages frees the tables it took', () => {
    // Four page-table pages (0x180000–0x183fff): the root, then three for the first page's path.
    const s = space({}, 0x18_4000n);
    const e = errorOf(() => s.mapRange(0x3fff_f000n, 0x1_0000n, 2n * PAGE));
    expect(e.code).toBe('OUT_OF_PAGES');
    expect(s.pageTables.translate(0x3fff_f000n)).toBeUndefined();
    expect(s.pageTables.mappings()).toEqual([]);
    // Every page-table page but the root is free again: a 4 KiB allocation (three tables) fits.
    expect(s.vaddrAlloc(PAGE)).toBe(0x2000n);
  });

  it('maps a range without allocating, tagging pages by their protection', () => {
    const s = space({ tag: { bit: 51, setWhen: 'private' }, protectedByDefault: true });
    const priv = s.allocator.alloc({ slot: 0, pages: 1, protected: true });
    const shared = s.allocator.alloc({ slot: 0, pages: 1 });
    s.mapRange(0x10_0000n, priv, PAGE);
    s.mapRange(0x20_0000n, shared, PAGE);
    expect(s.pageTables.walk(0x10_0000n)).toMatchObject({ ok: true, gpa: priv, tagged: true });
    expect(s.pageTables.walk(0x20_0000n)).toMatchObject({ ok: true, gpa: shared, tagged: false });
    s.mapRange(0x30_0000n, shared, PAGE, { visibility: 'private' });
    expect(leafPte(s, 0x30_0000n) & (1n << 51n)).not.toBe(0n);
  });

  it('maps huge pages when asked', () => {
    const s = space();
    s.mapRange(0x4000_0000n, 0n, 0x40_0000n, { pageSize: 0x20_0000n });
    expect(s.pageTables.walk(0x4030_0000n)).toMatchObject({
      ok: true,
      gpa: 0x30_0000n,
      pageSize: 0x20_0000n,
    });
    expect(leafPte(s, 0x4000_0000n) & PTE.PS).toBe(PTE.PS);
  });

  it('changes nothing when a page in the middle is already mapped', () => {
    const s = space();
    s.pageTables.map(0x10_2000n, 0x50_0000n);
    const e = errorOf(() => s.mapRange(0x10_0000n, 0x60_0000n, 4n * PAGE));
    expect(e.code).toBe('ALREADY_MAPPED');
    expect(s.pageTables.translate(0x10_0000n)).toBeUndefined();
    expect(s.pageTables.translate(0x10_1000n)).toBeUndefined();
    expect(s.pageTables.translate(0x10_2000n)).toBe(0x50_0000n);
  });

  it('keeps vaddrAlloc away from the mapped range', () => {
    const s = space();
    s.mapRange(0x2000n, 0x30_0000n, 2n * PAGE);
    expect(s.vaddrAlloc(PAGE)).toBe(0x4000n);
  });

  it('rejects sizes that are not a multiple of the page size', () => {
    const s = space();
    expect(errorOf(() => s.mapRange(0n, 0n, 0x1800n)).code).toBe('UNALIGNED');
    expect(errorOf(() => s.mapRange(0n, 0n, 0n)).code).toBe('ZERO_SIZE');
  });
});

describe('AddressSpace.gvaToGpa', () => {
  it('throws NOT_MAPPED naming the GVA and the fault', () => {
    expect(() => space().gvaToGpa(0x7000n)).toThrow('GVA 0x7000 is not mapped (not-present at level 4)');
  });

  it('works with 5-level paging in the upper half', () => {
    const s = space({ levels: 5 });
    s.mapRange(0xff00_0000_0000_0000n, 0x30_0000n, PAGE);
    expect(s.gvaToGpa(0xff00_0000_0000_0010n)).toBe(0x30_0010n);
  });
});

describe('AddressSpace in the upper half', () => {
  it('allocates and frees at kernel-style GVAs', () => {
    const s = space();
    const gva = s.vaddrAlloc(2n * PAGE, { minGva: 0xffff_8000_0000_0000n });
    expect(gva).toBe(0xffff_8000_0000_0000n);
    expect(s.vaddrAlloc(PAGE, { minGva: 0xffff_8000_0000_0000n })).toBe(0xffff_8000_0000_2000n);
    s.vaddrFree(gva);
    expect(s.pageTables.translate(gva)).toBeUndefined();
  });

  it('skips the non-canonical hole when the lower half is exhausted', () => {
    const s = space();
    const gva = s.vaddrAlloc(PAGE, { minGva: 0x7fff_ffff_f000n });
    expect(gva).toBe(0x7fff_ffff_f000n);
    expect(s.vaddrAlloc(2n * PAGE, { minGva: 0x7fff_ffff_f000n })).toBe(0xffff_8000_0000_0000n);
  });
});
