import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuestMemoryError } from './errors.js';
import { PhysicalMemory } from './physical.js';

const MiB = 0x10_0000n;

function twoSlots(): PhysicalMemory {
  const mem = new PhysicalMemory();
  mem.addRegion({ slot: 0, gpa: 0n, size: 2n * MiB });
  mem.addRegion({ slot: 1, gpa: 2n * MiB, size: MiB }); // adjacent to slot 0
  mem.addRegion({ slot: 2, gpa: 0x1_0000_0000n, size: MiB }); // with a hole below it
  return mem;
}

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    if (e instanceof GuestMemoryError) return e.code;
    throw e;
  }
  return undefined;
}

describe('PhysicalMemory.addRegion', () => {
  it('keeps regions sorted by GPA whatever the insertion order', () => {
    const mem = new PhysicalMemory();
    mem.addRegion({ slot: 5, gpa: 0x10_0000n, size: 0x1000n });
    mem.addRegion({ slot: 3, gpa: 0n, size: 0x1000n });
    mem.addRegion({ slot: 4, gpa: 0x8000n, size: 0x1000n });
    expect(mem.regions().map((r) => r.slot)).toEqual([3, 4, 5]);
    expect(mem.getRegion(4)?.gpa).toBe(0x8000n);
  });

  it('gives a region lazily zeroed backing of its size by default', () => {
    const r = new PhysicalMemory().addRegion({ slot: 0, gpa: 0x1000n, size: 0x3000n });
    expect(r.backing.length).toBe(0x3000);
    expect(r.end).toBe(0x4000n);
    expect(r.pages).toBe(3);
    expect(r.backing.every((b) => b === 0)).toBe(true);
  });

  it('uses a supplied backing of exactly the region size', () => {
    const backing = new Uint8Array(0x1000).fill(7);
    const mem = new PhysicalMemory();
    mem.addRegion({ slot: 0, gpa: 0n, size: 0x1000n, backing });
    expect(mem.readU8(0x10n)).toBe(7);
  });

  it('rejects a backing of the wrong size with BAD_BACKING naming both sizes', () => {
    const mem = new PhysicalMemory();
    expect(() => mem.addRegion({ slot: 0, gpa: 0n, size: 0x2000n, backing: new Uint8Array(0x1000) })).toThrow(
      /backing has 4096 bytes but the region size is 0x2000/,
    );
  });

  it('rejects an overlapping region with OVERLAP naming both regions, and adds nothing', () => {
    const mem = twoSlots();
    expect(() => mem.addRegion({ slot: 9, gpa: 0x1f_f000n, size: 0x2000n })).toThrow(
      /memslot 9 \[0x1ff000–0x200fff\] overlaps memslot 0 \[0x0–0x1fffff\]/,
    );
    expect(mem.regions().length).toBe(3);
    expect(mem.getRegion(9)).toBeUndefined();
  });

  it('rejects unaligned GPAs and sizes, zero sizes, reused slot ids and ranges past 2^64', () => {
    const mem = twoSlots();
    expect(codeOf(() => mem.addRegion({ slot: 9, gpa: 0x1234_0010n, size: 0x1000n }))).toBe('UNALIGNED');
    expect(() => mem.addRegion({ slot: 9, gpa: 0x1234_0010n, size: 0x1000n })).toThrow(
      /GPA 0x12340010 is not aligned to the 4 KiB page size/,
    );
    expect(codeOf(() => mem.addRegion({ slot: 9, gpa: 0x2000_0000n, size: 0x1800n }))).toBe('UNALIGNED');
    expect(codeOf(() => mem.addRegion({ slot: 9, gpa: 0x2000_0000n, size: 0n }))).toBe('ZERO_SIZE');
    expect(codeOf(() => mem.addRegion({ slot: 1, gpa: 0x2000_0000n, size: 0x1000n }))).toBe('SLOT_IN_USE');
    expect(codeOf(() => mem.addRegion({ slot: 9, gpa: 0xffff_ffff_ffff_f000n, size: 0x2000n }))).toBe(
      'BAD_ADDRESS',
    );
    expect(mem.regions().length).toBe(3);
  });

  it('accepts a region that ends exactly at 2^64', () => {
    const mem = new PhysicalMemory();
    const r = mem.addRegion({ slot: 0, gpa: 0xffff_ffff_ffff_f000n, size: 0x1000n });
    mem.writeU64(0xffff_ffff_ffff_fff8n, 0xabn);
    expect(mem.readU64(0xffff_ffff_ffff_fff8n)).toBe(0xabn);
    expect(r.end).toBe(1n << 64n);
  });

  it('rejects non-bigint GPAs with a TypeError and negative ones with a RangeError', () => {
    const mem = new PhysicalMemory();
    expect(() => mem.addRegion({ slot: 0, gpa: 0 as unknown as bigint, size: 0x1000n })).toThrow(TypeError);
    expect(() => mem.addRegion({ slot: 0, gpa: -0x1000n, size: 0x1000n })).toThrow(RangeError);
    expect(() => mem.addRegion({ slot: -1, gpa: 0n, size: 0x1000n })).toThrow(RangeError);
  });
});

