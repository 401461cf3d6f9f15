// Test helpers: a VM with one memslot of RAM, identity-free page tables built with guest-memory.

import { PageTables, PhysicalMemory } from '@kvmtest/guest-memory';
import { CR, type GuestProgram, type Kvm, MEM_FLAG, type Vcpu, type Vm } from '@kvmtest/kvm';
import type { VmType } from '@kvmtest/coco';
import { createSimKvm, type SimConfig } from '../src/index.js';

/**
 * vm_vcpu_add() as upstream selftests do it: KVM_CREATE_VCPU, then vcpu_init_cpuid() with the
 * host's supported CPUID (a new vCPU has none: arch/x86/kvm/x86.c: kvm_arch_vcpu_create()).
 */
export function vmVcpuAdd(vm: Vm, id: number): Vcpu {
  const v = vm.createVcpu(id);
  v.setCpuid(vm.kvm.getSupportedCpuid());
  return v;
}

/** GVA where helpers map the data pages. */
export const DATA_GVA = 0x40_0000n;

export interface GuestVm {
  vm: Vm;
  mem: Uint8Array;
  phys: PhysicalMemory;
  pt: PageTables;
  /** Maps `pages` pages at DATA_GVA.. to GPA `gpa`.. */
  map(gva: bigint, gpa: bigint, pages?: number): void;
  vcpu(program: GuestProgram, id?: number): Vcpu;
}

/** Options of guestVm. */
export interface GuestVmOptions {
  /** Tag bit of the page tables (the C-bit for SEV guests); data pages are mapped with it set. */
  tagBit?: number;
}

/**
 * A VM with `size` bytes of RAM at GPA 0 in slot 0, page tables from 1 MiB up, 16 data pages at
 * 2 MiB mapped at DATA_GVA (tagged when the options give a tag bit). Shared by tests and benches.
 */
export function guestVm(
  kvm: Kvm,
  type: VmType = 'default',
  size = 4 << 20,
  opts: GuestVmOptions = {},
): GuestVm {
  const vm = kvm.createVm(type);
  const mem = new Uint8Array(size);
  vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: BigInt(size), userspace: mem });
  const phys = new PhysicalMemory();
  phys.addRegion({ slot: 0, gpa: 0n, size: BigInt(size), backing: mem });
  let next = 0x10_0000n;
  const params =
    opts.tagBit === undefined
      ? { levels: 4 as const, physBits: 52 }
      : { levels: 4 as const, physBits: 52, tagBit: opts.tagBit };
  const pt = new PageTables(phys, params, () => {
    const p = next;
    next += 4096n;
    return p;
  });
  const map = (gva: bigint, gpa: bigint, pages = 1) => {
    for (let i = 0n; i < BigInt(pages); i++)
      pt.map(gva + i * 4096n, gpa + i * 4096n, 4096n, { tagged: opts.tagBit !== undefined });
  };
  map(DATA_GVA, 0x20_0000n, 16);
  return {
    vm,
    mem,
    phys,
    pt,
    map,
    vcpu(program, id = vm.vcpus.length) {
      const v = vmVcpuAdd(vm, id);
      v.setSregs({
        cr0: CR.CR0_PE | CR.CR0_PG | CR.CR0_WP,
        cr2: 0n,
        cr3: pt.root,
        cr4: CR.CR4_PAE,
        efer: CR.EFER_LME | CR.EFER_LMA | CR.EFER_NXE,
      });
      v.setEntry(program);
      return v;
    },
  };
}

/** GPA of privateMemVm's test slot (slot 1, above 4 GiB) and the GVA it is mapped at. */
export const TEST_GPA = 0x1_0000_0000n;
export const TEST_GVA = 0x8000_0000n;

/** Options of privateMemVm. */
export interface PrivateMemVmOptions {
  /** Back slot 1 with a guest_memfd (private memory possible). */
  gmem: boolean;
  /** Pages of slot 1 (mapped at TEST_GVA..), default 1. */
  pages?: number;
  /** The simulator's configuration. */
  config?: SimConfig;
  /** More GVA → GPA page mappings (e.g. a GVA over no memslot, for MMIO). */
  extraMaps?: readonly (readonly [bigint, bigint])[];
}

/**
 * A sw-protected VM as private_mem_kvm_exits_test builds it: slot 0 (4 MiB, page tables from 1 MiB),
 * slot 1 at TEST_GPA mapped at TEST_GVA (guest_memfd-backed when `gmem`), and `vcpu(program)` adding
 * a long-mode vCPU that runs `program`.
 */
export function privateMemVm(opts: PrivateMemVmOptions) {
  const pages = opts.pages ?? 1;
  const kvm = createSimKvm(opts.config ?? {});
  const vm = kvm.createVm('sw-protected');
  const mem = new Uint8Array(4 << 20);
  vm.setUserMemoryRegion({
    slot: 0,
    flags: 0,
    guestPhysAddr: 0n,
    memorySize: BigInt(mem.length),
    userspace: mem,
  });
  const phys = new PhysicalMemory();
  phys.addRegion({ slot: 0, gpa: 0n, size: BigInt(mem.length), backing: mem });
  let next = 0x10_0000n;
  const pt = new PageTables(phys, { levels: 4, physBits: 52 }, () => {
    const p = next;
    next += 4096n;
    return p;
  });
  for (let i = 0n; i < BigInt(pages); i++) pt.map(TEST_GVA + i * 4096n, TEST_GPA + i * 4096n);
  for (const [gva, gpa] of opts.extraMaps ?? []) pt.map(gva, gpa);
  const shared = new Uint8Array(pages * 4096);
  const size = BigInt(shared.length);
  const gmem = opts.gmem ? vm.createGuestMemfd(size) : undefined;
  vm.setUserMemoryRegion({
    slot: 1,
    flags: gmem === undefined ? 0 : MEM_FLAG.GUEST_MEMFD,
    guestPhysAddr: TEST_GPA,
    memorySize: size,
    userspace: shared,
    ...(gmem === undefined ? {} : { guestMemfd: gmem }),
  });
  const vcpu = (program: GuestProgram): Vcpu => {
    const v = vmVcpuAdd(vm, vm.vcpus.length);
    v.setSregs({
      cr0: CR.CR0_PE | CR.CR0_PG,
      cr2: 0n,
      cr3: pt.root,
      cr4: CR.CR4_PAE,
      efer: CR.EFER_LME | CR.EFER_LMA,
    });
    v.setEntry(program);
    return v;
  };
  return { kvm, vm, shared, gmem, vcpu };
}
