// TDX guest-side ABI: TDCALL leaves, the TDG.VP.VMCALL register convention, and the #VE I/O qualification.

import { CocoError } from './error.js';
import { checkBigUint, checkOneOf, checkUint, hex } from './internal/bits.js';

/** x86 exception vectors, including SEV's #VC (29) and TDX's #VE (20) (arch/x86/include/asm/trapnr.h). */
export const EXCEPTION_VECTOR = {
  DE: 0,
  DB: 1,
  NMI: 2,
  BP: 3,
  OF: 4,
  BR: 5,
  UD: 6,
  NM: 7,
  DF: 8,
  TS: 10,
  NP: 11,
  SS: 12,
  GP: 13,
  PF: 14,
  MF: 16,
  AC: 17,
  MC: 18,
  XM: 19,
  /** TDX virtualization exception; the guest then asks the VMM with TDG.VP.VMCALL. */
  VE: 20,
  CP: 21,
  HV: 28,
  /** SEV-ES/SNP VMM communication exception; its error code is the SVM exit code (e.g. 0x7B for IOIO). */
  VC: 29,
  SX: 30,
} as const;

/** TDCALL leaf numbers, passed in RAX (arch/x86/include/asm/shared/tdx.h `TDG_*`). */
export const TDCALL_LEAF = {
  VP_VMCALL: 0,
  VP_INFO: 1,
  MR_RTMR_EXTEND: 2,
  VP_VEINFO_GET: 3,
  MR_REPORT: 4,
  MEM_PAGE_ACCEPT: 6,
  VM_RD: 7,
  VM_WR: 8,
} as const;

/** R10 of TDG.VP.VMCALL: 0 selects a standard GHCI call; non-zero is vendor-specific (KVM hypercall; arch/x86/kvm/vmx/tdx.c: handle_tdvmcall()). */
export const TDVMCALL_STANDARD = 0n;

/**
 * TDG.VP.VMCALL sub-functions in R11: below 0x10000 a VMX exit reason, above the GHCI leaves
 * (arch/x86/include/asm/shared/tdx.h, arch/x86/include/uapi/asm/vmx.h).
 */
export const TDVMCALL_SUBFUNCTION = {
  CPUID: 10,
  HLT: 12,
  VMCALL: 18,
  IO: 30, // Instruction.IO (EXIT_REASON_IO_INSTRUCTION)
  RDMSR: 31,
  WRMSR: 32,
  REQUEST_MMIO: 48, // #VE.RequestMMIO (EXIT_REASON_EPT_VIOLATION)
  WBINVD: 54,
  GET_TD_VM_CALL_INFO: 0x10000,
  MAP_GPA: 0x10001,
  GET_QUOTE: 0x10002,
  REPORT_FATAL_ERROR: 0x10003,
} as const;

/** TDG.VP.VMCALL completion status returned in R10 (arch/x86/include/asm/shared/tdx.h `TDVMCALL_STATUS_*`). */
export const TDVMCALL_STATUS = {
  SUCCESS: 0n,
  RETRY: 1n,
  INVALID_OPERAND: 0x8000_0000_0000_0000n,
  ALIGN_ERROR: 0x8000_0000_0000_0002n,
  SUBFUNC_UNSUPPORTED: 0x8000_0000_0000_0003n,
} as const;

/** The registers of a TDG.VP.VMCALL request or reply, each a u64 (arch/x86/kvm/vmx/tdx.c reads them in handle_tdvmcall()). */
export interface TdvmcallRegs {
  readonly r10: bigint;
  readonly r11: bigint;
  readonly r12: bigint;
  readonly r13: bigint;
  readonly r14: bigint;
  readonly r15: bigint;
}

/** A port I/O request made through TDG.VP.VMCALL<Instruction.IO>. `value` only for a write. */
export interface TdxIoRequest {
  readonly port: number;
  readonly size: 1 | 2 | 4;
  readonly write: boolean;
  readonly value?: bigint;
}

/** An MMIO request made through TDG.VP.VMCALL<#VE.RequestMMIO>. `value` only for a write. */
export interface TdxMmioRequest {
  readonly gpa: bigint;
  readonly size: 1 | 2 | 4 | 8;
  readonly write: boolean;
  readonly value?: bigint;
}

/** Options of the TDVMCALL request decoders. */
export interface TdvmcallDecodeOptions {
  /** Reject a write value wider than the access size (default true); `false` truncates it as KVM does. */
  readonly strict?: boolean;
}

