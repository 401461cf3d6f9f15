// Guest policies handed to the SEV firmware at LAUNCH_START (legacy SEV/SEV-ES) and SNP_LAUNCH_START.

import { CocoError } from './error.js';
import { checkBigUint, checkUint, genmask, hex, rejectReserved, setBits } from './internal/bits.js';

/** Single-bit flags of the legacy SEV guest policy, u32 (include/linux/psp-sev.h `SEV_POLICY_MASK_*`). */
export const SEV_POLICY_BIT = {
  NODBG: 0, // debugging of the guest is disallowed
  NOKS: 1, // sharing keys with other guests is disallowed
  ES: 2, // SEV-ES is required
  NOSEND: 3, // sending the guest to another platform is disallowed
  DOMAIN: 4, // the guest must not be transmitted outside the domain
  SEV: 5, // the guest must not be transmitted to a non-SEV platform
} as const;

/** Legacy SEV policy: API major version in bits 23:16, API minor in bits 31:24 (psp-sev.h). */
export const SEV_POLICY_API_MAJOR_SHIFT = 16;
/** See {@link SEV_POLICY_API_MAJOR_SHIFT}. */
export const SEV_POLICY_API_MINOR_SHIFT = 24;
/** Bits of the legacy SEV policy that are reserved (must be zero): 15:6. */
export const SEV_POLICY_RESERVED_MASK = 0x0000ffc0;

/** Decoded legacy SEV guest policy (u32). */
export interface SevPolicy {
  readonly noDebug: boolean;
  readonly noKeySharing: boolean;
  readonly es: boolean;
  readonly noSend: boolean;
  readonly domain: boolean;
  readonly sev: boolean;
  /** Minimum firmware API major version (bits 23:16). */
  readonly apiMajor: number;
  /** Minimum firmware API minor version (bits 31:24). */
  readonly apiMinor: number;
}

const SEV_FLAG_FIELDS = [
  ['noDebug', 'NODBG'],
  ['noKeySharing', 'NOKS'],
  ['es', 'ES'],
  ['noSend', 'NOSEND'],
  ['domain', 'DOMAIN'],
  ['sev', 'SEV'],
] as const;

/** Encodes a legacy SEV policy to its u32 value; omitted flags are clear, omitted versions 0. */
export function encodeSevPolicy(p: Partial<SevPolicy>): number {
  let v = 0;
  for (const [field, bit] of SEV_FLAG_FIELDS) if (p[field]) v |= 1 << SEV_POLICY_BIT[bit];
  v |= checkUint('SEV policy apiMajor', p.apiMajor ?? 0, 8) << SEV_POLICY_API_MAJOR_SHIFT;
  v |= checkUint('SEV policy apiMinor', p.apiMinor ?? 0, 8) << SEV_POLICY_API_MINOR_SHIFT;
  return v >>> 0;
}

/** Decodes a legacy SEV policy; rejects a value outside u32 or with reserved bits 15:6 set. */
export function decodeSevPolicy(policy: number): SevPolicy {
  validateSevPolicy(policy);
  const flag = (b: number) => ((policy >>> b) & 1) === 1;
  return Object.freeze({
    noDebug: flag(SEV_POLICY_BIT.NODBG),
    noKeySharing: flag(SEV_POLICY_BIT.NOKS),
    es: flag(SEV_POLICY_BIT.ES),
    noSend: flag(SEV_POLICY_BIT.NOSEND),
    domain: flag(SEV_POLICY_BIT.DOMAIN),
    sev: flag(SEV_POLICY_BIT.SEV),
    apiMajor: (policy >>> SEV_POLICY_API_MAJOR_SHIFT) & 0xff,
    apiMinor: (policy >>> SEV_POLICY_API_MINOR_SHIFT) & 0xff,
  });
}

/** Throws CocoError RESERVED_BITS naming each reserved bit (15:6) set in a legacy SEV policy. */
export function validateSevPolicy(policy: number): void {
  checkUint('SEV policy', policy, 32);
  rejectReserved('SEV policy', BigInt(policy), BigInt(SEV_POLICY_RESERVED_MASK), 'bits 15:6 are reserved');
}

