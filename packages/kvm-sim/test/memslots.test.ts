import { CAP, MEM_FLAG, MEMORY_ATTRIBUTE, tryKvm, type UserMemoryRegion, type Vm } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { createSimKvm, simStats } from '../src/index.js';

const MiB = 1 << 20;
function region(
  slot: number,
  gpa: bigint,
  size: number,
  flags = 0,
  userspace = new Uint8Array(size),
): UserMemoryRegion {
  return { slot, flags, guestPhysAddr: gpa, memorySize: BigInt(size), userspace };
}
const set = (vm: Vm, r: UserMemoryRegion) => tryKvm(() => vm.setUserMemoryRegion(r));

describe('KVM_SET_USER_MEMORY_REGION2 (kvm_main.c __kvm_set_memory_region)', () => {
  it('creates, moves and deletes a slot', () => {
    const kvm = createSimKvm();
    const vm = kvm.createVm();
    const mem = new Uint8Array(MiB);
    expect(set(vm, region(0, 0n, MiB, 0, mem))).toBeUndefined();
    expect(set(vm, region(0, 0x100000n, MiB, 0, mem))).toBeUndefined(); // move
    expect(simStats(kvm).memslots).toBe(1);
    expect(set(vm, { ...region(0, 0n, 0), userspace: undefined })).toBeUndefined();
    expect(simStats(kvm).memslots).toBe(0);
  });
  it('check_memory_region_flags: READONLY is valid on a default VM, GUEST_MEMFD only with private memory', () => {
    const vm = createSimKvm().createVm();
    expect(set(vm, region(0, 0n, 4096, MEM_FLAG.READONLY))).toBeUndefined();
    expect(set(vm, region(1, 0x1000n, 4096, MEM_FLAG.GUEST_MEMFD))).toBe('EINVAL');
    expect(set(vm, region(1, 0x1000n, 4096, 1 << 5))).toBe('EINVAL');
  });
  it('check_memory_region_flags: GUEST_MEMFD excludes READONLY and dirty logging', () => {
    const vm = createSimKvm().createVm('sw-protected');
    const fd = vm.createGuestMemfd(0x10000n);
    const r = { ...region(0, 0n, 4096, MEM_FLAG.GUEST_MEMFD | MEM_FLAG.READONLY), guestMemfd: fd };
    expect(set(vm, r)).toBe('EINVAL');
    expect(set(vm, { ...r, flags: MEM_FLAG.GUEST_MEMFD | MEM_FLAG.LOG_DIRTY_PAGES })).toBe('EINVAL');
    expect(set(vm, { ...r, flags: MEM_FLAG.GUEST_MEMFD })).toBeUndefined();
  });
  it('rejects a size, GPA or userspace address not aligned to 4 KiB with EINVAL', () => {
    const vm = createSimKvm().createVm();
    expect(set(vm, region(0, 0n, 4096 + 512))).toBe('EINVAL');
    expect(set(vm, region(0, 0x800n, 4096))).toBe('EINVAL');
    const buf = new Uint8Array(8192 + 16);
    expect(set(vm, region(0, 0n, 4096, 0, buf.subarray(16, 16 + 4096)))).toBe('EINVAL');
  });
  it('rejects a slot id at or above KVM_USER_MEM_SLOTS and an address space beyond SMM with EINVAL', () => {
    const vm = createSimKvm().createVm();
    expect(set(vm, region(32764, 0n, 4096))).toBe('EINVAL');
    expect(set(vm, region(32763, 0n, 4096))).toBeUndefined();
    expect(set(vm, region((2 << 16) | 1, 0x10000n, 4096))).toBe('EINVAL');
    expect(set(vm, region((1 << 16) | 1, 0x10000n, 4096))).toBeUndefined(); // SMM address space
  });
  it('honours a configured memslot limit (set_memory_region_test: the slot beyond the max fails)', () => {
    const vm = createSimKvm({ memslotsPerAddressSpace: 4 }).createVm();
    for (let i = 0; i < 4; i++) expect(set(vm, region(i, BigInt(i) * 0x1000n, 4096))).toBeUndefined();
    expect(set(vm, region(4, 0x10000n, 4096))).toBe('EINVAL');
  });
  it('rejects an overlap with another slot of the same address space with EEXIST', () => {
    const vm = createSimKvm().createVm();
    set(vm, region(0, 0x10000n, 0x4000));
    expect(set(vm, region(1, 0x13000n, 0x2000))).toBe('EEXIST');
    expect(set(vm, region(1, 0xf000n, 0x2000))).toBe('EEXIST');
    expect(set(vm, region((1 << 16) | 1, 0x10000n, 0x4000))).toBeUndefined();
    expect(set(vm, region(1, 0x14000n, 0x1000))).toBeUndefined();
  });
  it('rejects deleting a slot that does not exist with EINVAL', () => {
    expect(set(createSimKvm().createVm(), { ...region(3, 0n, 0), userspace: undefined })).toBe('EINVAL');
  });
  it('allows only flag changes and moves on an existing slot (size, userspace or READONLY change -> EINVAL)', () => {
    const vm = createSimKvm().createVm();
    const mem = new Uint8Array(0x2000);
    set(vm, region(0, 0n, 0x2000, 0, mem));
    expect(set(vm, region(0, 0n, 0x1000, 0, mem.subarray(0, 0x1000)))).toBe('EINVAL');
    expect(set(vm, region(0, 0n, 0x2000, 0, new Uint8Array(0x2000)))).toBe('EINVAL');
    expect(set(vm, region(0, 0n, 0x2000, MEM_FLAG.READONLY, mem))).toBe('EINVAL');
    expect(set(vm, region(0, 0n, 0x2000, MEM_FLAG.LOG_DIRTY_PAGES, mem))).toBeUndefined();
    expect(set(vm, region(0, 0n, 0x2000, MEM_FLAG.LOG_DIRTY_PAGES, mem))).toBeUndefined(); // no change
  });
  it('checks a moved slot for overlap (EEXIST) and leaves it in place', () => {
    const vm = createSimKvm().createVm();
    const mem = new Uint8Array(0x1000);
    set(vm, region(0, 0n, 0x1000, 0, mem));
    set(vm, region(1, 0x10000n, 0x1000));
    expect(set(vm, region(0, 0x10000n, 0x1000, 0, mem))).toBe('EEXIST');
    expect(vm.checkExtension(CAP.USER_MEMORY)).toBe(1);
  });
  it('rejects a slot ending beyond MAXPHYADDR (x86 kvm_arch_prepare_memory_region) and a wrapping range', () => {
    const vm = createSimKvm({ cpu: { maxPhysAddr: 40 } }).createVm();
    expect(set(vm, { ...region(0, 1n << 40n, 4096) })).toBe('EINVAL');
    expect(set(vm, { ...region(0, (1n << 40n) - 4096n, 4096) })).toBeUndefined();
    expect(set(vm, { ...region(1, (1n << 64n) - 4096n, 8192), userspace: new Uint8Array(8192) })).toBe(
      'EINVAL',
    );
  });
  it('throws TypeError / RangeError for malformed arguments, before touching the VM', () => {
    const vm = createSimKvm().createVm();
    expect(() => vm.setUserMemoryRegion(null as never)).toThrow(TypeError);
    expect(() => vm.setUserMemoryRegion({ ...region(0, 0n, 4096), guestPhysAddr: 0 as never })).toThrow(
      TypeError,
    );
    expect(() => vm.setUserMemoryRegion({ ...region(0, 0n, 4096), slot: -1 })).toThrow(RangeError);
    expect(() => vm.setUserMemoryRegion({ ...region(0, 0n, 4096), userspace: new Uint8Array(10) })).toThrow(
      RangeError,
    );
  });
});