function sizedValue(what: string, req: { size: number; write: boolean; value?: bigint }): bigint {
  if (!req.write) {
    if (req.value !== undefined && req.value !== 0n)
      throw new CocoError(
        'INVALID_COMBINATION',
        `${what} read carries a value (${hex(req.value)}); only writes do`,
        {
          value: req.value,
        },
      );
    return 0n;
  }
  return checkBigUint(`${what} value`, req.value ?? 0n, req.size * 8);
}

/** Encodes an I/O request to TDG.VP.VMCALL registers: R10 0, R11 30, R12 size, R13 1=write, R14 port, R15 value (arch/x86/kvm/vmx/tdx.c: tdx_emulate_io()). */
export function encodeTdxIoRequest(req: TdxIoRequest): TdvmcallRegs {
  checkOneOf('TDX I/O size', req.size, [1, 2, 4] as const);
  return Object.freeze({
    r10: TDVMCALL_STANDARD,
    r11: BigInt(TDVMCALL_SUBFUNCTION.IO),
    r12: BigInt(req.size),
    r13: req.write ? 1n : 0n,
    r14: BigInt(checkUint('TDX I/O port', req.port, 16)),
    r15: sizedValue('TDX I/O', req),
  });
}

function decodeCommon(what: string, regs: TdvmcallRegs, subfn: number, sizes: readonly number[]) {
  for (const r of ['r10', 'r11', 'r12', 'r13', 'r14', 'r15'] as const)
    checkBigUint(`${what} ${r}`, regs[r], 64);
  if (regs.r10 !== TDVMCALL_STANDARD)
    throw new CocoError('INVALID_COMBINATION', `${what}: R10 ${hex(regs.r10)} is not 0 (standard TDVMCALL)`, {
      r10: regs.r10,
    });
  if (regs.r11 !== BigInt(subfn))
    throw new CocoError('UNKNOWN_CODE', `${what}: R11 ${hex(regs.r11)} is not sub-function ${subfn}`, {
      r11: regs.r11,
    });
  const size = Number(regs.r12);
  if (!sizes.includes(size) || regs.r12 > 8n)
    throw new CocoError(
      'FIELD_RANGE',
      `${what}: R12 size ${hex(regs.r12)} is not one of ${sizes.join(', ')}`,
      { r12: regs.r12 },
    );
  if (regs.r13 !== 0n && regs.r13 !== 1n)
    throw new CocoError(
      'FIELD_RANGE',
      `${what}: R13 direction ${hex(regs.r13)} is not 0 (read) or 1 (write)`,
      { r13: regs.r13 },
    );
  return { size, write: regs.r13 === 1n };
}

function writeValue(what: string, r15: bigint, size: number, strict: boolean): bigint {
  const mask = (1n << BigInt(size * 8)) - 1n;
  if (strict && (r15 & ~mask) !== 0n)
    throw new CocoError(
      'FIELD_RANGE',
      `${what}: R15 value ${hex(r15)} is wider than the ${size}-byte access`,
      { r15, size },
    );
  return r15 & mask;
}

/**
 * Decodes TDG.VP.VMCALL<Instruction.IO> registers. Rejects R10 ≠ 0, R11 ≠ 30, size not 1/2/4, direction
 * not 0/1 (KVM answers those with INVALID_OPERAND), and a port above 0xFFFF. R15 is ignored for a read.
 */
export function decodeTdxIoRequest(regs: TdvmcallRegs, opts: TdvmcallDecodeOptions = {}): TdxIoRequest {
  const { size, write } = decodeCommon('TDVMCALL Instruction.IO', regs, TDVMCALL_SUBFUNCTION.IO, [1, 2, 4]);
  if (regs.r14 > 0xffffn)
    throw new CocoError('FIELD_RANGE', `TDVMCALL Instruction.IO: R14 port ${hex(regs.r14)} is above 0xffff`, {
      r14: regs.r14,
    });
  const port = Number(regs.r14);
  const s = size as 1 | 2 | 4;
  return Object.freeze(
    write
      ? {
          port,
          size: s,
          write,
          value: writeValue('TDVMCALL Instruction.IO', regs.r15, size, opts.strict ?? true),
        }
      : { port, size: s, write },
  );
}

