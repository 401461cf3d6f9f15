// Library helpers the selftests have and ports kept rewriting: a memslot added in one call (with its
// guest_memfd), addr_gpa2hva, vcpu_args_set, kvm_has_device_attr and kvm_cpu_has / this_cpu_has
// over the named X86_FEATURE bits.

import { cpuidHas, type X86Feature } from '@kvmtest/coco';
import type { Gpa } from '@kvmtest/guest-memory';
import { type Guest, type HostPtr, hostPtr, type Kvm, KvmError, MEM_FLAG, type Vcpu } from '@kvmtest/kvm';
import { getKvm } from './backend.js';
import { TestkitError } from './errors.js';
import { supportedCpuid } from './host-cpuid.js';
import { asTestVm, kitState, type VmLike } from './kit-vm.js';

/** Options of vmMemAdd (`vm_mem_add`). */
export interface VmMemAddOptions {
  /** Memslot id (bits 16–31 select the address space). */
  slot: number;
  /** First GPA, 4 KiB aligned. */
  gpa: Gpa;
  /** Bytes (or a page count with `pages`), a positive multiple of 4096. */
  size?: bigint | number;
  /** Size in 4 KiB pages (`npages`), instead of `size`. */
  pages?: number;
  /** MEM_FLAG bits (READONLY, LOG_DIRTY_PAGES…); GUEST_MEMFD is added when `guestMemfd` asks for one. */
  flags?: number;
  /**
   * Back the slot's private memory with guest_memfd: `true` creates one sized for the slot (closed
   * with the VM), or give `{ fd, offset }` of an existing one. Default: none.
   */
  guestMemfd?: boolean | { fd: number; offset?: bigint };
}

/** A memslot vmMemAdd added: where it is and the host memory behind it. */
export interface AddedMemslot {
  readonly slot: number;
  readonly gpa: Gpa;
  readonly size: bigint;
  /** The host memory (`userspace_addr`), exactly `size` bytes. */
  readonly hva: Uint8Array;
  /** The guest_memfd descriptor, when the slot has one. */
  readonly guestMemfd: number | undefined;
}

/**
 * vm_mem_add / vm_userspace_mem_region_add: host memory for `size` bytes at `gpa` in memslot `slot`
 * (KVM_SET_USER_MEMORY_REGION2), with a guest_memfd of its own when asked; the kit's view of guest
 * memory learns the slot, so addrGpa2Hva and the allocators (with `slot`) reach it.
 */
export function vmMemAdd(vmLike: VmLike, opts: VmMemAddOptions): AddedMemslot {
  const vm = asTestVm(vmLike);
  const { space } = vm.memory('vmMemAdd');
  if (typeof opts !== 'object' || opts === null)
    throw new TestkitError('BAD_ARGUMENT', 'vmMemAdd: options must be an object', {});
  const size =
    opts.pages !== undefined
      ? BigInt(checkCount(opts.pages, 'pages')) * 4096n
      : typeof opts.size === 'number'
        ? BigInt(checkCount(opts.size, 'size'))
        : opts.size;
  if (typeof size !== 'bigint' || size <= 0n || size % 4096n !== 0n || size > BigInt(2 ** 40))
    throw new TestkitError(
      'BAD_ARGUMENT',
      `vmMemAdd: size ${String(opts.size ?? opts.pages)} must be a positive multiple of 4096 (give size or pages)`,
      { size: opts.size, pages: opts.pages },
    );
  if (typeof opts.gpa !== 'bigint' || opts.gpa < 0n || opts.gpa % 4096n !== 0n)
    throw new TestkitError(
      'BAD_ARGUMENT',
      `vmMemAdd: GPA ${String(opts.gpa)} must be a 4 KiB-aligned bigint`,
      {
        gpa: opts.gpa,
      },
    );
  const flagsIn = opts.flags ?? 0;
  if (!Number.isSafeInteger(flagsIn) || flagsIn < 0)
    throw new TestkitError('BAD_ARGUMENT', `vmMemAdd: flags ${String(opts.flags)} must be MEM_FLAG bits`, {
      flags: opts.flags,
    });
  const gm = opts.guestMemfd;
  let fd: number | undefined;
  let offset = 0n;
  let owned = false;
  if (gm === true) {
    fd = vm.raw.createGuestMemfd(size);
    owned = true;
  } else if (typeof gm === 'object' && gm !== null) {
    fd = gm.fd;
    offset = gm.offset ?? 0n;
  }
  const flags = fd === undefined ? flagsIn : flagsIn | MEM_FLAG.GUEST_MEMFD;
  const memory = vm.kvm.allocateUserMemory(Number(size));
  const hva = memory.bytes;
  try {
    vm.raw.setUserMemoryRegion({
      slot: opts.slot,
      flags,
      guestPhysAddr: opts.gpa,
      memorySize: size,
      userspace: hva,
      ...(fd === undefined ? {} : { guestMemfd: fd, guestMemfdOffset: offset }),
    });
  } catch (e) {
    memory.release();
    if (owned && fd !== undefined && vm.kvm.isFdOpen(fd)) vm.kvm.closeFd(fd);
    throw e;
  }
  kitState(vm).keepUserMemory(memory);
  if (owned && fd !== undefined) kitState(vm).ownFd(fd);
  space.memory.addRegion({
    slot: opts.slot,
    gpa: opts.gpa,
    size,
    backing: hva,
    flags: { readOnly: (flags & MEM_FLAG.READONLY) !== 0, privateBacking: fd !== undefined },
  });
  return { slot: opts.slot, gpa: opts.gpa, size, hva, guestMemfd: fd };
}