describe('KVM_CREATE_GUEST_MEMFD and binding (guest_memfd.c kvm_gmem_create / kvm_gmem_bind)', () => {
  it('rejects flags and sizes that are 0 or not page aligned with EINVAL', () => {
    const vm = createSimKvm().createVm('sw-protected');
    expect(tryKvm(() => vm.createGuestMemfd(4096n, 1n))).toBe('EINVAL');
    expect(tryKvm(() => vm.createGuestMemfd(0n))).toBe('EINVAL');
    expect(tryKvm(() => vm.createGuestMemfd(4097n))).toBe('EINVAL');
  });
  it('rejects binding a descriptor that is not a guest_memfd of this VM (set_memory_region_test)', () => {
    const kvm = createSimKvm();
    const vm = kvm.createVm('sw-protected');
    const other = kvm.createVm('sw-protected');
    const foreign = other.createGuestMemfd(0x10000n);
    const r = (fd: number) => ({ ...region(0, 0n, 0x1000, MEM_FLAG.GUEST_MEMFD), guestMemfd: fd });
    expect(set(vm, r(3))).toBe('EINVAL'); // /dev/kvm
    expect(set(vm, r(vm.fd))).toBe('EINVAL');
    expect(set(vm, r(foreign))).toBe('EINVAL');
    expect(set(vm, r(99))).toBe('EBADF');
  });
  it('rejects an unaligned offset or a range beyond the file with EINVAL, and overlapping bindings with EEXIST', () => {
    const vm = createSimKvm().createVm('sw-protected');
    const fd = vm.createGuestMemfd(0x4000n);
    const r = (slot: number, gpa: bigint, off: bigint, size = 0x2000) => ({
      ...region(slot, gpa, size, MEM_FLAG.GUEST_MEMFD),
      guestMemfd: fd,
      guestMemfdOffset: off,
    });
    expect(set(vm, r(0, 0n, 0x800n))).toBe('EINVAL');
    expect(set(vm, r(0, 0n, 0x3000n))).toBe('EINVAL');
    expect(set(vm, r(0, 0n, 0n))).toBeUndefined();
    expect(set(vm, r(1, 0x10000n, 0x1000n))).toBe('EEXIST');
    expect(set(vm, r(1, 0x10000n, 0x2000n))).toBeUndefined();
  });
  it('makes a guest_memfd memslot immutable: only deletion is allowed (EINVAL otherwise)', () => {
    const vm = createSimKvm().createVm('sw-protected');
    const fd = vm.createGuestMemfd(0x4000n);
    const mem = new Uint8Array(0x1000);
    const r = { ...region(0, 0n, 0x1000, MEM_FLAG.GUEST_MEMFD, mem), guestMemfd: fd };
    set(vm, r);
    expect(set(vm, { ...r, guestPhysAddr: 0x1000n })).toBe('EINVAL');
    expect(set(vm, { ...r, memorySize: 0n, userspace: undefined })).toBeUndefined();
    expect(set(vm, r)).toBeUndefined(); // the binding was released by the delete
  });
});

