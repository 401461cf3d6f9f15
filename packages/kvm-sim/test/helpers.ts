// Test helpers: a VM with one memslot of RAM, identity-free page tables built with guest-memory.

import { PageTables, PhysicalMemory } from '@kvmtest/guest-memory';
import { CR, type GuestProgram, type Kvm, type Vcpu, type Vm } from '@kvmtest/kvm';
import type { VmType } from '@kvmtest/coco';

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
      const v = vm.createVcpu(id);
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
