// Named CPUID feature bits, as tools/testing/selftests/kvm/include/x86/processor.h names them
// (X86_FEATURE_*): where a feature lives (leaf, subleaf, register, bit), for kvm_cpu_has /
// this_cpu_has style checks against a CPUID table.

/** A CPUID register a feature bit lives in. */
export type CpuidReg = 'eax' | 'ebx' | 'ecx' | 'edx';

/** Where one CPUID feature bit lives: leaf (`function`), subleaf (`index`), register and bit. */
export interface X86Feature {
  readonly function: number;
  readonly index: number;
  readonly reg: CpuidReg;
  readonly bit: number;
}

const f = (fn: number, index: number, reg: CpuidReg, bit: number): X86Feature =>
  Object.freeze({ function: fn, index, reg, bit });

/** X86_FEATURE_* of the selftests' processor.h (the ones kvmtest ports use). */
export const X86_FEATURE = {
  // CPUID.1:ECX
  SSE3: f(0x1, 0, 'ecx', 0),
  VMX: f(0x1, 0, 'ecx', 5),
  SMX: f(0x1, 0, 'ecx', 6),
  PCID: f(0x1, 0, 'ecx', 17),
  X2APIC: f(0x1, 0, 'ecx', 21),
  POPCNT: f(0x1, 0, 'ecx', 23),
  XSAVE: f(0x1, 0, 'ecx', 26),
  OSXSAVE: f(0x1, 0, 'ecx', 27),
  AVX: f(0x1, 0, 'ecx', 28),
  HYPERVISOR: f(0x1, 0, 'ecx', 31),
  // CPUID.1:EDX
  FPU: f(0x1, 0, 'edx', 0),
  PAE: f(0x1, 0, 'edx', 6),
  APIC: f(0x1, 0, 'edx', 9),
  FXSR: f(0x1, 0, 'edx', 24),
  SSE: f(0x1, 0, 'edx', 25),
  SSE2: f(0x1, 0, 'edx', 26),
  // CPUID.(7,0):EBX
  FSGSBASE: f(0x7, 0, 'ebx', 0),
  SMEP: f(0x7, 0, 'ebx', 7),
  SMAP: f(0x7, 0, 'ebx', 20),
  // CPUID.(7,0):ECX
  UMIP: f(0x7, 0, 'ecx', 2),
  PKU: f(0x7, 0, 'ecx', 3),
  LA57: f(0x7, 0, 'ecx', 16),
  // CPUID.(0xD,1):EAX
  XSAVES: f(0xd, 1, 'eax', 3),
  // CPUID.0x80000001:ECX / EDX
  SVM: f(0x8000_0001, 0, 'ecx', 2),
  NX: f(0x8000_0001, 0, 'edx', 20),
  GBPAGES: f(0x8000_0001, 0, 'edx', 26),
  RDTSCP: f(0x8000_0001, 0, 'edx', 27),
  LM: f(0x8000_0001, 0, 'edx', 29),
  // CPUID.0x8000001F:EAX (AMD memory encryption)
  SME: f(0x8000_001f, 0, 'eax', 0),
  SEV: f(0x8000_001f, 0, 'eax', 1),
  SEV_ES: f(0x8000_001f, 0, 'eax', 3),
  SEV_SNP: f(0x8000_001f, 0, 'eax', 4),
} as const satisfies Record<string, X86Feature>;

/** A feature name of X86_FEATURE. */
export type X86FeatureName = keyof typeof X86_FEATURE;

/** The CPUID entry shape a feature check reads (`struct kvm_cpuid_entry2`'s fields). */
export interface CpuidLookupEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/**
 * True when `entries` (a KVM_GET_SUPPORTED_CPUID or vCPU CPUID table) has `feature`'s bit set; the
 * subleaf counts only for entries flagged KVM_CPUID_FLAG_SIGNIFICANT_INDEX (bit 0 of `flags`).
 */
export function cpuidHas(entries: readonly CpuidLookupEntry[], feature: X86Feature): boolean {
  const e = entries.find(
    (x) => x.function === feature.function && ((x.flags & 1) === 0 || x.index === feature.index),
  );
  return e !== undefined && ((e[feature.reg] >>> feature.bit) & 1) === 1;
}
