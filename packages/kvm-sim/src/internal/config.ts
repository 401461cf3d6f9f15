// The simulated host: which VM types it supports, its limits and the CPUID it reports.

import {
  encodeCpuid8000001F,
  isVmType,
  type SevCpuFeature,
  VM_TYPE_NUMBER,
  VM_TYPES,
  type VmType,
} from '@kvmtest/coco';
import { CPUID_FLAG_SIGNIFICANT_INDEX, type CpuidEntry, describeValue } from '@kvmtest/kvm';

/**
 * Configuration of a simulated host (one `createSimKvm` process).
 *
 * By default the host supports all six VM types at once. No real machine does that (SEV needs an
 * AMD CPU, TDX an Intel one); the default is deliberately non-physical so one process can run
 * every type. Set `vendor` to restrict the host to a real combination: `amd` → default,
 * sw-protected, sev, sev-es, sev-snp; `intel` → default, sw-protected, tdx.
 */
export interface SimConfig {
  /** VM types the host supports (KVM_CAP_VM_TYPES); default: every type the vendor allows. */
  vmTypes?: readonly VmType[];
  /** Restricts the host to one CPU vendor's real feature set (and its CPUID vendor string). */
  vendor?: 'amd' | 'intel';
  /** KVM_CAP_MAX_VCPUS (x86 KVM_MAX_VCPUS: CONFIG_KVM_MAX_NR_VCPUS, 4096 with MAXSMP as distros build). */
  maxVcpus?: number;
  /** KVM_CAP_MAX_VCPU_ID (x86 KVM_MAX_VCPU_IDS = KVM_MAX_VCPUS * KVM_VCPU_ID_RATIO 4). */
  maxVcpuId?: number;
  /** Host CPUs online; KVM_CAP_NR_VCPUS answers min(this, maxVcpus). */
  onlineCpus?: number;
  /** User memslots per address space (KVM_CAP_NR_MEMSLOTS; x86 KVM_USER_MEM_SLOTS = 32764). */
  memslotsPerAddressSpace?: number;
  /** Guest operations one KVM_RUN may execute before it ends with `intr` / budgetExhausted. */
  runBudget?: number;
  /** The simulated CPU. */
  cpu?: {
    /** MAXPHYADDR reported in CPUID 0x80000008 EAX[7:0] (default 52). */
    maxPhysAddr?: number;
    /** SEV C-bit position, CPUID 0x8000001F EBX[5:0] (default 51). */
    cBit?: number;
    /** CPUID 0x8000001F ECX: highest SEV ASID (default 509; spec §11). */
    maxSevAsid?: number;
    /** CPUID 0x8000001F EDX: lowest ASID for plain SEV; 1..min-1 are SEV-ES/SNP ASIDs (default 100). */
    minSevAsid?: number;
    /** Largest TD guest-physical address width the TDX module supports: 48 or 52 (default 52). */
    tdxMaxGpaw?: 48 | 52;
    /** SEV VMSA features the host supports (KVM_X86_SEV_VMSA_FEATURES; default DEBUG_SWAP, bit 5). */
    sevVmsaFeatures?: bigint;
  };
}

/** A SimConfig with every field filled in and checked. */
export interface ResolvedConfig {
  readonly vendor: 'amd' | 'intel' | 'any';
  readonly vmTypes: readonly VmType[];
  readonly maxVcpus: number;
  readonly maxVcpuId: number;
  readonly onlineCpus: number;
  readonly memslotsPerAddressSpace: number;
  readonly addressSpaces: number;
  readonly runBudget: number;
  readonly maxPhysAddr: number;
  readonly cBit: number;
  readonly maxSevAsid: number;
  readonly minSevAsid: number;
  readonly tdxMaxGpaw: 48 | 52;
  readonly sevVmsaFeatures: bigint;
}

/** Defaults of SimConfig (documented values of a mainline x86-64 host). */
export const SIM_CONFIG_DEFAULTS = Object.freeze({
  maxVcpus: 4096,
  maxVcpuId: 4096 * 4,
  onlineCpus: 16,
  memslotsPerAddressSpace: 32764,
  runBudget: 5_000_000,
  maxPhysAddr: 52,
  cBit: 51,
  maxSevAsid: 509,
  minSevAsid: 100,
  tdxMaxGpaw: 52 as 48 | 52,
  sevVmsaFeatures: 1n << 5n,
});

const AMD_TYPES: readonly VmType[] = ['default', 'sw-protected', 'sev', 'sev-es', 'sev-snp'];
const INTEL_TYPES: readonly VmType[] = ['default', 'sw-protected', 'tdx'];

