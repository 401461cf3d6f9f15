// The GHCB MSR protocol: messages carried in MSR 0xC0010130 itself, GHCBData[11:0] naming the message.

import { CocoError } from './error.js';
import {
  bitsOf,
  checkBigUint,
  checkOneOf,
  checkUint,
  genmask,
  hex,
  rejectReserved,
} from './internal/bits.js';

/** GHCBData[11:0] codes of the GHCB MSR protocol (arch/x86/include/asm/sev-common.h). */
export const GHCB_MSR_CODE = {
  SEV_INFO_RESP: 0x001,
  SEV_INFO_REQ: 0x002,
  CPUID_REQ: 0x004,
  CPUID_RESP: 0x005,
  AP_RESET_HOLD_REQ: 0x006,
  AP_RESET_HOLD_RESP: 0x007,
  PREF_GPA_REQ: 0x010,
  PREF_GPA_RESP: 0x011,
  REG_GPA_REQ: 0x012,
  REG_GPA_RESP: 0x013,
  PSC_REQ: 0x014,
  PSC_RESP: 0x015,
  HV_FT_REQ: 0x080,
  HV_FT_RESP: 0x081,
  TERM_REQ: 0x100,
} as const;

/** Mask of GHCBData[11:0], the message code; a value with these bits zero is a GHCB GPA (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit()). */
export const GHCB_MSR_INFO_MASK = 0xfffn;

/** The "no preference" GFN in a PREF_GPA response, GHCBData[63:12] all ones (arch/x86/include/asm/sev-common.h `GHCB_MSR_PREF_GPA_NONE`). */
export const GHCB_MSR_PREF_GPA_NONE = 0xfffffffffffffn;

/** Error value KVM puts in GHCBData[63:32] of a failed PSC response (GHCB_MSR_PSC_RESP_ERROR is bit 63 | 0x015). */
export const GHCB_MSR_PSC_RESP_ERROR = 0x8000_0000;

/** Page-state operations of a PSC request, GHCBData[55:52] (arch/x86/include/asm/sev-common.h `enum psc_op`). */
export const PSC_OP = { PRIVATE: 1, SHARED: 2, PSMASH: 3, UNSMASH: 4 } as const;

/** Feature bits of an HV_FT response, GHCBData[63:12] (sev-common.h `GHCB_HV_FT_*`). */
export const GHCB_HV_FEATURE_BIT = { SNP: 0, SNP_AP_CREATION: 1 } as const;

/** Termination reason sets, GHCBData[15:12] of TERM_REQ (sev-common.h `SEV_TERM_SET_*`). */
export const SEV_TERM_SET = { GEN: 0, LINUX: 1 } as const;

/** Termination reason codes, GHCBData[23:16]: set GEN (0) codes and set LINUX (1) codes (sev-common.h). */
export const SEV_TERM_REASON = {
  GEN: { GEN_REQ: 0, PROT_UNSUPPORTED: 1, SNP_UNSUPPORTED: 2 },
  LINUX: { REGISTER: 0, PSC: 1, PVALIDATE: 2, NOT_VMPL0: 3 },
} as const;

/** A CPUID output register as named by the GHCB MSR CPUID request, GHCBData[31:30]. */
export type GhcbCpuidReg = 'eax' | 'ebx' | 'ecx' | 'edx';
const CPUID_REGS: readonly GhcbCpuidReg[] = ['eax', 'ebx', 'ecx', 'edx'];

/** A GHCB MSR value, decoded. `ghcb-gpa` is the non-protocol case: low 12 bits zero, the GHCB's GPA. */
export type GhcbMsrMessage =
  | { readonly kind: 'ghcb-gpa'; readonly gpa: bigint }
  | { readonly kind: 'sev-info-req' }
  | {
      readonly kind: 'sev-info-resp';
      readonly maxVersion: number;
      readonly minVersion: number;
      readonly cBit: number;
    }
  | { readonly kind: 'cpuid-req'; readonly fn: number; readonly reg: GhcbCpuidReg }
  | { readonly kind: 'cpuid-resp'; readonly value: number; readonly reg: GhcbCpuidReg }
  | { readonly kind: 'ap-reset-hold-req' }
  | { readonly kind: 'ap-reset-hold-resp'; readonly result: bigint }
  | { readonly kind: 'pref-gpa-req' }
  | { readonly kind: 'pref-gpa-resp'; readonly gfn: bigint }
  | { readonly kind: 'reg-gpa-req'; readonly gfn: bigint }
  | { readonly kind: 'reg-gpa-resp'; readonly gfn: bigint }
  | { readonly kind: 'psc-req'; readonly gfn: bigint; readonly op: number }
  | { readonly kind: 'psc-resp'; readonly error: number }
  | { readonly kind: 'hv-features-req' }
  | { readonly kind: 'hv-features-resp'; readonly features: bigint }
  | { readonly kind: 'term-req'; readonly reasonSet: number; readonly reasonCode: number };

