import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuestMemoryError } from './errors.js';
import { type PageSize, PageTables, type PagingParams, PTE, walk } from './paging.js';
import { PhysicalMemory, type PhysReader } from './physical.js';

const K4 = 0x1000n;
const M2 = 0x20_0000n;
const G1 = 0x4000_0000n;
const SIZES: PageSize[] = [K4, M2, G1];

/** Page tables over a 16 MiB slot with a bump allocator for table pages (which are zero). */
function setup(params: PagingParams = { levels: 4 }) {
  const memory = new PhysicalMemory();
  memory.addRegion({ slot: 0, gpa: 0n, size: 0x100_0000n });
  let next = 0x10_0000n;
  let tables = 0;
  const pt = new PageTables(memory, params, () => {
    tables++;
    next += K4;
    return next - K4;
  });
  return { memory, pt, tables: () => tables };
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

function snapshot(memory: PhysicalMemory): Buffer {
  return Buffer.from(memory.read(0x10_0000n, 0x10_0000));
}

describe('PageTables.map and walk', () => {
  it('translate a 4 KiB mapping and report its permissions', () => {
    const { pt } = setup();
    pt.map(0x40_0000n, 0x20_0000n);
    const r = pt.walk(0x40_0123n);
    expect(r).toMatchObject({
      ok: true,
      gpa: 0x20_0123n,
      pageSize: K4,
      writable: true,
      user: false,
      nx: false,
    });
    expect(pt.translate(0x40_1000n)).toBeUndefined();
  });

  it('write real x86-64 entries: P|W|U on tables, the requested bits on the leaf', () => {
    const { memory, pt } = setup();
    pt.map(0x40_0000n, 0x20_0000n, M2, { writable: false, user: true, nx: true });
    const r = pt.walk(0x40_0000n, { withPtes: true });
    if (!r.ok) throw new Error('walk failed');
    expect(r.ptes.length).toBe(3);
    expect(r.ptes[0]! & 0xfffn).toBe(PTE.PRESENT | PTE.WRITABLE | PTE.USER);
    expect(r.ptes[2]).toBe(0x20_0000n | PTE.PRESENT | PTE.USER | PTE.PS | PTE.NX);
    expect(memory.readU64(pt.root)).toBe(r.ptes[0]);
  });

  it('round-trip random mappings of every page size against a reference model, for 4 and 5 levels (property)', () => {
    const op = fc.record({
      kind: fc.constantFrom('map', 'map', 'map', 'unmap'),
      size: fc.constantFrom(...SIZES),
      zone: fc.integer({ min: 0, max: 2 }),
      a: fc.integer({ min: 0, max: 3 }),
      b: fc.integer({ min: 0, max: 3 }),
      c: fc.integer({ min: 0, max: 3 }),
      gpaPage: fc.integer({ min: 0, max: 2 ** 20 }),
      writable: fc.boolean(),
      user: fc.boolean(),
      nx: fc.boolean(),
    });
    for (const levels of [4, 5] as const) {
      const upper = levels === 5 ? 0xff00_0000_0000_0000n : 0xffff_8000_0000_0000n;
      const zones = [0n, 0x7fff_0000_0000n, upper];
      fc.assert(
        fc.property(fc.array(op, { maxLength: 25 }), (ops) => {
          const { memory, pt } = setup({ levels });
          const model: Array<{
            gva: bigint;
            gpa: bigint;
            size: bigint;
            writable: boolean;
            user: boolean;
            nx: boolean;
          }> = [];
          for (const o of ops) {
            const raw = zones[o.zone]! + BigInt(o.a) * G1 + BigInt(o.b) * M2 + BigInt(o.c) * K4;
            const gva = raw & ~(o.size - 1n);
            if (o.kind === 'map') {
              const gpa = (BigInt(o.gpaPage) * K4 * 512n) & ~(o.size - 1n);
              const overlaps = model.some((m) => m.gva < gva + o.size && gva < m.gva + m.size);
              if (overlaps) {
                const before = snapshot(memory);
                expect(errorOf(() => pt.map(gva, gpa, o.size as PageSize)).code).toBe('ALREADY_MAPPED');
                expect(snapshot(memory).equals(before)).toBe(true);
              } else {
                pt.map(gva, gpa, o.size as PageSize, { writable: o.writable, user: o.user, nx: o.nx });
                model.push({ gva, gpa, size: o.size, writable: o.writable, user: o.user, nx: o.nx });
              }
            } else {
              const i = model.findIndex((m) => m.gva === gva);
              if (i >= 0) {
                expect(pt.unmap(gva)).toEqual({ gpa: model[i]!.gpa, pageSize: model[i]!.size });
                model.splice(i, 1);
              } else if (!model.some((m) => m.gva <= gva && gva < m.gva + m.size)) {
                expect(errorOf(() => pt.unmap(gva)).code).toBe('NOT_MAPPED');
              }
            }
          }
          // Probe each mapping at its start, end and a middle offset, and a few unmapped GVAs.
          for (const m of model) {
            for (const off of [0n, m.size - 1n, m.size / 3n]) {
              const r = pt.walk(m.gva + off);
              expect(r).toMatchObject({
                ok: true,
                gpa: m.gpa + off,
                pageSize: m.size,
                writable: m.writable,
                user: m.user,
                nx: m.nx,
              });
            }
          }
          for (const z of zones) {
            const gva = z + 3n * G1 + 5n * M2 + 7n * K4;
            if (!model.some((m) => m.gva <= gva && gva < m.gva + m.size)) {
              const r = pt.walk(gva);
              expect(r.ok).toBe(false);
              if (!r.ok) expect(r.fault.reason).toBe('not-present');
            }
          }
          const listed = pt.mappings().map((m) => ({ gva: m.gva, gpa: m.gpa, size: m.pageSize }));
          const expected = model
            .map((m) => ({ gva: m.gva, gpa: m.gpa, size: m.size }))
            .sort((x, y) => (x.gva < y.gva ? -1 : 1));
          expect(listed).toEqual(expected);
        }),
        { numRuns: 60 },
      );
    }
  });

  it('rejects a 4 KiB mapping inside an existing 2 MiB page with ALREADY_MAPPED naming the existing mapping', () => {
    const { pt } = setup();
    pt.map(0x4000_0000n, 0x20_0000n, M2);
    expect(() => pt.map(0x4000_5000n, 0x1000n)).toThrow(
      'cannot map 4 KiB at GVA 0x40005000: it overlaps the existing 2 MiB mapping GVA 0x40000000 → GPA 0x200000',
    );
  });

  it('rejects a 1 GiB mapping over a table that holds a 4 KiB mapping, and changes nothing', () => {
    const { memory, pt, tables } = setup();
    pt.map(0x4012_3000n, 0x1000n);
    const before = snapshot(memory);
    const n = tables();
    expect(errorOf(() => pt.map(0x4000_0000n, 0n, G1)).details).toMatchObject({
      existingGva: 0x4012_3000n,
      existingPageSize: K4,
    });
    expect(snapshot(memory).equals(before)).toBe(true);
    expect(tables()).toBe(n);
  });

  it('replaces an emptied table with a huge page', () => {
    const { pt } = setup();
    pt.map(0x4020_0000n, 0x1000n);
    pt.unmap(0x4020_0000n);
    pt.map(0x4020_0000n, 0x40_0000n, M2);
    expect(pt.translate(0x4020_0010n)).toBe(0x40_0010n);
  });

  it('rejects unaligned GVAs and GPAs with UNALIGNED naming the value and the page size', () => {
    const { pt, tables } = setup();
    const n = tables();
    expect(() => pt.map(0x1000n, 0n, M2)).toThrow('GVA 0x1000 is not aligned to the 2 MiB page size');
    expect(() => pt.map(0n, 0x1000n, G1)).toThrow('GPA 0x1000 is not aligned to the 1 GiB page size');
    expect(() => pt.map(0x10n, 0n)).toThrow(GuestMemoryError);
    expect(tables()).toBe(n);
  });

  it('rejects non-canonical GVAs with NON_CANONICAL and GPAs at or above 2^physBits with BAD_ADDRESS', () => {
    const { pt } = setup({ levels: 4, physBits: 40 });
    expect(errorOf(() => pt.map(0x8000_0000_0000n, 0n)).code).toBe('NON_CANONICAL');
    expect(() => pt.map(0x8000_0000_0000n, 0n)).toThrow(
      /GVA 0x800000000000 is not canonical for 4-level paging/,
    );
    expect(() => pt.map(0n, 1n << 40n)).toThrow('GPA 0x10000000000 + 4 KiB exceeds MAXPHYADDR (40 bits)');
  });

  it('rejects negative, oversized and non-bigint addresses with RangeError and TypeError', () => {
    const { pt } = setup();
    expect(() => pt.map(-0x1000n, 0n)).toThrow(RangeError);
    expect(() => pt.map(0n, 1n << 64n)).toThrow(RangeError);
    expect(() => pt.map(0x1000 as unknown as bigint, 0n)).toThrow(TypeError);
    expect(() => pt.map(0n, 0n, 8192n as PageSize)).toThrow(RangeError);
    expect(() => pt.walk(-1n)).toThrow(RangeError);
    expect(() => pt.walk(1 as unknown as bigint)).toThrow(TypeError);
    expect(() => pt.unmap(1n << 64n)).toThrow(RangeError);
  });

  it('maps the top of the upper half', () => {
    const { pt } = setup();
    pt.map(0xffff_ffff_ffff_f000n, 0x5000n);
    expect(pt.translate(0xffff_ffff_ffff_ffffn)).toBe(0x5fffn);
  });
});

describe('PageTables.unmap', () => {
  it('throws NOT_MAPPED for a GVA with no mapping', () => {
    const { pt } = setup();
    expect(() => pt.unmap(0x40_0000n)).toThrow('GVA 0x400000 is not mapped (level-4 entry not present)');
  });

  it('requires the base of a huge page', () => {
    const { pt } = setup();
    pt.map(0x20_0000n, 0n, M2);
    expect(errorOf(() => pt.unmap(0x20_1000n)).code).toBe('UNALIGNED');
    expect(pt.unmap(0x20_0000n)).toEqual({ gpa: 0n, pageSize: M2 });
    expect(pt.translate(0x20_1000n)).toBeUndefined();
  });
});

describe('walk faults', () => {
  it('report not-present with the access bits in the error code', () => {
    const { pt } = setup();
    const r = pt.walk(0x1000n, { write: true, user: true });
    expect(r).toEqual({
      ok: false,
      fault: { level: 4, reason: 'not-present', errorCode: 2 | 4, gva: 0x1000n },
    });
    pt.map(0n, 0n, M2);
    pt.unmap(0n);
    pt.map(0x20_0000n, 0n);
    expect(pt.walk(0x1000n, { fetch: true })).toMatchObject({
      ok: false,
      fault: { level: 2, errorCode: 16 },
    });
  });

  it('report protection faults for writes to read-only, user access to supervisor and fetches from NX pages', () => {
    const { pt } = setup();
    pt.map(0x1000n, 0x1000n, K4, { writable: false });
    pt.map(0x2000n, 0x2000n, K4, { user: false });
    pt.map(0x3000n, 0x3000n, K4, { nx: true, user: true });
    expect(pt.walk(0x1000n, { write: true })).toMatchObject({
      ok: false,
      fault: { level: 1, reason: 'protection', errorCode: 1 | 2 },
    });
    expect(pt.walk(0x2000n, { user: true })).toMatchObject({ ok: false, fault: { errorCode: 1 | 4 } });
    expect(pt.walk(0x3000n, { fetch: true, user: true })).toMatchObject({
      ok: false,
      fault: { errorCode: 1 | 4 | 16 },
    });
    expect(pt.walk(0x3000n, { user: true, write: true }).ok).toBe(true);
    expect(pt.walk(0x1000n).ok).toBe(true);
  });

  it('AND the writable and user bits of every level', () => {
    const { memory, pt } = setup();
    pt.map(0x1000n, 0x1000n, K4, { user: true });
    // Clear W in the PML4 entry.
    memory.writeU64(pt.root, memory.readU64(pt.root) & ~PTE.WRITABLE);
    const r = pt.walk(0x1000n);
    expect(r).toMatchObject({ ok: true, writable: false, user: true });
    expect(pt.walk(0x1000n, { write: true })).toMatchObject({
      ok: false,
      fault: { level: 1, reason: 'protection' },
    });
  });

  it('report a non-canonical GVA (a #GP on a CPU) without reading memory', () => {
    const { pt } = setup({ levels: 5 });
    expect(pt.walk(0x0100_0000_0000_0000n)).toEqual({
      ok: false,
      fault: { level: 5, reason: 'non-canonical', errorCode: 0, gva: 0x0100_0000_0000_0000n },
    });
    expect(pt.walk(0x00ff_ffff_ffff_f000n).ok).toBe(false);
  });

  it('report reserved address bits above physBits with RSVD in the error code', () => {
    const { memory, pt } = setup({ levels: 4, physBits: 46 });
    pt.map(0x1000n, 0x1000n);
    const r = pt.walk(0x1000n, { withPtes: true });
    if (!r.ok) throw new Error('walk failed');
    const pdptAddr = r.ptes[0]! & 0xf_ffff_ffff_f000n;
    memory.writeU64(pdptAddr, r.ptes[1]! | (1n << 50n));
    expect(pt.walk(0x1000n, { write: true })).toMatchObject({
      ok: false,
      fault: { level: 3, reason: 'reserved-bit', errorCode: 1 | 2 | 8 },
    });
  });

  it('report PS in a PML4 entry and low address bits of a 2 MiB leaf as reserved', () => {
    const { memory, pt } = setup();
    pt.map(0x20_0000n, 0x20_0000n, M2);
    memory.writeU64(pt.root, memory.readU64(pt.root) | PTE.PS);
    expect(pt.walk(0x20_0000n)).toMatchObject({ ok: false, fault: { level: 4, reason: 'reserved-bit' } });
    const b = setup();
    b.pt.map(0x20_0000n, 0x20_0000n, M2);
    const w = b.pt.walk(0x20_0000n, { withPtes: true });
    if (!w.ok) throw new Error('walk failed');
    const pdAddr = w.ptes[1]! & 0xf_ffff_ffff_f000n;
    b.memory.writeU64(pdAddr + 8n, w.ptes[2]! | 0x2000n); // bit 13 of a 2 MiB leaf
    expect(b.pt.walk(0x20_0000n)).toMatchObject({ ok: false, fault: { level: 2, reason: 'reserved-bit' } });
  });
});

describe('tag bit', () => {
  it('is set on tagged leaves, stripped from the translated GPA and not treated as reserved', () => {
    const { memory, pt } = setup({ levels: 4, physBits: 48, tagBit: 51 });
    pt.map(0x1000n, 0x7000n, K4, { tagged: true });
    pt.map(0x2000n, 0x8000n);
    const r = pt.walk(0x1008n, { withPtes: true });
    expect(r).toMatchObject({ ok: true, gpa: 0x7008n, tagged: true });
    if (r.ok) expect(r.ptes[3]! & (1n << 51n)).toBe(1n << 51n);
    expect(pt.walk(0x2000n)).toMatchObject({ ok: true, tagged: false });
    // A tag bit on an intermediate entry is stripped too.
    memory.writeU64(pt.root, memory.readU64(pt.root) | (1n << 51n));
    expect(pt.translate(0x1008n)).toBe(0x7008n);
  });

  it('can sit below physBits (a TDX S-bit) and is then not part of the address', () => {
    const { pt } = setup({ levels: 4, physBits: 52, tagBit: 47 });
    pt.map(0x1000n, 0x7000n, K4, { tagged: true });
    expect(pt.walk(0x1000n)).toMatchObject({ ok: true, gpa: 0x7000n, tagged: true });
    expect(() => pt.map(0x2000n, (1n << 47n) | 0x1000n)).toThrow(/has the tag bit 47 set/);
  });

  it('cannot be requested without a tag bit in the paging params', () => {
    const { pt } = setup();
    expect(() => pt.map(0x1000n, 0n, K4, { tagged: true })).toThrow(RangeError);
  });
});

describe('walk()', () => {
  it('gives the same answers through any PhysReader as through PhysicalMemory', () => {
    const { memory, pt } = setup({ levels: 5 });
    pt.map(0x1234_4000_0000n, 0x4000_0000n, G1);
    pt.map(0xff00_0000_0000_0000n, 0x3000n, K4, { nx: true });
    let reads = 0;
    const view: PhysReader = {
      readU64: (gpa) => {
        reads++;
        return memory.readU64(gpa);
      },
    };
    for (const gva of [0x1234_5612_3456n, 0x1234_4000_0000n, 0xff00_0000_0000_0fffn, 0x5000n]) {
      expect(walk(view, pt.root, gva, pt.params)).toEqual(pt.walk(gva));
      expect(walk(memory, pt.root, gva, { levels: 5 })).toEqual(pt.walk(gva));
    }
    expect(reads).toBeGreaterThan(0);
  });

  it('validates the root and the paging params', () => {
    const { memory } = setup();
    expect(() => walk(memory, 0x1001n, 0n, { levels: 4 })).toThrow(
      /page-table root 0x1001 must be a 4 KiB aligned GPA/,
    );
    expect(() => walk(memory, 0n, 0n, { levels: 3 as 4 })).toThrow(RangeError);
    expect(() => walk(memory, 0n, 0n, { levels: 4, physBits: 60 })).toThrow(RangeError);
  });

  it('throws UNBACKED when a table lies outside guest memory', () => {
    const { memory } = setup();
    expect(() => walk(memory, 0x4000_0000n, 0n, { levels: 4 })).toThrow(/not backed by any memslot/);
  });
});

describe('PageTables.tablePages', () => {
  it('lists the root and every table page a mapping added, and forgets those an undo freed', () => {
    const { pt } = setup();
    expect(pt.tablePages()).toEqual([pt.root]);
    pt.map(0x40_0000n, 0x20_0000n, K4);
    const afterFirst = pt.tablePages();
    expect(afterFirst).toHaveLength(4); // PML4, PDPT, PD, PT
    const freed: bigint[] = [];
    expect(() =>
      pt.withUndo(
        () => {
          pt.map(0x8000_0000_0000n - 0x1000n, 0x20_1000n, K4); // new PDPT, PD, PT
          throw new Error('later step failed');
        },
        (p) => freed.push(p),
      ),
    ).toThrow('later step failed');
    expect(freed).toHaveLength(3);
    expect(pt.tablePages()).toEqual(afterFirst);
  });
});