function positiveInt(name: string, v: unknown, dflt: number, max = 2 ** 31 - 1): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v))
    throw new TypeError(`SimConfig.${name} must be an integer, got ${describeValue(v)}`);
  if (v < 1 || v > max) throw new RangeError(`SimConfig.${name} ${v} must be in 1..${max}`);
  return v;
}

/** Validates a SimConfig and fills in defaults. Throws TypeError/RangeError naming the field. */
export function resolveConfig(config: SimConfig = {}): ResolvedConfig {
  if (typeof config !== 'object' || config === null)
    throw new TypeError(`SimConfig must be an object, got ${describeValue(config)}`);
  const vendor = config.vendor ?? 'any';
  if (vendor !== 'any' && vendor !== 'amd' && vendor !== 'intel')
    throw new TypeError(`SimConfig.vendor must be 'amd' or 'intel', got ${describeValue(vendor)}`);
  const allowed = vendor === 'amd' ? AMD_TYPES : vendor === 'intel' ? INTEL_TYPES : VM_TYPES;
  let vmTypes: VmType[];
  if (config.vmTypes === undefined) vmTypes = [...allowed];
  else {
    if (!Array.isArray(config.vmTypes))
      throw new TypeError('SimConfig.vmTypes must be an array of VM type names');
    vmTypes = [];
    for (const t of config.vmTypes) {
      if (!isVmType(t)) throw new TypeError(`SimConfig.vmTypes: unknown VM type ${describeValue(t)}`);
      if (!allowed.includes(t))
        throw new RangeError(
          `SimConfig.vmTypes: ${t} needs a ${t === 'tdx' ? 'intel' : 'amd'} host, not ${vendor}`,
        );
      if (!vmTypes.includes(t)) vmTypes.push(t);
    }
    vmTypes.sort((a, b) => VM_TYPE_NUMBER[a] - VM_TYPE_NUMBER[b]);
  }
  const cpu = config.cpu ?? {};
  if (typeof cpu !== 'object' || cpu === null)
    throw new TypeError(`SimConfig.cpu must be an object, got ${describeValue(cpu)}`);
  const d = SIM_CONFIG_DEFAULTS;
  const maxPhysAddr = positiveInt('cpu.maxPhysAddr', cpu.maxPhysAddr, d.maxPhysAddr, 52);
  if (maxPhysAddr < 32) throw new RangeError(`SimConfig.cpu.maxPhysAddr ${maxPhysAddr} must be in 32..52`);
  const cBit = positiveInt('cpu.cBit', cpu.cBit, d.cBit, 63);
  if (cBit < 32) throw new RangeError(`SimConfig.cpu.cBit ${cBit} must be in 32..63`);
  const maxSevAsid =
    cpu.maxSevAsid === 0 ? 0 : positiveInt('cpu.maxSevAsid', cpu.maxSevAsid, d.maxSevAsid, 0xffff);
  const minSevAsid = positiveInt('cpu.minSevAsid', cpu.minSevAsid, d.minSevAsid, 0xffff);
  const tdxMaxGpaw = cpu.tdxMaxGpaw ?? d.tdxMaxGpaw;
  if (tdxMaxGpaw !== 48 && tdxMaxGpaw !== 52)
    throw new RangeError(`SimConfig.cpu.tdxMaxGpaw must be 48 or 52, got ${describeValue(tdxMaxGpaw)}`);
  const sevVmsaFeatures = cpu.sevVmsaFeatures ?? d.sevVmsaFeatures;
  if (typeof sevVmsaFeatures !== 'bigint')
    throw new TypeError(
      `SimConfig.cpu.sevVmsaFeatures must be a u64 bigint, got ${describeValue(sevVmsaFeatures)}`,
    );
  // KVM_X86_SEV_VMSA_FEATURES is a u64 device attribute.
  if (sevVmsaFeatures < 0n || sevVmsaFeatures > 0xffff_ffff_ffff_ffffn)
    throw new RangeError(`SimConfig.cpu.sevVmsaFeatures ${sevVmsaFeatures}n does not fit a u64`);
  const maxVcpus = positiveInt('maxVcpus', config.maxVcpus, d.maxVcpus, 1 << 20);
  return Object.freeze({
    vendor,
    vmTypes: Object.freeze(vmTypes),
    maxVcpus,
    maxVcpuId: positiveInt(
      'maxVcpuId',
      config.maxVcpuId,
      config.maxVcpus === undefined ? d.maxVcpuId : maxVcpus * 4,
      1 << 22,
    ),
    onlineCpus: positiveInt('onlineCpus', config.onlineCpus, d.onlineCpus),
    memslotsPerAddressSpace: positiveInt(
      'memslotsPerAddressSpace',
      config.memslotsPerAddressSpace,
      d.memslotsPerAddressSpace,
      32764,
    ),
    // x86 with SMM: address space 0 (normal) and 1 (SMM); kvm_arch_nr_memslot_as_ids.
    addressSpaces: 2,
    runBudget: positiveInt('runBudget', config.runBudget, d.runBudget, Number.MAX_SAFE_INTEGER),
    maxPhysAddr,
    cBit,
    maxSevAsid,
    minSevAsid,
    tdxMaxGpaw,
    sevVmsaFeatures,
  });
}