/** The `kind` of a GHCB MSR message. */
export type GhcbMsrKind = GhcbMsrMessage['kind'];

/** GHCBData[11:0] of a GHCB MSR value: 0 means the value is a GHCB GPA, anything else a protocol code. */
export function ghcbMsrCode(value: bigint): number {
  checkBigUint('GHCB MSR value', value, 64);
  return Number(value & GHCB_MSR_INFO_MASK);
}

/** True when `code` is one of {@link GHCB_MSR_CODE}. */
export function isKnownGhcbMsrCode(code: number): boolean {
  return (Object.values(GHCB_MSR_CODE) as number[]).includes(code);
}

const C = GHCB_MSR_CODE;
const big = (n: number) => BigInt(n);

/** Encodes a GHCB MSR message to the 64-bit MSR value (arch/x86/include/asm/sev-common.h macros). */
export function encodeGhcbMsr(msg: GhcbMsrMessage): bigint {
  switch (msg.kind) {
    case 'ghcb-gpa': {
      checkBigUint('GHCB GPA', msg.gpa, 64);
      if ((msg.gpa & GHCB_MSR_INFO_MASK) !== 0n)
        throw new CocoError(
          'UNALIGNED',
          `GHCB GPA ${hex(msg.gpa)} is not 4 KiB aligned (its low 12 bits select the MSR protocol)`,
          {
            gpa: msg.gpa,
          },
        );
      return msg.gpa;
    }
    case 'sev-info-req':
      return big(C.SEV_INFO_REQ);
    case 'sev-info-resp':
      return (
        (big(checkUint('SEV_INFO maxVersion', msg.maxVersion, 16)) << 48n) |
        (big(checkUint('SEV_INFO minVersion', msg.minVersion, 16)) << 32n) |
        (big(checkUint('SEV_INFO cBit', msg.cBit, 8)) << 24n) |
        big(C.SEV_INFO_RESP)
      );
    case 'cpuid-req':
      return (
        (big(checkUint('CPUID_REQ fn', msg.fn, 32)) << 32n) |
        (big(CPUID_REGS.indexOf(checkOneOf('CPUID_REQ reg', msg.reg, CPUID_REGS))) << 30n) |
        big(C.CPUID_REQ)
      );
    case 'cpuid-resp':
      return (
        (big(checkUint('CPUID_RESP value', msg.value, 32)) << 32n) |
        (big(CPUID_REGS.indexOf(checkOneOf('CPUID_RESP reg', msg.reg, CPUID_REGS))) << 30n) |
        big(C.CPUID_RESP)
      );
    case 'ap-reset-hold-req':
      return big(C.AP_RESET_HOLD_REQ);
    case 'ap-reset-hold-resp':
      return (checkBigUint('AP_RESET_HOLD result', msg.result, 52) << 12n) | big(C.AP_RESET_HOLD_RESP);
    case 'pref-gpa-req':
      return big(C.PREF_GPA_REQ);
    case 'pref-gpa-resp':
      return (checkBigUint('PREF_GPA gfn', msg.gfn, 52) << 12n) | big(C.PREF_GPA_RESP);
    case 'reg-gpa-req':
      return (checkBigUint('REG_GPA gfn', msg.gfn, 52) << 12n) | big(C.REG_GPA_REQ);
    case 'reg-gpa-resp':
      return (checkBigUint('REG_GPA gfn', msg.gfn, 52) << 12n) | big(C.REG_GPA_RESP);
    case 'psc-req':
      return (
        (big(checkUint('PSC_REQ op', msg.op, 4)) << 52n) |
        (checkBigUint('PSC_REQ gfn', msg.gfn, 40) << 12n) |
        big(C.PSC_REQ)
      );
    case 'psc-resp':
      return (big(checkUint('PSC_RESP error', msg.error, 32)) << 32n) | big(C.PSC_RESP);
    case 'hv-features-req':
      return big(C.HV_FT_REQ);
    case 'hv-features-resp':
      return (checkBigUint('HV_FT features', msg.features, 52) << 12n) | big(C.HV_FT_RESP);
    case 'term-req':
      return (
        (big(checkUint('TERM_REQ reasonCode', msg.reasonCode, 8)) << 16n) |
        (big(checkUint('TERM_REQ reasonSet', msg.reasonSet, 4)) << 12n) |
        big(C.TERM_REQ)
      );
    default: {
      const never: never = msg;
      throw new CocoError(
        'UNKNOWN_CODE',
        `GHCB MSR message kind ${JSON.stringify((never as { kind: unknown }).kind)} is not known`,
        {
          message: never,
        },
      );
    }
  }
}

