// The address kinds are checked by the compiler: the `@ts-expect-error` lines below fail
// `tsc --noEmit` (the package's typecheck) if a mix of kinds ever stops being a type error.
import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  AddressSpace,
  type Gpa,
  type Gva,
  gpa,
  gva,
  type HostOffset,
  hostOffset,
  PhysicalMemory,
} from '../index.js';

function space(): AddressSpace {
  const memory = new PhysicalMemory();
  memory.addRegion({ slot: 0, gpa: 0n, size: 0x40_0000n });
  return new AddressSpace({ memory });
}

describe('address kinds', () => {
  it('constructors are the identity at runtime', () => {
    const big = 0xffff_ffff_ffff_f000n;
    expect(gpa(big)).toBe(big);
    expect(gva(big)).toBe(big);
    expect(hostOffset(4096)).toBe(4096);
    expect(typeof gpa(1n)).toBe('bigint');
    expect(typeof hostOffset(1)).toBe('number');
  });

  it('plain literals and arithmetic results fit every kind', () => {
    const s = space();
    const p: Gpa = 0x1000n;
    const v: Gva = s.vaddrAlloc(0x1000n);
    s.memory.writeU64(s.gvaToGpa(v) + 8n, 7n);
    expect(s.memory.readU64(p + 0x1008n)).toBe(7n);
    expectTypeOf(v + 8n).toEqualTypeOf<bigint>();
    expectTypeOf<bigint>().toExtend<Gpa>();
    expectTypeOf<bigint>().toExtend<Gva>();
    expectTypeOf<number>().toExtend<HostOffset>();
    expectTypeOf<Gpa>().toExtend<bigint>();
  });

  it('public APIs return branded addresses', () => {
    const s = space();
    const v = s.vaddrAlloc(0x1000n);
    expectTypeOf(v).toEqualTypeOf<Gva>();
    expectTypeOf(s.gvaToGpa(v)).toEqualTypeOf<Gpa>();
    expectTypeOf(s.allocPageTable()).toEqualTypeOf<Gpa>();
    expectTypeOf(s.pageTables.translate(v)).toEqualTypeOf<Gpa | undefined>();
    expectTypeOf(s.memory.getRegion(0)!.offsetOf(0n)).toEqualTypeOf<HostOffset>();
    const r = s.pageTables.walk(v);
    if (r.ok) expectTypeOf(r.gpa).toEqualTypeOf<Gpa>();
    expect(r.ok).toBe(true);
  });

  it('a GVA where a GPA is expected (and the reverse) is a type error', () => {
    const s = space();
    const v = s.vaddrAlloc(0x1000n);
    const p = s.gvaToGpa(v);
    expectTypeOf<Gva>().not.toExtend<Gpa>();
    expectTypeOf<Gpa>().not.toExtend<Gva>();
    expectTypeOf<Gpa>().not.toExtend<HostOffset>();
    expectTypeOf<HostOffset>().not.toExtend<Gpa>();
    // Each line below runs (the values are plain bigints at runtime) but does not compile.
    // @ts-expect-error a Gva is not a Gpa
    expect(s.memory.readU64(v)).toBe(0n);
    // @ts-expect-error a Gpa is not a Gva
    expect(s.gvaToGpa(p)).toBeTypeOf('bigint');
    // @ts-expect-error map(gva, gpa): the arguments swapped
    expect(() => s.pageTables.map(p, v)).toThrow();
    // @ts-expect-error a symbol's GVA is not a memslot GPA
    expect(() => s.memory.addRegion({ slot: 1, gpa: v, size: 0x1000n })).toThrow();
  });
});