function checkCount(n: number, what: string): number {
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new TestkitError('BAD_ARGUMENT', `vmMemAdd: ${what} ${n} must be a positive integer`, {
      [what]: n,
    });
  return n;
}

/** addr_gpa2hva: a pointer into the host memory behind `gpa` (shared memory; private pages hold ciphertext). */
export function addrGpa2Hva(vmLike: VmLike, gpa: Gpa): HostPtr {
  const vm = asTestVm(vmLike);
  const { space } = vm.memory('addrGpa2Hva');
  const region = typeof gpa === 'bigint' ? space.memory.findRegion(gpa) : undefined;
  if (!region)
    throw new TestkitError(
      'BAD_ARGUMENT',
      `addrGpa2Hva: GPA ${typeof gpa === 'bigint' ? `0x${gpa.toString(16)}` : String(gpa)} is not backed by any memslot (${space.memory.describeSlots()})`,
      { gpa },
    );
  return hostPtr(region.backing, region.offsetOf(gpa));
}

/** The SysV argument registers vcpuArgsSet fills, in order. */
const ARG_REGS = ['rdi', 'rsi', 'rdx', 'rcx', 'r8', 'r9'] as const;

/** vcpu_args_set: the guest's first up-to-six integer arguments in RDI, RSI, RDX, RCX, R8, R9 (KVM_GET/SET_REGS). */
export function vcpuArgsSet(vcpu: Vcpu, ...args: (bigint | number)[]): void {
  if (args.length > ARG_REGS.length)
    throw new TestkitError('BAD_ARGUMENT', `vcpuArgsSet: at most 6 arguments, got ${args.length}`, {
      count: args.length,
    });
  const regs = vcpu.getRegs();
  args.forEach((a, i) => {
    const v = typeof a === 'bigint' ? a : Number.isSafeInteger(a) ? BigInt(a) : Number.NaN;
    if (typeof v !== 'bigint' || v < 0n || v > 0xffff_ffff_ffff_ffffn)
      throw new TestkitError('BAD_ARGUMENT', `vcpuArgsSet: argument ${i} (${String(a)}) must be a u64`, {
        index: i,
      });
    regs[ARG_REGS[i]!] = v;
  });
  vcpu.setRegs(regs);
}

/**
 * kvm_has_device_attr on /dev/kvm: true when KVM answers the attribute (KVM_HAS_DEVICE_ATTR succeeds,
 * probed with KVM_GET_DEVICE_ATTR); false when it answers ENXIO (no such group/attribute).
 */
export function kvmHasDeviceAttr(group: number, attr: number, kvm: Kvm = getKvm()): boolean {
  try {
    kvm.getDeviceAttr(group, attr);
    return true;
  } catch (e) {
    if (e instanceof KvmError && e.code === 'ENXIO') return false;
    throw e;
  }
}

/** kvm_cpu_has: KVM_GET_SUPPORTED_CPUID has `feature` (an X86_FEATURE entry). */
export function kvmCpuHas(feature: X86Feature, kvm: Kvm = getKvm()): boolean {
  return cpuidHas(supportedCpuid(kvm), feature);
}

/** vcpu_cpuid_has: the vCPU's CPUID table (KVM_GET_CPUID2) has `feature`. */
export function vcpuCpuidHas(vcpu: Vcpu, feature: X86Feature): boolean {
  return cpuidHas(vcpu.getCpuid(), feature);
}

/** this_cpu_has, in the guest: CPUID (which may exit, or #VC on SEV-ES) reports `feature`. */
export function thisCpuHas(g: Guest, feature: X86Feature): boolean {
  const e = g.cpuid(feature.function, feature.index);
  return ((e[feature.reg] >>> feature.bit) & 1) === 1;
}
