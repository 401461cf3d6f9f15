// AMD MSRs used by SEV guests and the SEV status MSR (0xC0010131).

import { CocoError } from './error.js';
import { checkBigUint, rejectReserved } from './internal/bits.js';

/** MSR numbers used by SEV/SEV-ES/SNP guests and hosts (arch/x86/include/asm/msr-index.h). */
export const SEV_MSR = {
  MSR_AMD64_SYSCFG: 0xc0010010,
  MSR_VM_HSAVE_PA: 0xc0010117,
  MSR_AMD64_VM_PAGE_FLUSH: 0xc001011e,
  MSR_AMD64_SEV_ES_GHCB: 0xc0010130, // GHCB GPA or a GHCB MSR-protocol message (arch/x86/include/asm/sev-common.h)
  MSR_AMD64_SEV: 0xc0010131, // SEV status, read-only to the guest
  MSR_AMD64_RMP_BASE: 0xc0010132,
  MSR_AMD64_RMP_END: 0xc0010133,
  MSR_AMD64_GUEST_TSC_FREQ: 0xc0010134,
  MSR_SVSM_CAA: 0xc001f000,
} as const;

/** Bits of the SEV status MSR 0xC0010131 (arch/x86/include/asm/msr-index.h `MSR_AMD64_SEV_*` / `MSR_AMD64_SNP_*`). */
export const SEV_STATUS_BIT = {
  SEV_ENABLED: 0,
  SEV_ES_ENABLED: 1,
  SNP_ENABLED: 2,
  VTOM: 3,
  REFLECT_VC: 4,
  RESTRICTED_INJECTION: 5,
  ALTERNATE_INJECTION: 6,
  DEBUG_SWAP: 7,
  PREVENT_HOST_IBS: 8,
  BTB_ISOLATION: 9,
  VMPL_SSS: 10,
  SECURE_TSC: 11,
  VMGEXIT_PARAMETER: 12,
  IBS_VIRT: 14,
  VMSA_REG_PROT: 16,
  SMT_PROTECTION: 17,
  SECURE_AVIC: 18,
} as const;

/** A named bit of the SEV status MSR. */
export type SevStatusFlag = keyof typeof SEV_STATUS_BIT;

const STATUS_NAMES = (Object.keys(SEV_STATUS_BIT) as SevStatusFlag[]).sort(
  (a, b) => SEV_STATUS_BIT[a] - SEV_STATUS_BIT[b],
);
const STATUS_KNOWN_MASK = STATUS_NAMES.reduce((m, n) => m | (1n << BigInt(SEV_STATUS_BIT[n])), 0n);

/** Bits of the SEV status MSR that are reserved: 13, 15 and 63:19 (arch/x86/include/asm/msr-index.h). */
export const SEV_STATUS_RESERVED_MASK: bigint = ((1n << 64n) - 1n) & ~STATUS_KNOWN_MASK;

/** Encodes the SEV status MSR value from the flags that are set. */
export function encodeSevStatus(flags: readonly SevStatusFlag[]): bigint {
  let v = 0n;
  for (const f of flags) {
    if (!Object.hasOwn(SEV_STATUS_BIT, f))
      throw new CocoError('UNKNOWN_CODE', `SEV status flag ${JSON.stringify(f)} is not known`, { flag: f });
    v |= 1n << BigInt(SEV_STATUS_BIT[f]);
  }
  return v;
}

/** Decodes the SEV status MSR into its set flags (bit order); rejects reserved bits 13, 15, 63:19. */
export function decodeSevStatus(value: bigint): SevStatusFlag[] {
  checkBigUint('SEV status MSR', value, 64);
  rejectReserved('SEV status MSR', value, SEV_STATUS_RESERVED_MASK, 'bits 13, 15 and 63:19 are reserved');
  return STATUS_NAMES.filter((n) => (value >> BigInt(SEV_STATUS_BIT[n])) & 1n);
}

/** VMSA SEV_FEATURES bits (arch/x86/include/asm/svm.h `SVM_SEV_FEAT_*`). Status bit = feature bit + 2. */
export const SVM_SEV_FEATURE_BIT = {
  SNP_ACTIVE: 0,
  VTOM: 1,
  REFLECT_VC: 2,
  RESTRICTED_INJECTION: 3,
  ALTERNATE_INJECTION: 4,
  DEBUG_SWAP: 5,
  PREVENT_HOST_IBS: 6,
  BTB_ISOLATION: 7,
  VMPL_SSS: 8,
  SECURE_TSC: 9,
  VMGEXIT_PARAMETER: 10,
  IBS_VIRT: 12,
  VMSA_REG_PROT: 14,
  SMT_PROTECTION: 15,
  SECURE_AVIC: 16,
} as const;

/**
 * The SEV status MSR a guest of this kind reads (arch/x86/include/asm/msr-index.h `MSR_AMD64_SEV_*_ENABLED`): SEV → bit 0; SEV-ES → bits 0–1; SNP → bits 0–2;
 * for SEV-ES and SNP the VMSA SEV_FEATURES (`vmsaFeatures`) appear shifted left by 2. Rejects features
 * for plain SEV, SNP_ACTIVE on a non-SNP guest, and feature bits that land on reserved status bits.
 */
export function sevStatusFor(kind: 'sev' | 'sev-es' | 'sev-snp', vmsaFeatures = 0n): bigint {
  checkBigUint('VMSA SEV_FEATURES', vmsaFeatures, 62);
  if (kind === 'sev' && vmsaFeatures !== 0n)
    throw new CocoError(
      'INVALID_COMBINATION',
      `a plain SEV guest has no VMSA features (got 0x${vmsaFeatures.toString(16)})`,
      {
        kind,
        vmsaFeatures,
      },
    );
  const snpActive = (vmsaFeatures & 1n) !== 0n;
  if (kind === 'sev-es' && snpActive)
    throw new CocoError('INVALID_COMBINATION', 'VMSA feature SNP_ACTIVE (bit 0) is only for SEV-SNP guests', {
      kind,
      vmsaFeatures,
    });
  let v = 1n << BigInt(SEV_STATUS_BIT.SEV_ENABLED);
  if (kind !== 'sev') v |= (1n << BigInt(SEV_STATUS_BIT.SEV_ES_ENABLED)) | (vmsaFeatures << 2n);
  if (kind === 'sev-snp') v |= 1n << BigInt(SEV_STATUS_BIT.SNP_ENABLED);
  rejectReserved(
    'SEV status MSR (from VMSA features)',
    v,
    SEV_STATUS_RESERVED_MASK,
    'bits 13, 15 and 63:19 are reserved',
  );
  return v;
}