/** Single-bit flags of the SNP guest policy, u64 (include/linux/psp-sev.h `SNP_POLICY_MASK_*`, SNP ABI "Guest Policy"). */
export const SNP_POLICY_BIT = {
  SMT: 16, // SMT allowed
  RSVD_MBO: 17, // reserved, must be one
  MIGRATE_MA: 18, // association with a migration agent allowed
  DEBUG: 19, // debugging allowed
  SINGLE_SOCKET: 20, // guest may run on one socket only
  CXL_ALLOW: 21,
  MEM_AES_256_XTS: 22,
  RAPL_DIS: 23,
  CIPHERTEXT_HIDING_DRAM: 24,
  PAGE_SWAP_DISABLE: 25,
} as const;

/** SNP policy: ABI minor version in bits 7:0, major in bits 15:8. */
export const SNP_POLICY_ABI_MINOR_MASK = 0xffn;
/** See {@link SNP_POLICY_ABI_MINOR_MASK}. */
export const SNP_POLICY_ABI_MAJOR_MASK = 0xff00n;
/** Bits of the SNP policy the ABI reserves (63:26). */
export const SNP_POLICY_RESERVED_MASK = genmask(63, 26);

const bit = (b: number) => 1n << BigInt(b);

/**
 * Policy bits mainline KVM (~6.17) accepts in SNP_LAUNCH_START: ABI minor/major, SMT, RSVD_MBO, DEBUG,
 * SINGLE_SOCKET = 0x1BFFFF (arch/x86/kvm/svm/sev.c: snp_launch_start(); newer kernels widen it per firmware).
 */
export const KVM_SNP_POLICY_MASK_VALID: bigint =
  SNP_POLICY_ABI_MINOR_MASK |
  SNP_POLICY_ABI_MAJOR_MASK |
  bit(SNP_POLICY_BIT.SMT) |
  bit(SNP_POLICY_BIT.RSVD_MBO) |
  bit(SNP_POLICY_BIT.DEBUG) |
  bit(SNP_POLICY_BIT.SINGLE_SOCKET);

/** Decoded SNP guest policy (u64). */
export interface SnpPolicy {
  readonly abiMinor: number;
  readonly abiMajor: number;
  readonly smt: boolean;
  /** Bit 17, must be one for the firmware and KVM. */
  readonly rsvdMbo: boolean;
  readonly migrateMa: boolean;
  readonly debug: boolean;
  readonly singleSocket: boolean;
  readonly cxlAllow: boolean;
  readonly memAes256Xts: boolean;
  readonly raplDis: boolean;
  readonly ciphertextHidingDram: boolean;
  readonly pageSwapDisable: boolean;
}

const SNP_FLAG_FIELDS = [
  ['smt', 'SMT'],
  ['rsvdMbo', 'RSVD_MBO'],
  ['migrateMa', 'MIGRATE_MA'],
  ['debug', 'DEBUG'],
  ['singleSocket', 'SINGLE_SOCKET'],
  ['cxlAllow', 'CXL_ALLOW'],
  ['memAes256Xts', 'MEM_AES_256_XTS'],
  ['raplDis', 'RAPL_DIS'],
  ['ciphertextHidingDram', 'CIPHERTEXT_HIDING_DRAM'],
  ['pageSwapDisable', 'PAGE_SWAP_DISABLE'],
] as const;

/** Encodes an SNP policy to its u64 value; `rsvdMbo` defaults to true, other omitted flags to false. */
export function encodeSnpPolicy(p: Partial<SnpPolicy>): bigint {
  let v = BigInt(checkUint('SNP policy abiMinor', p.abiMinor ?? 0, 8));
  v |= BigInt(checkUint('SNP policy abiMajor', p.abiMajor ?? 0, 8)) << 8n;
  for (const [field, name] of SNP_FLAG_FIELDS) {
    const on = field === 'rsvdMbo' ? (p.rsvdMbo ?? true) : p[field];
    if (on) v |= bit(SNP_POLICY_BIT[name]);
  }
  return v;
}