function str4(s: string): number {
  return (s.charCodeAt(0) | (s.charCodeAt(1) << 8) | (s.charCodeAt(2) << 16) | (s.charCodeAt(3) << 24)) >>> 0;
}

function entry(fn: number, eax: number, ebx: number, ecx: number, edx: number, index?: number): CpuidEntry {
  return {
    function: fn >>> 0,
    index: index ?? 0,
    flags: index === undefined ? 0 : CPUID_FLAG_SIGNIFICANT_INDEX,
    eax: eax >>> 0,
    ebx: ebx >>> 0,
    ecx: ecx >>> 0,
    edx: edx >>> 0,
  };
}

/** KVM_CPUID_FEATURES (0x40000001) EAX bits the simulator advertises (include/uapi/asm/kvm_para.h). */
const KVM_FEATURE = { PV_UNHALT: 7, PV_SEND_IPI: 11, PV_SCHED_YIELD: 13 } as const;

/**
 * KVM_GET_SUPPORTED_CPUID of the simulated host: vendor, long mode/NX/LA57, MAXPHYADDR in
 * 0x80000008, the KVM paravirt leaves and, on an AMD-capable host with SEV types, 0x8000001F
 * (C-bit, ASID counts; EBX[11:6] and the VMPL count reported 0 as KVM does, spec §11.1).
 */
export function supportedCpuid(cfg: ResolvedConfig): CpuidEntry[] {
  const amd = cfg.vendor !== 'intel';
  const vendor = amd ? 'AuthenticAMD' : 'GenuineIntel';
  const v = [str4(vendor.slice(0, 4)), str4(vendor.slice(4, 8)), str4(vendor.slice(8, 12))] as const;
  const sevFeatures: SevCpuFeature[] = [];
  if (cfg.vmTypes.includes('sev')) sevFeatures.push('SEV');
  if (cfg.vmTypes.includes('sev-es')) sevFeatures.push('SEV_ES');
  if (cfg.vmTypes.includes('sev-snp')) sevFeatures.push('SEV_SNP');
  const maxExt = amd ? 0x8000001f : 0x80000008;
  const out: CpuidEntry[] = [
    entry(0, 0xd, v[0], v[2], v[1]),
    // family 0x19 (AMD) / 6 (Intel); ECX bit 31 = hypervisor present; EDX: FPU, PSE, MSR, PAE, APIC, …
    entry(1, amd ? 0x00a00f11 : 0x000806f8, 0, (1 << 31) | (1 << 0) | (1 << 23), 0x178bfbff),
    // leaf 7: ECX bit 16 = LA57 (5-level paging)
    entry(7, 0, 0, 1 << 16, 0, 0),
    entry(0x40000000, 0x40000001, str4('KVMK'), str4('VMKV'), str4('M\0\0\0')),
    entry(
      0x40000001,
      (1 << KVM_FEATURE.PV_UNHALT) | (1 << KVM_FEATURE.PV_SEND_IPI) | (1 << KVM_FEATURE.PV_SCHED_YIELD),
      0,
      0,
      0,
    ),
    entry(0x80000000, maxExt, v[0], v[2], v[1]),
    // EDX bit 20 NX, bit 29 LM
    entry(0x80000001, 0, 0, 1, (1 << 20) | (1 << 29)),
    // EAX[7:0] MAXPHYADDR, EAX[15:8] linear-address bits (57 with LA57)
    entry(0x80000008, cfg.maxPhysAddr | (57 << 8), 0, 0, 0),
  ];
  if (amd && sevFeatures.length > 0) {
    const r = encodeCpuid8000001F({
      features: sevFeatures,
      otherEaxBits: 0,
      cBit: cfg.cBit,
      physAddrReduction: 0,
      numVmpls: 0,
      maxSevAsid: cfg.maxSevAsid,
      minSevAsid: cfg.minSevAsid,
    });
    out.push(entry(0x8000001f, r.eax, r.ebx, r.ecx, r.edx));
  }
  return out;
}
