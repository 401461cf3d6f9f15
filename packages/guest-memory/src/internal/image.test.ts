import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AddressSpace } from './address-space.js';
import { GuestMemoryError } from './errors.js';
import { GuestImage, loadImage } from './image.js';
import { PhysicalMemory } from './physical.js';

function space(): AddressSpace {
  const memory = new PhysicalMemory();
  memory.addRegion({ slot: 0, gpa: 0n, size: 0x400_0000n });
  return new AddressSpace({ memory });
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

const le64 = (v: bigint) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
};

describe('GuestImage', () => {
  it('lays globals out 8-byte aligned in declaration order', () => {
    const img = new GuestImage('t', [
      { name: 'a', size: 1 },
      { name: 'b', size: 8 },
      { name: 'c', size: 13 },
      { name: 'd', size: 4 },
    ]);
    expect([...img.offsets]).toEqual([
      ['a', 0],
      ['b', 8],
      ['c', 16],
      ['d', 32],
    ]);
    expect(img.size).toBe(40);
  });

  it('rejects duplicate names, non-positive sizes and init bytes longer than the global', () => {
    expect(
      () =>
        new GuestImage('t', [
          { name: 'x', size: 8 },
          { name: 'x', size: 8 },
        ]),
    ).toThrow('image t: global x is declared twice (names must be unique)');
    expect(errorOf(() => new GuestImage('t', [{ name: 'x', size: 0 }])).code).toBe('BAD_GLOBAL');
    expect(() => new GuestImage('t', [{ name: 'x', size: 2, init: new Uint8Array(3) }])).toThrow(
      'image t: global x has 3 init bytes but size 2 (init must fit)',
    );
    expect(() => new GuestImage('t', [{ name: 'x', size: '8' as unknown as number }])).toThrow(TypeError);
  });

  it('keeps its own copy of init bytes', () => {
    const init = new Uint8Array([1, 2]);
    const img = new GuestImage('t', [{ name: 'x', size: 2, init }]);
    init[0] = 9;
    expect(img.globals[0]!.init![0]).toBe(1);
  });
});

describe('loadImage', () => {
  it('places globals where the symbol table says, with their init bytes and zeros elsewhere', () => {
    const s = space();
    const img = new GuestImage('guest', [
      { name: 'expected', size: 8, init: le64(42n) },
      { name: 'buf', size: 5000 },
      { name: 'flag', size: 1, init: new Uint8Array([1]) },
    ]);
    const li = loadImage(s, img);
    for (const sym of li.symbols.values()) {
      expect(s.gvaToGpa(sym.gva)).toBe(sym.gpa);
      expect(sym.gva % 8n).toBe(0n);
    }
    expect(li.readGlobalU64('expected')).toBe(42n);
    expect(s.memory.readU64(s.gvaToGpa(li.globalGva('expected')))).toBe(42n);
    expect(li.readGlobal('buf').every((b) => b === 0)).toBe(true);
    expect(li.readGlobal('flag')).toEqual(new Uint8Array([1]));
  });

  it('gives each address space an independent copy', () => {
    const img = new GuestImage('guest', [{ name: 'ucall_pool', size: 8 }]);
    const a = loadImage(space(), img);
    const b = loadImage(space(), img);
    a.writeGlobalU64('ucall_pool', 0x1234n);
    expect(a.readGlobalU64('ucall_pool')).toBe(0x1234n);
    expect(b.readGlobalU64('ucall_pool')).toBe(0n);
  });

  it('writes only this copy of a global and checks the size', () => {
    const s = space();
    const li = loadImage(
      s,
      new GuestImage('g', [
        { name: 'a', size: 4 },
        { name: 'b', size: 4 },
      ]),
    );
    li.writeGlobal('a', new Uint8Array([1, 2, 3, 4]));
    expect(li.readGlobal('b')).toEqual(new Uint8Array(4));
    expect(errorOf(() => li.writeGlobal('a', new Uint8Array(5))).code).toBe('SIZE_MISMATCH');
    expect(() => li.readGlobalU64('a')).toThrow('global a has 4 bytes, too small for a u64 (8 bytes)');
    expect(() => li.writeGlobalU64('b', -1n)).toThrow(RangeError);
  });

  it('throws UNKNOWN_GLOBAL naming the known globals', () => {
    const li = loadImage(
      space(),
      new GuestImage('guest', [
        { name: 'a', size: 8 },
        { name: 'b', size: 8 },
      ]),
    );
    const e = errorOf(() => li.symbol('c'));
    expect(e.code).toBe('UNKNOWN_GLOBAL');
    expect(e.message).toBe('image guest has no global "c" (globals: a, b)');
    expect(() => li.globalGva('c')).toThrow(GuestMemoryError);
  });

  it('loads shared images into shared pages and private ones into protected pages', () => {
    const memory = new PhysicalMemory();
    memory.addRegion({ slot: 0, gpa: 0n, size: 0x400_0000n });
    const s = new AddressSpace({ memory, protectedByDefault: true, tag: { bit: 51, setWhen: 'private' } });
    const img = new GuestImage('g', [{ name: 'x', size: 8 }]);
    expect(s.isPrivate(loadImage(s, img).symbol('x').gpa)).toBe(true);
    expect(s.isPrivate(loadImage(s, img, { visibility: 'shared' }).symbol('x').gpa)).toBe(false);
  });

  it('puts random globals at disjoint addresses holding their init bytes (property)', () => {
    const global = fc.record({
      size: fc.integer({ min: 1, max: 6000 }),
      init: fc.uint8Array({ maxLength: 16 }),
    });
    fc.assert(
      fc.property(fc.array(global, { minLength: 1, maxLength: 12 }), (gs) => {
        const s = space();
        const globals = gs.map((g, i) => ({
          name: `g${i}`,
          size: g.size,
          init: g.init.slice(0, g.size),
        }));
        const li = loadImage(s, new GuestImage('p', globals));
        let prevEnd = -1n;
        for (const g of globals) {
          const sym = li.symbol(g.name);
          expect(sym.size).toBe(g.size);
          expect(sym.gva > prevEnd).toBe(true);
          prevEnd = sym.gva + BigInt(sym.size) - 1n;
          // Read through the page tables, byte by byte for the init prefix.
          for (let i = 0; i < g.init.length; i++)
            expect(s.memory.readU8(s.gvaToGpa(sym.gva + BigInt(i)))).toBe(g.init[i]);
          expect(
            li
              .readGlobal(g.name)
              .subarray(g.init.length)
              .every((b) => b === 0),
          ).toBe(true);
        }
      }),
      { numRuns: 40 },
    );
  });
});