/** Decodes an SNP policy; rejects a value outside u64 or with reserved bits 63:26 set. */
export function decodeSnpPolicy(policy: bigint): SnpPolicy {
  checkBigUint('SNP policy', policy, 64);
  rejectReserved('SNP policy', policy, SNP_POLICY_RESERVED_MASK, 'bits 63:26 are reserved in the SNP ABI');
  const out: Record<string, number | boolean> = {
    abiMinor: Number(policy & 0xffn),
    abiMajor: Number((policy >> 8n) & 0xffn),
  };
  for (const [field, name] of SNP_FLAG_FIELDS) out[field] = (policy & bit(SNP_POLICY_BIT[name])) !== 0n;
  return Object.freeze(out) as unknown as SnpPolicy;
}

/** One reason KVM's SNP_LAUNCH_START would refuse a policy (all are -EINVAL there). */
export type SnpPolicyProblem =
  | { readonly rule: 'unsupported-bits'; readonly bits: readonly number[] }
  | { readonly rule: 'rsvd-mbo-clear' }
  | { readonly rule: 'single-socket' };

/** Options of {@link snpPolicyProblems}. */
export interface SnpPolicyCheckOptions {
  /** Bits the kernel accepts; default {@link KVM_SNP_POLICY_MASK_VALID}. */
  readonly validMask?: bigint;
}

/**
 * KVM's SNP_LAUNCH_START policy checks, in its order (arch/x86/kvm/svm/sev.c: snp_launch_start()): bits outside
 * the valid mask; bit 17 (RSVD_MBO) clear; bit 20 (SINGLE_SOCKET) set. Empty array = acceptable.
 */
export function snpPolicyProblems(policy: bigint, opts: SnpPolicyCheckOptions = {}): SnpPolicyProblem[] {
  checkBigUint('SNP policy', policy, 64);
  const valid = opts.validMask ?? KVM_SNP_POLICY_MASK_VALID;
  const problems: SnpPolicyProblem[] = [];
  const outside = policy & ~valid;
  if (outside !== 0n) problems.push({ rule: 'unsupported-bits', bits: setBits(outside) });
  if ((policy & bit(SNP_POLICY_BIT.RSVD_MBO)) === 0n) problems.push({ rule: 'rsvd-mbo-clear' });
  if ((policy & bit(SNP_POLICY_BIT.SINGLE_SOCKET)) !== 0n) problems.push({ rule: 'single-socket' });
  return problems;
}

/** Throws a CocoError for the first problem {@link snpPolicyProblems} finds, naming the bit. */
export function validateSnpPolicy(policy: bigint, opts: SnpPolicyCheckOptions = {}): void {
  const [first] = snpPolicyProblems(policy, opts);
  if (!first) return;
  switch (first.rule) {
    case 'unsupported-bits':
      throw new CocoError(
        'RESERVED_BITS',
        `SNP policy ${hex(policy)} has bit${first.bits.length > 1 ? 's' : ''} ${first.bits.join(', ')} outside the supported mask ${hex(opts.validMask ?? KVM_SNP_POLICY_MASK_VALID)}`,
        { policy, bits: first.bits },
      );
    case 'rsvd-mbo-clear':
      throw new CocoError(
        'INVALID_COMBINATION',
        `SNP policy ${hex(policy)} has bit 17 (RSVD_MBO) clear; it must be one`,
        {
          policy,
          bit: SNP_POLICY_BIT.RSVD_MBO,
        },
      );
    case 'single-socket':
      throw new CocoError(
        'INVALID_COMBINATION',
        `SNP policy ${hex(policy)} sets bit 20 (SINGLE_SOCKET), which KVM does not support`,
        { policy, bit: SNP_POLICY_BIT.SINGLE_SOCKET },
      );
  }
}
