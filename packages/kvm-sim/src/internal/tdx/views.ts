// What the TDX model needs from the core beyond the ArchVm / ArchVcpu / ArchMemslot views of
// ../arch/ops.ts. Each item is optional here so the model works with the seam as it is; the core's
// classes already carry the members under these names, and the report of this model asks for them
// to be added to the seam proper (one line each), after which the casts below go away.

import { type CpuidEntry, findCpuid, type Regs, type Sregs } from '@kvmtest/kvm';
import type { ArchCpu, ArchMemslot, ArchVcpu, ArchVm } from '../arch/ops.js';

/** A guest_memfd file as far as INIT_MEM_REGION needs it: its pages (allocated on demand) and whether it is gone. */
export interface GmemPages {
  page(index: number, allocate: boolean): Uint8Array | undefined;
  readonly released: boolean;
}

/** Seam addition 1: a memslot's guest_memfd binding (`slot->gmem.file`, `slot->gmem.pgoff`). */
interface MemslotGmem extends ArchMemslot {
  readonly gmem?: GmemPages | undefined;
  readonly gmemOffset?: bigint;
}

/** Seam addition 2: `irqchip_split(kvm)` (KVM_CAP_SPLIT_IRQCHIP enabled). */
interface VmIrqchip extends ArchVm {
  readonly hasSplitIrqchip?: boolean;
}

/** Seam addition 3: the vCPU's register files (`vcpu->arch.regs`, control state), for TDH.VP.INIT's initial state. */
interface VcpuRegs extends ArchVcpu {
  readonly regs?: Regs;
  readonly sregs?: Sregs;
}

/** Where the guest_memfd page behind private `gpa` lives: the file (identity for "prepared") and page index. */
export interface GmemLocation {
  readonly file: GmemPages;
  readonly index: number;
}

/**
 * The guest_memfd page backing `gpa` in `slot`, or undefined when the slot is not bound to a
 * guest_memfd (kvm_slot_can_be_private false). `file.released` says the file was closed.
 */
export function gmemLocation(slot: ArchMemslot, gpa: bigint): GmemLocation | undefined {
  const s = slot as MemslotGmem;
  if (!s.hasGmem || s.gmem === undefined) return undefined;
  const index = Number((gpa - s.gpa + (s.gmemOffset ?? 0n)) >> 12n);
  return { file: s.gmem, index };
}

/**
 * irqchip_split(kvm). Undefined when the core does not expose it: the caller then cannot apply the
 * rule (tdx_vcpu_create: no split irqchip -> EINVAL) and lets creation proceed.
 */
export function splitIrqchip(vm: ArchVm): boolean | undefined {
  return (vm as VmIrqchip).hasSplitIrqchip;
}

/** The vCPU's register file, when the core exposes it. */
export function vcpuRegs(vcpu: ArchVcpu): Regs | undefined {
  return (vcpu as VcpuRegs).regs;
}

/** The vCPU's control registers and EFER, when the core exposes them. */
export function vcpuSregs(vcpu: ArchVcpu): Sregs | undefined {
  return (vcpu as VcpuRegs).sregs;
}

/** Seam addition 4: the vCPU's CPUID table (`vcpu->arch.cpuid_entries`, KVM_SET_CPUID2). */
interface VcpuCpuidTable extends ArchVcpu {
  readonly cpuid?: readonly CpuidEntry[];
}

/** The vCPU's KVM CPUID table (KVM_SET_CPUID2), when the core exposes it. */
export function vcpuCpuidTable(vcpu: ArchVcpu): readonly CpuidEntry[] | undefined {
  const table = (vcpu as VcpuCpuidTable).cpuid;
  return Array.isArray(table) ? table : undefined;
}

let inFallback = false;

/**
 * kvm_cpuid for the TD's vCPU, without #VE interception: from the vCPU's table when the core
 * exposes it (a leaf missing reads as zeros), else through ArchCpu.cpuid. The core's ArchCpu.cpuid
 * is the guest's intercepted CPUID today, which would re-enter the #VE hook; the guard breaks that.
 */
export function vcpuCpuid(
  cpu: ArchCpu,
  leaf: number,
  subleaf: number,
): { eax: number; ebx: number; ecx: number; edx: number } {
  const table = (cpu.vcpu as VcpuCpuidTable).cpuid;
  if (Array.isArray(table)) {
    const e = findCpuid(table, leaf >>> 0, subleaf >>> 0);
    return e === undefined ? { eax: 0, ebx: 0, ecx: 0, edx: 0 } : e;
  }
  if (inFallback) return { eax: 0, ebx: 0, ecx: 0, edx: 0 };
  inFallback = true;
  try {
    return cpu.cpuidTable(leaf, subleaf);
  } finally {
    inFallback = false;
  }
}