describe('KVM_SET_MEMORY_ATTRIBUTES (kvm_main.c kvm_vm_ioctl_set_mem_attributes)', () => {
  it('sets and clears PRIVATE per 4 KiB page on a sw-protected VM', () => {
    const vm = createSimKvm().createVm('sw-protected');
    vm.setMemoryAttributes({ address: 0x2000n, size: 0x3000n, attributes: MEMORY_ATTRIBUTE.PRIVATE });
    expect([0x1000n, 0x2000n, 0x4fffn, 0x5000n].map((g) => vm.getMemoryAttributes(g))).toEqual([
      0n,
      8n,
      8n,
      0n,
    ]);
    vm.setMemoryAttributes({ address: 0x3000n, size: 0x1000n, attributes: 0n });
    expect([0x2000n, 0x3000n, 0x4000n].map((g) => vm.getMemoryAttributes(g))).toEqual([8n, 0n, 8n]);
  });
  it('rejects flags, unsupported attributes, size 0, a wrapping range and misalignment with EINVAL', () => {
    const vm = createSimKvm().createVm('sw-protected');
    const P = MEMORY_ATTRIBUTE.PRIVATE;
    const t = (address: bigint, size: bigint, attributes = P, flags = 0n) =>
      tryKvm(() => vm.setMemoryAttributes({ address, size, attributes, flags }));
    expect(t(0n, 4096n, P, 1n)).toBe('EINVAL');
    expect(t(0n, 4096n, 1n)).toBe('EINVAL');
    expect(t(0n, 0n)).toBe('EINVAL');
    expect(t((1n << 64n) - 4096n, 8192n)).toBe('EINVAL');
    expect(t(0x800n, 4096n)).toBe('EINVAL');
    expect(t(0n, 0x1800n)).toBe('EINVAL');
  });
  it('reports no attributes for a default VM, which therefore cannot set PRIVATE', () => {
    const vm = createSimKvm().createVm();
    expect(vm.checkExtension(CAP.MEMORY_ATTRIBUTES)).toBe(0);
    expect(vm.checkExtension(CAP.GUEST_MEMFD)).toBe(0);
    expect(tryKvm(() => vm.setMemoryAttributes({ address: 0n, size: 4096n, attributes: 8n }))).toBe('EINVAL');
    const sw = createSimKvm().createVm('sw-protected');
    expect(sw.checkExtension(CAP.MEMORY_ATTRIBUTES)).toBe(8);
    expect(sw.checkExtension(CAP.GUEST_MEMFD)).toBe(1);
  });
});
