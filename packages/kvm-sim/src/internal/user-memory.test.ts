import { MEM_FLAG } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { createSimKvm } from '../index.js';

describe('allocateUserMemory (sim)', () => {
  it('answers the API version 12 and hands out zeroed, page-sized memory', () => {
    const kvm = createSimKvm();
    expect(kvm.getApiVersion()).toBe(12);
    const m = kvm.allocateUserMemory(8192);
    expect(m.bytes.length).toBe(8192);
    expect(m.bytes.every((b) => b === 0)).toBe(true);
  });

  it('rejects sizes that are not positive multiples of 4096 with EINVAL', () => {
    const kvm = createSimKvm();
    for (const s of [0, -4096, 100, 4097, 1.5]) expect(() => kvm.allocateUserMemory(s)).toThrow(/EINVAL/);
  });

  it('recycles released memory, zeroed, but never memory a live VM still maps', () => {
    const kvm = createSimKvm();
    const vm = kvm.createVm();
    const a = kvm.allocateUserMemory(4096);
    a.bytes[0] = 0xaa;
    vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 4096n, userspace: a.bytes });
    a.release();
    a.release();
    const b = kvm.allocateUserMemory(4096);
    expect(b.bytes.buffer).not.toBe(a.bytes.buffer);
    vm.close();
    const c = kvm.allocateUserMemory(4096);
    expect(c.bytes.buffer).toBe(a.bytes.buffer);
    expect(c.bytes[0]).toBe(0);
    // Read-only slots and subarrays count as mapping the buffer too.
    const vm2 = kvm.createVm();
    vm2.setUserMemoryRegion({
      slot: 1,
      flags: MEM_FLAG.READONLY,
      guestPhysAddr: 0x10000n,
      memorySize: 4096n,
      userspace: c.bytes.subarray(0, 4096),
    });
    c.release();
    expect(kvm.allocateUserMemory(4096).bytes.buffer).not.toBe(c.bytes.buffer);
  });
});
