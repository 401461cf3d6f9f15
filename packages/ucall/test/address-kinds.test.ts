// ucall's addresses carry their kind: the pool and its slots have a GPA and a GVA, a decoded slot
// and the failure value are GPAs. The `@ts-expect-error` lines fail the package's typecheck if a
// mix of kinds ever stops being a type error.
import type { Gpa, Gva } from '@kvmtest/guest-memory';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { type DecodedSlot, guestGhcb, UCALL_FAILED_GPA, type Ucall, ucallInit } from '../src/index.js';
import { createFakeVm } from './support/fake-kvm.js';

describe('address kinds', () => {
  it('a pool names its slots by GPA (what the guest sends) and by GVA (what the guest writes)', () => {
    const f = createFakeVm();
    const pool = ucallInit(f.target);
    const slotGpa = pool.slotGpa(1);
    const slotGva = pool.slotGva(1);
    expectTypeOf(slotGpa).toEqualTypeOf<Gpa>();
    expectTypeOf(slotGva).toEqualTypeOf<Gva>();
    expectTypeOf(pool.gpa).toEqualTypeOf<Gpa>();
    expectTypeOf(pool.gva).toEqualTypeOf<Gva>();
    expect(pool.slotIndexOf(slotGpa)).toBe(1);
    expect(f.target.space.gvaToGpa(slotGva)).toBe(slotGpa);
    // @ts-expect-error a slot's GVA is not the GPA a guest sends
    const byGva = pool.slotIndexOf(slotGva);
    expect(byGva === undefined || byGva === 1).toBe(true);
    // @ts-expect-error a slot's GPA is not a GVA to translate
    expect(() => f.target.space.gvaToGpa((pool.endGpa + 0x1_0000_0000n) as Gpa)).toThrow(/not mapped/);
  });

  it('decoded slots, the failure value and GHCB pages carry GPAs', () => {
    expectTypeOf<DecodedSlot['gpa']>().toEqualTypeOf<Gpa>();
    expectTypeOf<Ucall['gpa']>().toEqualTypeOf<Gpa>();
    expectTypeOf(UCALL_FAILED_GPA).toEqualTypeOf<Gpa>();
    expectTypeOf(guestGhcb).returns.toEqualTypeOf<{ gva: Gva; gpa: Gpa } | undefined>();
    expect(UCALL_FAILED_GPA).toBe(0xffff_ffffn);
  });
});