/** Encodes an MMIO request: R10 0, R11 48, R12 size, R13 1=write, R14 GPA, R15 value (GHCI #VE.RequestMMIO). */
export function encodeTdxMmioRequest(req: TdxMmioRequest): TdvmcallRegs {
  checkOneOf('TDX MMIO size', req.size, [1, 2, 4, 8] as const);
  return Object.freeze({
    r10: TDVMCALL_STANDARD,
    r11: BigInt(TDVMCALL_SUBFUNCTION.REQUEST_MMIO),
    r12: BigInt(req.size),
    r13: req.write ? 1n : 0n,
    r14: checkBigUint('TDX MMIO gpa', req.gpa, 64),
    r15: sizedValue('TDX MMIO', req),
  });
}

/** Decodes TDG.VP.VMCALL<#VE.RequestMMIO> registers; same rules as {@link decodeTdxIoRequest} with sizes 1/2/4/8. */
export function decodeTdxMmioRequest(regs: TdvmcallRegs, opts: TdvmcallDecodeOptions = {}): TdxMmioRequest {
  const { size, write } = decodeCommon(
    'TDVMCALL #VE.RequestMMIO',
    regs,
    TDVMCALL_SUBFUNCTION.REQUEST_MMIO,
    [1, 2, 4, 8],
  );
  const s = size as 1 | 2 | 4 | 8;
  return Object.freeze(
    write
      ? {
          gpa: regs.r14,
          size: s,
          write,
          value: writeValue('TDVMCALL #VE.RequestMMIO', regs.r15, size, opts.strict ?? true),
        }
      : { gpa: regs.r14, size: s, write },
  );
}

/** The name of a TDVMCALL status in R10 (`SUCCESS`, `INVALID_OPERAND`, …), or undefined. */
export function tdvmcallStatusName(r10: bigint): keyof typeof TDVMCALL_STATUS | undefined {
  for (const [k, v] of Object.entries(TDVMCALL_STATUS))
    if (v === r10) return k as keyof typeof TDVMCALL_STATUS;
  return undefined;
}

/** A decoded VMX I/O exit qualification, as a TD's #VE reports it for IN/OUT. */
export interface VmxIoQualification {
  readonly direction: 'in' | 'out';
  readonly size: 1 | 2 | 4;
  readonly port: number;
  readonly string: boolean;
  readonly rep: boolean;
  /** Port given as an immediate operand (bit 6), else in DX. */
  readonly immediate: boolean;
}

/**
 * Encodes the VMX I/O exit qualification: bits 2:0 size−1, bit 3 IN, bit 4 string, bit 5 REP,
 * bit 6 immediate operand, bits 31:16 port (Intel SDM, "Exit Qualification for I/O Instructions").
 */
export function encodeVmxIoQualification(q: VmxIoQualification): bigint {
  const size = checkOneOf('VMX I/O size', q.size, [1, 2, 4] as const);
  let v = size - 1;
  if (q.direction === 'in') v |= 1 << 3;
  else checkOneOf('VMX I/O direction', q.direction, ['in', 'out'] as const);
  if (q.string) v |= 1 << 4;
  if (q.rep) v |= 1 << 5;
  if (q.immediate) v |= 1 << 6;
  v |= checkUint('VMX I/O port', q.port, 16) << 16;
  return BigInt(v >>> 0);
}

/** Decodes a VMX I/O exit qualification; rejects size code 2 or above 3, and bits 15:7 or above 31 set. */
export function decodeVmxIoQualification(value: bigint): VmxIoQualification {
  checkBigUint('VMX I/O qualification', value, 64);
  const reserved = value & ~0xffff007fn;
  if (reserved !== 0n)
    throw new CocoError(
      'RESERVED_BITS',
      `VMX I/O qualification ${hex(value)} has reserved bits set (${hex(reserved)}; bits 15:7 and 63:32 are reserved)`,
      {
        value,
      },
    );
  const n = Number(value);
  const code = n & 7;
  if (code !== 0 && code !== 1 && code !== 3)
    throw new CocoError(
      'FIELD_RANGE',
      `VMX I/O qualification ${hex(value)} has size code ${code}; only 0, 1, 3 (1, 2, 4 bytes) exist`,
      {
        value,
      },
    );
  return Object.freeze({
    direction: n & (1 << 3) ? 'in' : 'out',
    size: (code + 1) as 1 | 2 | 4,
    port: n >>> 16,
    string: (n & (1 << 4)) !== 0,
    rep: (n & (1 << 5)) !== 0,
    immediate: (n & (1 << 6)) !== 0,
  });
}
