// The contract names its address kinds: guest accessors take GVAs, MMIO and exits carry GPAs,
// memslots and memory attributes take GPAs. The `@ts-expect-error` lines fail the package's
// typecheck if a mix of kinds ever stops being a type error.
import * as guestMemory from '@kvmtest/guest-memory';
import { describe, expect, expectTypeOf, test } from 'vitest';
import {
  type Exit,
  type Gpa,
  type Guest,
  type Gva,
  gpa,
  gva,
  type HostOffset,
  hostOffset,
  hostPtr,
  type MemoryAttributes,
  type UserMemoryRegion,
} from './index.js';

describe('address kinds on the contract', () => {
  test('kvm re-exports guest-memory’s kinds and constructors (one brand, not a copy)', () => {
    expect(gpa).toBe(guestMemory.gpa);
    expect(gva).toBe(guestMemory.gva);
    expect(hostOffset).toBe(guestMemory.hostOffset);
    expectTypeOf<Gpa>().toEqualTypeOf<guestMemory.Gpa>();
    expectTypeOf<Gva>().toEqualTypeOf<guestMemory.Gva>();
    expectTypeOf<HostOffset>().toEqualTypeOf<guestMemory.HostOffset>();
  });

  test('exits, memslots and attributes carry GPAs; guest accessors take GVAs', () => {
    expectTypeOf<Extract<Exit, { reason: 'mmio' }>['gpa']>().toEqualTypeOf<Gpa>();
    expectTypeOf<Extract<Exit, { reason: 'memory-fault' }>['gpa']>().toEqualTypeOf<Gpa>();
    expectTypeOf<UserMemoryRegion['guestPhysAddr']>().toEqualTypeOf<Gpa>();
    expectTypeOf<MemoryAttributes['address']>().toEqualTypeOf<Gpa>();
    expectTypeOf<Parameters<Guest['readU64']>[0]>().toEqualTypeOf<Gva>();
    expectTypeOf<Parameters<Guest['mmioWrite']>[0]>().toEqualTypeOf<Gpa>();
    expectTypeOf<ReturnType<Guest['global']>>().toEqualTypeOf<Gva>();
    expect(hostPtr(new Uint8Array(8), hostOffset(4)).offset).toBe(4);
  });

  test('an exit’s GPA cannot be dereferenced as a GVA, nor a global’s GVA used as MMIO', () => {
    const use = (g: Guest, exit: Extract<Exit, { reason: 'mmio' }>): void => {
      // @ts-expect-error an MMIO exit's GPA is not a GVA
      g.readU64(exit.gpa);
      // @ts-expect-error a global's GVA is not a GPA
      void g.mmioWrite(g.global('x'), 8, 0n);
      // A literal or an explicit constructor is always accepted.
      g.readU64(gva(0x1000n));
      void g.mmioWrite(0xfee0_0000n, 4, 0n);
    };
    const region = (at: UserMemoryRegion['guestPhysAddr']): UserMemoryRegion => ({
      slot: 0,
      flags: 0,
      guestPhysAddr: at,
      memorySize: 0n,
      userspace: undefined,
    });
    // @ts-expect-error a GVA is not a memslot's GPA
    expect(region(gva(0x1000n)).guestPhysAddr).toBe(0x1000n);
    expect(typeof use).toBe('function');
  });
});
