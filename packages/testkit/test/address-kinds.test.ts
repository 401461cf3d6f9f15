// The kit's address helpers say which kind of address they take and give (Gpa, Gva from
// @kvmtest/guest-memory, re-exported here). The `@ts-expect-error` lines fail the package's
// typecheck if passing one kind where another is expected ever stops being a type error.
import { describe, expect, expectTypeOf, test } from 'vitest';
import {
  addrGpa2Hva,
  addrGva2Gpa,
  addrGva2Hva,
  DEFAULT_GUEST_STACK_VADDR_MIN,
  type Gpa,
  type Gva,
  gpa,
  gva,
  vmCreate,
  vmMemAdd,
  vmVaddrAlloc,
  vmVaddrAllocShared,
} from '../src/index.js';

describe('address kinds', () => {
  test('allocations are GVAs, translations GPAs, and both lead to the same host bytes', () => {
    using vm = vmCreate('default');
    const v = vmVaddrAlloc(vm, 4096);
    expectTypeOf(v).toEqualTypeOf<Gva>();
    expectTypeOf(vmVaddrAllocShared(vm, 4096)).toEqualTypeOf<Gva>();
    const p = addrGva2Gpa(vm, v);
    expectTypeOf(p).toEqualTypeOf<Gpa>();
    expectTypeOf(DEFAULT_GUEST_STACK_VADDR_MIN).toEqualTypeOf<Gva>();
    const byGva = addrGva2Hva(vm, v);
    const byGpa = addrGpa2Hva(vm, p);
    expect(byGva.buffer).toBe(byGpa.buffer);
    expect(byGva.offset).toBe(byGpa.offset);
    // An address computed by hand is named with a constructor (no cost: the identity at runtime).
    expect(addrGpa2Hva(vm, gpa(p + 8n)).offset).toBe(byGpa.offset + 8);
    expect(addrGva2Gpa(vm, gva(v + 8n))).toBe(p + 8n);
  });

  test('a GVA where the kit wants a GPA, or the reverse, does not compile', () => {
    using vm = vmCreate('default');
    const v = vmVaddrAlloc(vm, 4096, { minGva: 0x10_0000n });
    const p = addrGva2Gpa(vm, v);
    expect(v).not.toBe(p);
    // @ts-expect-error a GVA is not a GPA: the host pointer would be the wrong bytes
    expect(() => addrGpa2Hva(vm, v).offset).not.toThrow();
    // @ts-expect-error a GPA is not a GVA to translate
    expect(() => addrGva2Gpa(vm, p)).toBeTypeOf('function');
    // @ts-expect-error a memslot is placed at a GPA, not at a GVA
    expect(() => vmMemAdd(vm, { slot: 1, gpa: v, pages: 1 })).toThrow();
  });
});
