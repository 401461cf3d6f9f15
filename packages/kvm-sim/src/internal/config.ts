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

/** Named simulated hosts: `createSimKvm({ host })` or KVMTEST_SIM_HOST (read by testkit). */
export const SIM_HOST_PRESETS = ['mainline-amd', 'mainline-intel', 'pvm'] as const;

/** A named simulated host. */
export type SimHostPreset = (typeof SIM_HOST_PRESETS)[number];

/** Host features that can be switched off to look like a given host (all on by default). */
export interface SimFeatures {
  /**
   * guest_memfd (CONFIG_KVM_GUEST_MEMFD): off, KVM_CAP_GUEST_MEMFD answers 0 and
   * KVM_CREATE_GUEST_MEMFD is not an ioctl (ENOTTY; virt/kvm/kvm_main.c: kvm_vm_ioctl()).
   */
  guestMemfd?: boolean;
  /**
   * Memory attributes (CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES): off, KVM_CAP_MEMORY_ATTRIBUTES
   * answers 0 and KVM_SET_MEMORY_ATTRIBUTES is ENOTTY (virt/kvm/kvm_main.c: kvm_vm_ioctl()).
   */
  memoryAttributes?: boolean;
  /**
   * SMM (CONFIG_KVM_SMM): on, KVM_MAX_NR_ADDRESS_SPACES is 2 but a VM with private memory has one
   * (arch/x86/include/asm/kvm_host.h: kvm_arch_nr_memslot_as_ids()); off, every VM has one address
   * space and KVM_CAP_X86_SMM answers 0 (arch/x86/kvm/x86.c: kvm_vm_ioctl_check_extension()).
   */
  smm?: boolean;
  /**
   * Two-dimensional paging (tdp_enabled: EPT/NPT). Off (shadow paging), the memslot GPA limit is
   * 52 bits whatever CPUID's MAXPHYADDR says (arch/x86/kvm/mmu.h: kvm_mmu_max_gfn()), and no VM
   * type that needs TDP can exist.
   */
  tdp?: boolean;
  /**
   * 5-level paging (LA57) in KVM_GET_SUPPORTED_CPUID: off, leaf 7 ECX bit 16 is clear and leaf
   * 0x80000008 reports 48 linear-address bits, so a vCPU given that CPUID cannot set CR4.LA57 and
   * the MSRs that hold addresses must be 48-bit canonical (arch/x86/kvm/cpuid.c: kvm_set_cpu_caps()
   * keeps LA57 only when the host kernel runs with it).
   */
  la57?: boolean;
}

/**
 * Configuration of a simulated host (one `createSimKvm` process).
 *
 * By default the host supports all six VM types at once. No real machine does that (SEV needs an
 * AMD CPU, TDX an Intel one); the default is deliberately non-physical so one process can run
 * every type. Set `vendor` to restrict the host to a real combination: `amd` → default,
 * sw-protected, sev, sev-es, sev-snp; `intel` → default, sw-protected, tdx.
 */
