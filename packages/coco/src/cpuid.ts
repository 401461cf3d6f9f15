// CPUID Fn8000_001F (AMD memory-encryption capabilities) and the TDX shared bit.

import { CocoError } from './error.js';
import { checkOneOf, checkUint, hex, rejectReserved } from './internal/bits.js';

/** The CPUID leaf describing AMD memory encryption (arch/x86/kvm/svm/sev.c: sev_hardware_setup()). */
export const CPUID_LEAF_SEV = 0x8000001f;

/**
 * EAX bits of CPUID 0x8000001F, by name (arch/x86/include/asm/cpufeatures.h word 19; AMD APM vol. 3
 * for the bits the kernel does not name).
 */
export const SEV_CPUID_FEATURE_BIT = {
  SME: 0,
  SEV: 1,
  VM_PAGE_FLUSH: 2,
  SEV_ES: 3,
  SEV_SNP: 4,
  VMPL: 5,
  RMPQUERY: 6,
  VMPL_SSS: 7,
  SECURE_TSC: 8,
  V_TSC_AUX: 9,
  SME_COHERENT: 10,
  REQ_64BIT_HYPERVISOR: 11,
  RESTRICTED_INJECTION: 12,
  ALTERNATE_INJECTION: 13,
  DEBUG_SWAP: 14,
  PREVENT_HOST_IBS: 15,
  VTE: 16,
  VMGEXIT_PARAMETER: 17,
  VIRTUAL_TOM_MSR: 18,
  IBS_VIRT_GUEST_CTL: 19,
  RMPREAD: 21,
  SEGMENTED_RMP: 23,
  VMSA_REG_PROT: 24,
  SMT_PROTECTION: 25,
  ALLOWED_SEV_FEATURES: 27,
  SVSM: 28,
  HV_INUSE_WR_ALLOWED: 30,
} as const;

/** A named EAX bit of CPUID 0x8000001F. */
export type SevCpuFeature = keyof typeof SEV_CPUID_FEATURE_BIT;

const FEATURE_NAMES = (Object.keys(SEV_CPUID_FEATURE_BIT) as SevCpuFeature[]).sort(
  (a, b) => SEV_CPUID_FEATURE_BIT[a] - SEV_CPUID_FEATURE_BIT[b],
);
const NAMED_EAX_MASK = FEATURE_NAMES.reduce((m, n) => (m | (1 << SEV_CPUID_FEATURE_BIT[n])) >>> 0, 0);

/** Raw CPUID output registers, each an unsigned 32-bit number. */
export interface CpuidRegs {
  readonly eax: number;
  readonly ebx: number;
  readonly ecx: number;
  readonly edx: number;
}

/** Decoded CPUID 0x8000001F (arch/x86/kvm/svm/sev.c: sev_hardware_setup()). */
export interface SevCpuInfo {
  /** Named EAX feature bits that are set, in bit order. */
  readonly features: readonly SevCpuFeature[];
  /** EAX bits set that have no name in {@link SEV_CPUID_FEATURE_BIT} (kept so decode/encode round-trips). */
  readonly otherEaxBits: number;
  /** EBX[5:0]: position of the C-bit in a page-table entry / physical address. */
  readonly cBit: number;
  /** EBX[11:6]: physical-address bits lost when memory encryption is on. */
  readonly physAddrReduction: number;
  /** EBX[15:12]: number of VMPLs supported. */
  readonly numVmpls: number;
  /** ECX: number of encrypted guests supported simultaneously = max SEV ASID. */
  readonly maxSevAsid: number;
  /** EDX: minimum ASID for a plain-SEV guest; ASIDs 1..minSevAsid-1 are for SEV-ES/SNP (arch/x86/kvm/svm/sev.c: sev_hardware_setup()). */
  readonly minSevAsid: number;
}

/** Encodes CPUID 0x8000001F registers from the decoded form (arch/x86/kvm/svm/sev.c: sev_hardware_setup()). */
export function encodeCpuid8000001F(info: SevCpuInfo): CpuidRegs {
  let eax = 0;
  for (const f of info.features) {
    if (!Object.hasOwn(SEV_CPUID_FEATURE_BIT, f)) {
      throw new CocoError('UNKNOWN_CODE', `CPUID 0x8000001F feature ${JSON.stringify(f)} is not known`, {
        feature: f,
      });
    }
    eax |= 1 << SEV_CPUID_FEATURE_BIT[f];
  }
  checkUint('CPUID 0x8000001F otherEaxBits', info.otherEaxBits, 32);
  if ((info.otherEaxBits & NAMED_EAX_MASK) !== 0) {
    throw new CocoError(
      'INVALID_COMBINATION',
      `CPUID 0x8000001F otherEaxBits ${hex(info.otherEaxBits)} overlaps named feature bits (${hex(NAMED_EAX_MASK)}); list them in features`,
      { otherEaxBits: info.otherEaxBits },
    );
  }
  eax = (eax | info.otherEaxBits) >>> 0;
  const ebx =
    (checkUint('CPUID 0x8000001F cBit', info.cBit, 6) |
      (checkUint('CPUID 0x8000001F physAddrReduction', info.physAddrReduction, 6) << 6) |
      (checkUint('CPUID 0x8000001F numVmpls', info.numVmpls, 4) << 12)) >>>
    0;
  const ecx = checkUint('CPUID 0x8000001F maxSevAsid', info.maxSevAsid, 32);
  const edx = checkUint('CPUID 0x8000001F minSevAsid', info.minSevAsid, 32);
  return { eax, ebx, ecx, edx };
}