/** Options of {@link decodeGhcbMsr}. */
export interface GhcbMsrDecodeOptions {
  /**
   * Reject reserved payload bits (default true). KVM itself ignores them, so a hypervisor model that
   * must answer as KVM does passes `false`.
   */
  readonly strict?: boolean;
}

/**
 * Decodes a GHCB MSR value (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol()). Low 12 bits zero → `ghcb-gpa`. Throws CocoError UNKNOWN_CODE
 * for a code not in {@link GHCB_MSR_CODE} and RESERVED_BITS for payload bits the message does not define.
 */
export function decodeGhcbMsr(value: bigint, opts: GhcbMsrDecodeOptions = {}): GhcbMsrMessage {
  const code = ghcbMsrCode(value);
  const strict = opts.strict ?? true;
  const reserved = (hi: number, lo: number, name: string) => {
    if (strict)
      rejectReserved(`GHCB MSR ${name} value`, value, genmask(hi, lo), `GHCBData[${hi}:${lo}] is reserved`);
  };
  switch (code) {
    case 0:
      return { kind: 'ghcb-gpa', gpa: value };
    case C.SEV_INFO_REQ:
      reserved(63, 12, 'SEV_INFO_REQ');
      return { kind: 'sev-info-req' };
    case C.SEV_INFO_RESP:
      reserved(23, 12, 'SEV_INFO_RESP');
      return {
        kind: 'sev-info-resp',
        maxVersion: Number(bitsOf(value, 63, 48)),
        minVersion: Number(bitsOf(value, 47, 32)),
        cBit: Number(bitsOf(value, 31, 24)),
      };
    case C.CPUID_REQ:
      reserved(29, 12, 'CPUID_REQ');
      return {
        kind: 'cpuid-req',
        fn: Number(bitsOf(value, 63, 32)),
        reg: CPUID_REGS[Number(bitsOf(value, 31, 30))]!,
      };
    case C.CPUID_RESP:
      reserved(29, 12, 'CPUID_RESP');
      return {
        kind: 'cpuid-resp',
        value: Number(bitsOf(value, 63, 32)),
        reg: CPUID_REGS[Number(bitsOf(value, 31, 30))]!,
      };
    case C.AP_RESET_HOLD_REQ:
      reserved(63, 12, 'AP_RESET_HOLD_REQ');
      return { kind: 'ap-reset-hold-req' };
    case C.AP_RESET_HOLD_RESP:
      return { kind: 'ap-reset-hold-resp', result: bitsOf(value, 63, 12) };
    case C.PREF_GPA_REQ:
      reserved(63, 12, 'PREF_GPA_REQ');
      return { kind: 'pref-gpa-req' };
    case C.PREF_GPA_RESP:
      return { kind: 'pref-gpa-resp', gfn: bitsOf(value, 63, 12) };
    case C.REG_GPA_REQ:
      return { kind: 'reg-gpa-req', gfn: bitsOf(value, 63, 12) };
    case C.REG_GPA_RESP:
      return { kind: 'reg-gpa-resp', gfn: bitsOf(value, 63, 12) };
    case C.PSC_REQ:
      reserved(63, 56, 'PSC_REQ');
      return { kind: 'psc-req', gfn: bitsOf(value, 51, 12), op: Number(bitsOf(value, 55, 52)) };
    case C.PSC_RESP:
      reserved(31, 12, 'PSC_RESP');
      return { kind: 'psc-resp', error: Number(bitsOf(value, 63, 32)) };
    case C.HV_FT_REQ:
      reserved(63, 12, 'HV_FT_REQ');
      return { kind: 'hv-features-req' };
    case C.HV_FT_RESP:
      return { kind: 'hv-features-resp', features: bitsOf(value, 63, 12) };
    case C.TERM_REQ:
      reserved(63, 24, 'TERM_REQ');
      return {
        kind: 'term-req',
        reasonSet: Number(bitsOf(value, 15, 12)),
        reasonCode: Number(bitsOf(value, 23, 16)),
      };
    default:
      throw new CocoError(
        'UNKNOWN_CODE',
        `GHCB MSR value ${hex(value)} carries code ${hex(code)}, which is not a GHCB MSR protocol request or response`,
        { value, code },
      );
  }
}