export interface SimConfig {
  /** Start from a named host (its vendor, VM types, features and limits); the other fields override it. */
  host?: SimHostPreset;
  /** Host features (all on unless the preset or this says otherwise). */
  features?: SimFeatures;
  /** VM types the host supports (KVM_CAP_VM_TYPES); default: every type the vendor allows. */
  vmTypes?: readonly VmType[];
  /** Restricts the host to one CPU vendor's real feature set (and its CPUID vendor string). */
  vendor?: 'amd' | 'intel';
  /** KVM_CAP_MAX_VCPUS (x86 KVM_MAX_VCPUS = CONFIG_KVM_MAX_NR_VCPUS, 1024 in a default-config kernel). */
  maxVcpus?: number;
  /** KVM_CAP_MAX_VCPU_ID (x86 KVM_MAX_VCPU_IDS = KVM_MAX_VCPUS * KVM_VCPU_ID_RATIO 4). */
  maxVcpuId?: number;
  /** Host CPUs online; KVM_CAP_NR_VCPUS answers min(this, maxVcpus). */
  onlineCpus?: number;
  /** User memslots per address space (KVM_CAP_NR_MEMSLOTS; x86 KVM_USER_MEM_SLOTS = 32764). */
  memslotsPerAddressSpace?: number;
  /** Guest operations one KVM_RUN may execute before it ends with `intr` / budgetExhausted. */
  runBudget?: number;
  /**
   * Mean number of guest operations between a running guest's yields to the event loop (each
   * quantum is drawn from the seeded scheduler in 1 … 2 × this). A guest yields only at an async
   * operation; host tasks run meanwhile.
   */
  yieldQuantum?: number;
  /** The simulated CPU. */
  cpu?: {
    /** MAXPHYADDR reported in CPUID 0x80000008 EAX[7:0] (default 52). */
    maxPhysAddr?: number;
    /** SEV C-bit position, CPUID 0x8000001F EBX[5:0] (default 51). */
    cBit?: number;
    /** CPUID 0x8000001F ECX: highest SEV ASID (default 509; arch/x86/kvm/svm/sev.c: sev_hardware_setup()). */
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
  /** The preset the host started from ('custom' without one). */
  readonly host: SimHostPreset | 'custom';
  readonly guestMemfd: boolean;
  readonly memoryAttributes: boolean;
  readonly smm: boolean;
  readonly tdp: boolean;
  /** 5-level paging in the supported CPUID (SimFeatures.la57). */
  readonly la57: boolean;
  readonly vendor: 'amd' | 'intel' | 'any';
  readonly vmTypes: readonly VmType[];
  readonly maxVcpus: number;
  readonly maxVcpuId: number;
  readonly onlineCpus: number;
  readonly memslotsPerAddressSpace: number;
  /** KVM_MAX_NR_ADDRESS_SPACES: 2 with SMM, else 1 (a VM with private memory always has 1). */
  readonly addressSpaces: number;
  readonly runBudget: number;
  readonly yieldQuantum: number;
  readonly maxPhysAddr: number;
  readonly cBit: number;
  readonly maxSevAsid: number;
  readonly minSevAsid: number;
  readonly tdxMaxGpaw: 48 | 52;
  readonly sevVmsaFeatures: bigint;
}

/**
 * Defaults of SimConfig: a default-config mainline x86-64 kernel. KVM_MAX_VCPUS is
 * CONFIG_KVM_MAX_NR_VCPUS (1024 unless MAXSMP) and KVM_MAX_VCPU_IDS is KVM_MAX_VCPUS *
 * KVM_VCPU_ID_RATIO 4 (arch/x86/include/asm/kvm_host.h), as both measured 6.18 hosts answer.
 */
export const SIM_CONFIG_DEFAULTS = Object.freeze({
  maxVcpus: 1024,
  maxVcpuId: 1024 * 4,
  onlineCpus: 16,
  memslotsPerAddressSpace: 32764,
  runBudget: 5_000_000,
  yieldQuantum: 128,
  maxPhysAddr: 52,
  cBit: 51,
  maxSevAsid: 509,
  minSevAsid: 100,
  tdxMaxGpaw: 52 as 48 | 52,
  sevVmsaFeatures: 1n << 5n,
});

const AMD_TYPES: readonly VmType[] = ['default', 'sw-protected', 'sev', 'sev-es', 'sev-snp'];
const INTEL_TYPES: readonly VmType[] = ['default', 'sw-protected', 'tdx'];

/**
 * VM types with private memory (kvm_arch_has_private_mem): they need guest_memfd and the PRIVATE
 * memory attribute (arch/x86/kvm/x86.c: kvm_arch_init_vm(); svm/sev.c and vmx/tdx.c set
 * has_private_mem for SNP and TDX).
 */
const PRIVATE_MEM_TYPES: readonly VmType[] = ['sw-protected', 'sev-snp', 'tdx'];

/**
 * VM types that exist only with two-dimensional paging: SW_PROTECTED needs the TDP MMU
 * (arch/x86/kvm/x86.c: kvm_x86_vendor_init(), `tdp_mmu_enabled`), SEV needs NPT
 * (arch/x86/kvm/svm/sev.c: sev_hardware_setup(), `!npt_enabled`), TDX needs EPT
 * (arch/x86/kvm/vmx/tdx.c: tdx_bringup(), `!enable_ept`).
 */
const TDP_TYPES: readonly VmType[] = ['sw-protected', 'sev', 'sev-es', 'sev-snp', 'tdx'];

/**
 * The named hosts. `mainline-*` are default-config 6.18 kernels on an SEV-SNP EPYC and a TDX Xeon
 * (CONFIG_KVM_SW_PROTECTED_VM depends on EXPERT and is off, so no SW_PROTECTED type). `pvm` is the
 * out-of-tree Pagetable-based Virtual Machine module as these machines run it: GenuineIntel CPUID,
 * DEFAULT VMs only, no guest_memfd, no memory attributes, no SMM, shadow paging.
 */
const PRESETS: Readonly<Record<SimHostPreset, SimConfig>> = Object.freeze({
  'mainline-amd': {
    vendor: 'amd',
    vmTypes: ['default', 'sev', 'sev-es', 'sev-snp'],
    features: { guestMemfd: true, memoryAttributes: true, smm: true, tdp: true },
  },
  'mainline-intel': {
    vendor: 'intel',
    vmTypes: ['default', 'tdx'],
    features: { guestMemfd: true, memoryAttributes: true, smm: true, tdp: true },
  },
  pvm: {
    vendor: 'intel',
    vmTypes: ['default'],
    features: { guestMemfd: false, memoryAttributes: false, smm: false, tdp: false, la57: false },
    maxVcpus: 1024,
    maxVcpuId: 4096,
    memslotsPerAddressSpace: 32764,
  },
});

/** The SimConfig a preset stands for (a copy). */
export function simHostPreset(name: SimHostPreset): SimConfig {
  if (!isSimHostPreset(name))
    throw new TypeError(
      `unknown simulated host ${JSON.stringify(name)} (presets: ${SIM_HOST_PRESETS.join(', ')})`,
    );
  const p = PRESETS[name];
  return { ...p, host: name, ...(p.vmTypes ? { vmTypes: [...p.vmTypes] } : {}), features: { ...p.features } };
}

/** True when `name` is a preset name. */
export function isSimHostPreset(name: unknown): name is SimHostPreset {
  return typeof name === 'string' && (SIM_HOST_PRESETS as readonly string[]).includes(name);
}

function positiveInt(name: string, v: unknown, dflt: number, max = 2 ** 31 - 1): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v))
    throw new TypeError(`SimConfig.${name} must be an integer, got ${describeValue(v)}`);
  if (v < 1 || v > max) throw new RangeError(`SimConfig.${name} ${v} must be in 1..${max}`);
  return v;
}

