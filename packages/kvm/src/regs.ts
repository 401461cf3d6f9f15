// Register files as KVM_GET_REGS / KVM_GET_SREGS and CPUID entries as KVM_SET_CPUID2 see them.

/** General-purpose registers, RIP and RFLAGS (`struct kvm_regs`). */
export interface Regs {
  rax: bigint;
  rbx: bigint;
  rcx: bigint;
  rdx: bigint;
  rsi: bigint;
  rdi: bigint;
  rsp: bigint;
  rbp: bigint;
  r8: bigint;
  r9: bigint;
  r10: bigint;
  r11: bigint;
  r12: bigint;
  r13: bigint;
  r14: bigint;
  r15: bigint;
  rip: bigint;
  rflags: bigint;
}

/** Names of the Regs fields, in `struct kvm_regs` order. */
export const REG_NAMES = [
  'rax',
  'rbx',
  'rcx',
  'rdx',
  'rsi',
  'rdi',
  'rsp',
  'rbp',
  'r8',
  'r9',
  'r10',
  'r11',
  'r12',
  'r13',
  'r14',
  'r15',
  'rip',
  'rflags',
] as const satisfies readonly (keyof Regs)[];

/** A register file with every register zero and RFLAGS bit 1 set (the architectural reset value). */
export function zeroRegs(): Regs {
  const r = Object.fromEntries(REG_NAMES.map((n) => [n, 0n])) as unknown as Regs;
  r.rflags = 2n;
  return r;
}

/** Control and paging state (the parts of `struct kvm_sregs` kvmtest uses). */
export interface Sregs {
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
}

/** Control-register and EFER bits used for 64-bit paging and by a guest loading its own control state. */
export const CR = {
  CR0_PE: 1n << 0n,
  CR0_MP: 1n << 1n,
  CR0_EM: 1n << 2n,
  CR0_TS: 1n << 3n,
  CR0_ET: 1n << 4n,
  CR0_NE: 1n << 5n,
  CR0_WP: 1n << 16n,
  CR0_AM: 1n << 18n,
  CR0_NW: 1n << 29n,
  CR0_CD: 1n << 30n,
  CR0_PG: 1n << 31n,
  CR4_PSE: 1n << 4n,
  CR4_PAE: 1n << 5n,
  CR4_MCE: 1n << 6n,
  CR4_PGE: 1n << 7n,
  CR4_LA57: 1n << 12n,
  CR4_VMXE: 1n << 13n,
  CR4_SMXE: 1n << 14n,
  CR4_PCIDE: 1n << 17n,
  CR4_OSXSAVE: 1n << 18n,
  EFER_SCE: 1n << 0n,
  EFER_LME: 1n << 8n,
  EFER_LMA: 1n << 10n,
  EFER_NXE: 1n << 11n,
} as const;

/** One CPUID leaf/subleaf result (`struct kvm_cpuid_entry2`). */
export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** `flags` bit of a CpuidEntry whose subleaf (`index`) is significant. */
export const CPUID_FLAG_SIGNIFICANT_INDEX = 1;

/** Finds the entry for `fn`/`index` (index ignored unless the entry says it is significant). */
export function findCpuid(entries: readonly CpuidEntry[], fn: number, index = 0): CpuidEntry | undefined {
  return entries.find(
    (e) => e.function === fn && ((e.flags & CPUID_FLAG_SIGNIFICANT_INDEX) === 0 || e.index === index),
  );
}

/** XSAVE state-component bits (XCR0, XSTATE_BV): x87 (FP), SSE (XMM, MXCSR) and AVX (the upper YMM halves). */
export const XFEATURE = {
  FP: 1n << 0n,
  SSE: 1n << 1n,
  YMM: 1n << 2n,
} as const;

/**
 * Byte offsets of the standard-format XSAVE area as `struct kvm_xsave` carries it (4096 bytes,
 * little-endian): the legacy FXSAVE region (x87 control/status, MXCSR, ST0–7 in 16-byte slots,
 * XMM0–15), the XSAVE header (XSTATE_BV, XCOMP_BV, reserved) and the AVX component (YMM_Hi128).
 */
export const XSAVE_LAYOUT = {
  size: 4096,
  fcw: 0,
  fsw: 2,
  /** Abridged tag word (one bit per register: 1 = valid). */
  ftw: 4,
  fop: 6,
  fip: 8,
  fdp: 16,
  mxcsr: 24,
  mxcsrMask: 28,
  st: 32,
  xmm: 160,
  xmmEnd: 416,
  xstateBv: 512,
  xcompBv: 520,
  headerReserved: 528,
  headerEnd: 576,
  ymmHi: 576,
  ymmHiEnd: 832,
} as const;

/** One extended control register value (`struct kvm_xcr`); XCR0 (index 0) is the XSAVE feature mask. */
export interface XcrEntry {
  xcr: number;
  value: bigint;
}