/** Decodes CPUID 0x8000001F registers; rejects a register outside u32 and EBX[31:16] set (reserved). */
export function decodeCpuid8000001F(regs: CpuidRegs): SevCpuInfo {
  const eax = checkUint('CPUID 0x8000001F EAX', regs.eax, 32);
  const ebx = checkUint('CPUID 0x8000001F EBX', regs.ebx, 32);
  const ecx = checkUint('CPUID 0x8000001F ECX', regs.ecx, 32);
  const edx = checkUint('CPUID 0x8000001F EDX', regs.edx, 32);
  rejectReserved('CPUID 0x8000001F EBX', BigInt(ebx), 0xffff0000n, 'EBX[31:16] is reserved');
  return Object.freeze({
    features: Object.freeze(FEATURE_NAMES.filter((n) => (eax >>> SEV_CPUID_FEATURE_BIT[n]) & 1)),
    otherEaxBits: (eax & ~NAMED_EAX_MASK) >>> 0,
    cBit: ebx & 0x3f,
    physAddrReduction: (ebx >>> 6) & 0x3f,
    numVmpls: (ebx >>> 12) & 0xf,
    maxSevAsid: ecx,
    minSevAsid: edx,
  });
}

/** True when the decoded CPUID 0x8000001F reports `feature`. */
export function hasSevCpuFeature(info: SevCpuInfo, feature: SevCpuFeature): boolean {
  return info.features.includes(feature);
}

/** The C-bit position, EBX[5:0] of CPUID 0x8000001F (arch/x86/kvm/svm/sev.c: sev_hardware_setup()). */
export function cBitFromCpuid(regs: Pick<CpuidRegs, 'ebx'> | number): number {
  const ebx = typeof regs === 'number' ? regs : regs.ebx;
  return checkUint('CPUID 0x8000001F EBX', ebx, 32) & 0x3f;
}

/** The C-bit as an address mask, `1n << cBit` (the kernel's `sme_me_mask`). */
export function cBitMask(cBit: number): bigint {
  checkUint('C-bit position', cBit, 6);
  return 1n << BigInt(cBit);
}

/** An inclusive ASID range; empty when `first > last`. */
export interface AsidRange {
  readonly first: number;
  readonly last: number;
}

/**
 * ASID ranges implied by CPUID 0x8000001F (arch/x86/kvm/svm/sev.c: sev_hardware_setup(), `min_sev_asid` / `max_sev_asid`): plain SEV uses minSevAsid..maxSevAsid,
 * SEV-ES and SNP share 1..minSevAsid-1. A range with `first > last` is empty.
 */
export function sevAsidRanges(info: Pick<SevCpuInfo, 'minSevAsid' | 'maxSevAsid'>): {
  readonly sev: AsidRange;
  readonly sevEs: AsidRange;
} {
  const min = checkUint('minSevAsid', info.minSevAsid, 32);
  const max = checkUint('maxSevAsid', info.maxSevAsid, 32);
  return Object.freeze({
    sev: Object.freeze({ first: min, last: max }),
    sevEs: Object.freeze({ first: 1, last: min - 1 }),
  });
}

/** TDX guest physical address widths KVM accepts (arch/x86/kvm/vmx/tdx.c: setup_tdparams_eptp_controls(): 48 or 52). */
export type TdxGpaw = 48 | 52;

/** Position of the TDX shared (S) bit for a guest physical address width: GPAW − 1 (arch/x86/kvm/vmx/tdx.c: setup_tdparams_eptp_controls()). */
export function tdxSharedBit(gpaw: TdxGpaw): 47 | 51 {
  checkOneOf('TDX GPAW', gpaw, [48, 52] as const);
  return gpaw === 52 ? 51 : 47;
}

/** The TDX shared bit as a GPA mask (`kvm->arch.gfn_direct_bits` in address form, arch/x86/kvm/vmx/tdx.c: tdx_td_init()). */
export function tdxSharedMask(gpaw: TdxGpaw): bigint {
  return 1n << BigInt(tdxSharedBit(gpaw));
}