describe('PhysicalMemory.removeRegion', () => {
  it('removes a region so its GPAs become unbacked', () => {
    const mem = twoSlots();
    mem.readU64(2n * MiB); // warm the last-hit cache with the region about to go
    expect(mem.removeRegion(1).slot).toBe(1);
    expect(mem.findRegion(2n * MiB)).toBeUndefined();
    expect(() => mem.readU64(2n * MiB)).toThrow(GuestMemoryError);
  });

  it('throws NO_SUCH_SLOT for an unknown slot', () => {
    expect(codeOf(() => twoSlots().removeRegion(7))).toBe('NO_SUCH_SLOT');
  });
});

describe('PhysicalMemory.findRegion', () => {
  it('returns the region holding a GPA and undefined in holes', () => {
    const mem = twoSlots();
    expect(mem.findRegion(0x1f_ffffn)?.slot).toBe(0);
    expect(mem.findRegion(2n * MiB)?.slot).toBe(1);
    expect(mem.findRegion(0x1_0000_0fffn)?.slot).toBe(2);
    expect(mem.findRegion(3n * MiB)).toBeUndefined();
    expect(mem.findRegion(0x1_0010_0000n)).toBeUndefined();
  });

  it('agrees with a linear scan for random GPAs', () => {
    const mem = twoSlots();
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 0x1_0020_0000n }), (gpa) => {
        const linear = mem.regions().find((r) => r.contains(gpa));
        expect(mem.findRegion(gpa)).toBe(linear);
      }),
      { numRuns: 300 },
    );
  });
});