function flag(name: keyof SimFeatures, v: unknown): boolean {
  if (v === undefined) return true;
  if (typeof v !== 'boolean')
    throw new TypeError(`SimConfig.features.${name} must be a boolean, got ${String(v)}`);
  return v;
}

/** Why a VM type cannot exist with these features (undefined: it can). */
function typeBlocker(t: VmType, f: Required<SimFeatures>): string | undefined {
  if (PRIVATE_MEM_TYPES.includes(t) && !f.guestMemfd) return 'guest_memfd (features.guestMemfd)';
  if (PRIVATE_MEM_TYPES.includes(t) && !f.memoryAttributes)
    return 'memory attributes (features.memoryAttributes)';
  if (TDP_TYPES.includes(t) && !f.tdp) return 'two-dimensional paging (features.tdp)';
  return undefined;
}

/** Validates a SimConfig and fills in defaults. Throws TypeError/RangeError naming the field and the rule. */
export function resolveConfig(input: SimConfig = {}): ResolvedConfig {
  if (typeof input !== 'object' || input === null)
    throw new TypeError(`SimConfig must be an object, got ${describeValue(input)}`);
  const base: SimConfig = input.host === undefined ? {} : simHostPreset(input.host);
  if (input.features !== undefined && (typeof input.features !== 'object' || input.features === null))
    throw new TypeError(`SimConfig.features must be an object, got ${describeValue(input.features)}`);
  // Checked before the preset is merged in: spreading a string would make an object of its characters.
  if (input.cpu !== undefined && (typeof input.cpu !== 'object' || input.cpu === null))
    throw new TypeError(`SimConfig.cpu must be an object, got ${describeValue(input.cpu)}`);
  const config: SimConfig = {
    ...base,
    ...input,
    features: { ...base.features, ...input.features },
    cpu: { ...base.cpu, ...input.cpu },
  };
  const fin = config.features ?? {};
  const features: Required<SimFeatures> = {
    guestMemfd: flag('guestMemfd', fin.guestMemfd),
    memoryAttributes: flag('memoryAttributes', fin.memoryAttributes),
    smm: flag('smm', fin.smm),
    tdp: flag('tdp', fin.tdp),
    la57: flag('la57', fin.la57),
  };
  // The PRIVATE attribute only means something with guest_memfd behind it
  // (virt/kvm/kvm_main.c: kvm_supported_mem_attributes(); x86 selects both together).
  if (features.memoryAttributes && !features.guestMemfd)
    throw new RangeError(
      'SimConfig.features: memoryAttributes needs guestMemfd (the PRIVATE attribute is backed by guest_memfd)',
    );
  const vendor = config.vendor ?? 'any';
  if (vendor !== 'any' && vendor !== 'amd' && vendor !== 'intel')
    throw new TypeError(`SimConfig.vendor must be 'amd' or 'intel', got ${describeValue(vendor)}`);
  const allowed = vendor === 'amd' ? AMD_TYPES : vendor === 'intel' ? INTEL_TYPES : VM_TYPES;
  let vmTypes: VmType[];
  // Without a list: every type the vendor and the features allow, as the kernel advertises them.
  if (config.vmTypes === undefined) vmTypes = allowed.filter((t) => typeBlocker(t, features) === undefined);
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
      const blocker = typeBlocker(t, features);
      if (blocker !== undefined)
        throw new RangeError(`SimConfig.vmTypes: ${t} VMs cannot exist on a host without ${blocker}`);
      if (!vmTypes.includes(t)) vmTypes.push(t);
    }
    // KVM_X86_DEFAULT_VM is always supported (arch/x86/kvm/x86.c: kvm_x86_vendor_init()).
    if (!vmTypes.includes('default'))
      throw new RangeError('SimConfig.vmTypes must include default: every KVM host supports DEFAULT VMs');
    vmTypes.sort((a, b) => VM_TYPE_NUMBER[a] - VM_TYPE_NUMBER[b]);
  }
  const cpu = config.cpu ?? {};
  const d = SIM_CONFIG_DEFAULTS;
  const maxPhysAddr = positiveInt('cpu.maxPhysAddr', cpu.maxPhysAddr, d.maxPhysAddr, 52);
  if (maxPhysAddr < 32) throw new RangeError(`SimConfig.cpu.maxPhysAddr ${maxPhysAddr} must be in 32..52`);
  const cBit = positiveInt('cpu.cBit', cpu.cBit, d.cBit, 63);
  if (cBit < 32) throw new RangeError(`SimConfig.cpu.cBit ${cBit} must be in 32..63`);
  const maxSevAsid =
    cpu.maxSevAsid === 0 ? 0 : positiveInt('cpu.maxSevAsid', cpu.maxSevAsid, d.maxSevAsid, 0xffff);
  const minSevAsid = positiveInt('cpu.minSevAsid', cpu.minSevAsid, d.minSevAsid, 0xffff);
  // CPUID 0x8000001F: EDX is the lowest plain-SEV ASID, ECX the highest ASID; SEV ASIDs are
  // min..max (arch/x86/kvm/svm/sev.c: sev_hardware_setup()).
  if (maxSevAsid > 0 && minSevAsid > maxSevAsid)
    throw new RangeError(
      `SimConfig.cpu.minSevAsid ${minSevAsid} is above cpu.maxSevAsid ${maxSevAsid}: SEV ASIDs run from the minimum to the maximum`,
    );
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
  const maxVcpuId = positiveInt(
    'maxVcpuId',
    config.maxVcpuId,
    config.maxVcpus === undefined ? d.maxVcpuId : maxVcpus * 4,
    1 << 22,
  );
  // KVM_MAX_VCPU_IDS is at least KVM_MAX_VCPUS (include/linux/kvm_host.h; x86 multiplies by 4).
  if (maxVcpuId < maxVcpus)
    throw new RangeError(
      `SimConfig.maxVcpuId ${maxVcpuId} is below maxVcpus ${maxVcpus}: KVM_MAX_VCPU_IDS is never below KVM_MAX_VCPUS`,
    );
  return Object.freeze({
    host: input.host ?? 'custom',
    ...features,
    vendor,
    vmTypes: Object.freeze(vmTypes),
    maxVcpus,
    maxVcpuId,
    onlineCpus: positiveInt('onlineCpus', config.onlineCpus, d.onlineCpus),
    memslotsPerAddressSpace: positiveInt(
      'memslotsPerAddressSpace',
      config.memslotsPerAddressSpace,
      d.memslotsPerAddressSpace,
      32764,
    ),
    // KVM_MAX_NR_ADDRESS_SPACES: 2 with CONFIG_KVM_SMM (normal and SMM), else the generic 1
    // (arch/x86/include/asm/kvm_host.h, include/linux/kvm_host.h).
    addressSpaces: features.smm ? 2 : 1,
    runBudget: positiveInt('runBudget', config.runBudget, d.runBudget, Number.MAX_SAFE_INTEGER),
    yieldQuantum: positiveInt('yieldQuantum', config.yieldQuantum, d.yieldQuantum, 1 << 24),
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
 * (C-bit, ASID counts; EBX[11:6] and the VMPL count reported 0 as KVM does, arch/x86/kvm/cpuid.c: __do_cpuid_func()).
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
    // family 0x19 (AMD) / 6 (Intel); ECX bit 31 = hypervisor present, 21 x2APIC (KVM emulates it on
    // every host: arch/x86/kvm/cpuid.c kvm_set_cpu_caps()), 26 XSAVE, 28 AVX; EDX: FPU, PSE, MSR, PAE, APIC, …
    entry(
      1,
      amd ? 0x00a00f11 : 0x000806f8,
      0,
      (1 << 31) | (1 << 0) | (1 << 21) | (1 << 23) | (1 << 26) | (1 << 28),
      0x178bfbff,
    ),
    // leaf 7: ECX bit 16 = LA57 (5-level paging), when the host has it
    entry(7, 0, 0, cfg.la57 ? 1 << 16 : 0, 0, 0),
    // leaf 0xD (XSAVE): XCR0 may enable x87 | SSE | AVX; the standard area of all of them is 832 bytes,
    // AVX's component (YMM_Hi128) is 256 bytes at offset 576.
    entry(0xd, 0x7, 832, 832, 0, 0),
    entry(0xd, 0, 0, 0, 0, 1),
    entry(0xd, 256, 576, 0, 0, 2),
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
    // EAX[7:0] MAXPHYADDR, EAX[15:8] linear-address bits (57 with LA57, else 48)
    entry(0x80000008, cfg.maxPhysAddr | ((cfg.la57 ? 57 : 48) << 8), 0, 0, 0),
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
