// A simulated host shaped like a real one: read what a Kvm answers (CPUID vendor, KVM_CAP_VM_TYPES,
// limits, which features exist) and build the SimConfig that answers the same, starting from the
// closest preset. Used by the sim-vs-linux comparison so that differences are real ones.

import { cpuidHas, VM_TYPE_NUMBER, VM_TYPES, type VmType, X86_FEATURE } from '@kvmtest/coco';
import { CAP, type CpuidEntry, type Kvm } from '@kvmtest/kvm';
import { resolveConfig, type SimConfig, type SimHostPreset, simHostPreset } from './config.js';

/** KVM_CAP_X86_SMM (include/uapi/linux/kvm.h). */
const CAP_X86_SMM = 117;

/** A SimConfig matching a real host, the preset it starts from, and what was measured. */
export interface SimHostMatch {
  /** The preset closest to the host. */
  readonly preset: SimHostPreset;
  /** The preset with the host's measured answers (resolveConfig accepts it). */
  readonly config: SimConfig;
  /** Where the host departs from the preset, one phrase each (empty when it matches exactly). */
  readonly notes: readonly string[];
}

/** What to tell simHostMatching that the Kvm cannot answer itself. */
export interface SimHostHints {
  /** The device is the out-of-tree PVM module (no vmx/svm in the host CPU, shadow paging). */
  pvm?: boolean;
}

function cpuidVendor(cpuid: readonly CpuidEntry[]): 'amd' | 'intel' | undefined {
  const leaf0 = cpuid.find((e) => e.function === 0);
  if (leaf0 === undefined) return undefined;
  const bytes = new Uint8Array(new Uint32Array([leaf0.ebx, leaf0.edx, leaf0.ecx]).buffer);
  const s = new TextDecoder().decode(bytes);
  return s === 'AuthenticAMD' ? 'amd' : s === 'GenuineIntel' ? 'intel' : undefined;
}

/**
 * Reads `kvm` (KVM_GET_SUPPORTED_CPUID leaves 0, 7 and 0x80000008, KVM_CAP_VM_TYPES, MAX_VCPUS, MAX_VCPU_ID,
 * NR_MEMSLOTS, GUEST_MEMFD, MEMORY_ATTRIBUTES, X86_SMM) and returns the SimConfig answering the same.
 */
export function simHostMatching(kvm: Kvm, hints: SimHostHints = {}): SimHostMatch {
  const cpuid = kvm.getSupportedCpuid();
  const vendor = cpuidVendor(cpuid) ?? 'intel';
  const typesMask = kvm.checkExtension(CAP.VM_TYPES);
  // KVM_CAP_VM_TYPES is 0 on kernels before it existed: DEFAULT only.
  const vmTypes: VmType[] =
    typesMask === 0 ? ['default'] : VM_TYPES.filter((t) => (typesMask & (1 << VM_TYPE_NUMBER[t])) !== 0);
  const features = {
    guestMemfd: kvm.checkExtension(CAP.GUEST_MEMFD) > 0,
    memoryAttributes: kvm.checkExtension(CAP.MEMORY_ATTRIBUTES) > 0,
    smm: kvm.checkExtension(CAP_X86_SMM) > 0,
    tdp: hints.pvm !== true,
    // The host offers 5-level paging to guests.
    la57: cpuidHas(cpuid, X86_FEATURE.LA57),
  };
  const preset: SimHostPreset = hints.pvm ? 'pvm' : vendor === 'amd' ? 'mainline-amd' : 'mainline-intel';
  const base = resolveConfig(simHostPreset(preset));
  const notes: string[] = [];
  // CPUID 0x80000008 EAX[7:0]: MAXPHYADDR, which bounds memslot GPAs with TDP (kvm_mmu_max_gfn()).
  const leaf = cpuid.find((e) => e.function === 0x80000008);
  const maxPhysAddr = leaf === undefined ? undefined : leaf.eax & 0xff;
  const cpu = maxPhysAddr !== undefined && maxPhysAddr >= 32 && maxPhysAddr <= 52 ? { maxPhysAddr } : {};
  if (cpu.maxPhysAddr !== undefined && cpu.maxPhysAddr !== base.maxPhysAddr)
    notes.push(`maxPhysAddr ${cpu.maxPhysAddr}`);
  const measured = {
    maxVcpus: kvm.checkExtension(CAP.MAX_VCPUS),
    maxVcpuId: kvm.checkExtension(CAP.MAX_VCPU_ID),
    memslotsPerAddressSpace: kvm.checkExtension(CAP.NR_MEMSLOTS),
  };
  if (base.vendor !== vendor) notes.push(`CPU vendor ${vendor}`);
  if (base.vmTypes.join() !== vmTypes.join()) notes.push(`VM types ${vmTypes.join(', ')}`);
  for (const [k, v] of Object.entries(features))
    if (base[k as keyof typeof features] !== v) notes.push(`${k} ${v ? 'on' : 'off'}`);
  for (const [k, v] of Object.entries(measured))
    if (v > 0 && base[k as keyof typeof measured] !== v) notes.push(`${k} ${v}`);
  const config: SimConfig = {
    host: preset,
    vendor,
    vmTypes,
    features,
    cpu,
    ...(measured.maxVcpus > 0 ? { maxVcpus: measured.maxVcpus } : {}),
    ...(measured.maxVcpuId > 0 ? { maxVcpuId: Math.max(measured.maxVcpuId, measured.maxVcpus) } : {}),
    ...(measured.memslotsPerAddressSpace > 0
      ? { memslotsPerAddressSpace: Math.min(measured.memslotsPerAddressSpace, 32764) }
      : {}),
  };
  return Object.freeze({ preset, config, notes: Object.freeze(notes) });
}