describe('PhysicalMemory accessors', () => {
  it('store little-endian values', () => {
    const mem = twoSlots();
    mem.writeU64(0x100n, 0x0807_0605_0403_0201n);
    expect([...mem.read(0x100n, 8)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(mem.readU8(0x100n)).toBe(1);
    expect(mem.readU16(0x100n)).toBe(0x0201);
    expect(mem.readU32(0x100n)).toBe(0x0403_0201);
    mem.writeU32(0x200n, 0xdead_beef);
    mem.writeU16(0x204n, 0xcafe);
    mem.writeU8(0x206n, 0x7f);
    expect(mem.readU64(0x200n)).toBe(0x007f_cafe_dead_beefn);
  });

  it('read and write a word that straddles two adjacent regions', () => {
    const mem = twoSlots();
    const gpa = 2n * MiB - 3n;
    mem.writeU64(gpa, 0x1122_3344_5566_7788n);
    expect(mem.readU64(gpa)).toBe(0x1122_3344_5566_7788n);
    expect(mem.getRegion(1)!.backing[4]).toBe(0x11);
    mem.writeU32(gpa, 0xaabb_ccdd);
    expect(mem.readU32(gpa)).toBe(0xaabb_ccdd);
    mem.writeU16(2n * MiB - 1n, 0x1234);
    expect(mem.readU16(2n * MiB - 1n)).toBe(0x1234);
  });

  it('throw UNBACKED naming the GPA and the memslot ranges for an unbacked address', () => {
    const mem = twoSlots();
    expect(() => mem.readU64(0x1234_5000n)).toThrow(
      'GPA 0x12345000 is not backed by any memslot (slots: 0x0–0x1fffff, 0x200000–0x2fffff, 0x100000000–0x1000fffff)',
    );
    expect(codeOf(() => mem.readU8(3n * MiB))).toBe('UNBACKED');
  });

  it('write nothing when part of a word is unbacked', () => {
    const mem = twoSlots();
    const before = mem.read(3n * MiB - 4n, 4);
    expect(codeOf(() => mem.writeU64(3n * MiB - 4n, U64_ALL))).toBe('UNBACKED');
    expect(mem.read(3n * MiB - 4n, 4)).toEqual(before);
  });

  it('range-check values and reject non-bigint GPAs', () => {
    const mem = twoSlots();
    expect(() => mem.writeU8(0n, 256)).toThrow(/u8 value 256 must be an integer in 0–0xff/);
    expect(() => mem.writeU16(0n, -1)).toThrow(RangeError);
    expect(() => mem.writeU32(0n, 1.5)).toThrow(RangeError);
    expect(() => mem.writeU64(0n, 1n << 64n)).toThrow(
      /u64 value 0x10000000000000000 is outside the u64 range/,
    );
    expect(() => mem.writeU64(0n, 5 as unknown as bigint)).toThrow(TypeError);
    expect(() => mem.readU64(16 as unknown as bigint)).toThrow(TypeError);
    expect(() => mem.readU64(-8n)).toThrow(RangeError);
    expect(mem.readU64(0n)).toBe(0n);
  });
});

const U64_ALL = (1n << 64n) - 1n;

describe('PhysicalMemory.read and write', () => {
  // Slots 0 and 1 are adjacent: [0, 3 MiB) behaves like one flat buffer.
  const FLAT = 3 * 0x10_0000;

  it('behave like a flat buffer across adjacent regions (property)', () => {
    const mem = twoSlots();
    const flat = new Uint8Array(FLAT);
    const op = fc.record({
      gpa: fc.integer({ min: 0, max: FLAT - 1 }),
      data: fc.uint8Array({ minLength: 0, maxLength: 64 }),
      write: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
        for (const { gpa, data, write } of ops) {
          // Bias half the accesses onto the boundary between slot 0 and slot 1.
          const at = write && gpa % 2 === 0 ? 0x20_0000 - (gpa % 48) : gpa;
          const fits = at + data.length <= FLAT;
          if (write) {
            if (fits) {
              mem.write(BigInt(at), data);
              flat.set(data, at);
            } else expect(codeOf(() => mem.write(BigInt(at), data))).toBe('UNBACKED');
          } else if (fits)
            expect(
              Buffer.from(mem.read(BigInt(at), data.length)).equals(flat.subarray(at, at + data.length)),
            ).toBe(true);
          else expect(codeOf(() => mem.read(BigInt(at), data.length))).toBe('UNBACKED');
        }
        expect(Buffer.from(mem.read(0n, FLAT)).equals(flat)).toBe(true);
      }),
      { numRuns: 60 },
    );
  });

  it('write nothing when a byte in the middle of the range is unbacked', () => {
    const mem = twoSlots();
    const data = new Uint8Array(0x2000).fill(0xee);
    const at = 3n * MiB - 0x1000n;
    expect(() => mem.write(at, data)).toThrow(
      /GPA 0x300000 is not backed by any memslot .*\(write of 8192 bytes at GPA 0x2ff000\)/,
    );
    expect(mem.read(at, 0x1000).every((b) => b === 0)).toBe(true);
  });

  it('return a copy, not a view of the backing', () => {
    const mem = twoSlots();
    const bytes = mem.read(0n, 4);
    bytes[0] = 9;
    expect(mem.readU8(0n)).toBe(0);
  });

  it('reject a negative or fractional length with a RangeError', () => {
    const mem = twoSlots();
    expect(() => mem.read(0n, -1)).toThrow(RangeError);
    expect(() => mem.read(0n, 1.5)).toThrow(RangeError);
  });
});

describe('Region page bitmaps', () => {
  it('report every page free and unprotected initially, and reject out-of-range indexes', () => {
    const r = new PhysicalMemory().addRegion({ slot: 0, gpa: 0n, size: 0x4000n });
    expect(r.isPageFree(3)).toBe(true);
    expect(r.isPageProtected(0)).toBe(false);
    expect(() => r.isPageFree(4)).toThrow(RangeError);
  });
});

describe('regions above 2^53', () => {
  it('read and write every width exactly, where GPAs are not exact as numbers', () => {
    const mem = new PhysicalMemory();
    const base = 0x40_0000_0000_0000n; // 2^54
    mem.addRegion({ slot: 0, gpa: base, size: 0x2000n });
    mem.addRegion({ slot: 1, gpa: base + 0x2000n, size: 0x1000n });
    mem.writeU64(base + 0x1ffdn, 0x0102_0304_0506_0708n);
    expect(mem.readU64(base + 0x1ffdn)).toBe(0x0102_0304_0506_0708n);
    mem.writeU32(base + 1n, 0xdead_beef);
    mem.writeU16(base + 5n, 0xcafe);
    mem.writeU8(base + 7n, 0x42);
    expect(mem.readU64(base)).toBe(0x42ca_fede_adbe_ef00n);
    expect(mem.readU8(base + 1n)).toBe(0xef);
    expect(mem.readU16(base + 5n)).toBe(0xcafe);
    expect(mem.readU32(base + 1n)).toBe(0xdead_beef);
    expect(mem.findRegion(base + 0x2fffn)?.slot).toBe(1);
    expect(() => mem.readU64(base + 0x2ffcn)).toThrow(/GPA 0x40000000003000 is not backed/);
  });
});
