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

/**
 * A segment register as KVM_GET/SET_SREGS carry it (`struct kvm_segment`): the selector and the
 * hidden part the CPU caches from the descriptor. The attribute fields are the uapi's u8s (`type`
 * is the 4-bit descriptor type, `dpl` 0–3, the others 0 or 1).
 */
export interface Segment {
  base: bigint;
  /** Byte-granular limit (u32): with `g` set, KVM reports the expanded limit (e.g. 0xffffffff). */
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  /** Default operation size (D/B). */
  db: number;
  /** Code or data segment (1) rather than a system segment (0). */
  s: number;
  /** 64-bit code segment. */
  l: number;
  g: number;
  avl: number;
  /** VMX's "segment unusable" bit (a null selector loaded in protected mode). */
  unusable: number;
}

/** A descriptor-table register, GDTR or IDTR (`struct kvm_dtable`): linear base and 16-bit limit. */
export interface DescriptorTable {
  base: bigint;
  limit: number;
}

/** The segment registers of `struct kvm_sregs`, in its order. */
export const SEGMENT_NAMES = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;

/** Name of a segment register in Sregs. */
export type SegmentName = (typeof SEGMENT_NAMES)[number];

/**
 * The numeric fields of a Segment with their uapi widths (u32 limit, u16 selector, u8 the rest),
 * in `struct kvm_segment` order after `base`.
 */
export const SEGMENT_FIELDS = [
  ['limit', 0xffff_ffff],
  ['selector', 0xffff],
  ['type', 0xff],
  ['present', 0xff],
  ['dpl', 0xff],
  ['db', 0xff],
  ['s', 0xff],
  ['l', 0xff],
  ['g', 0xff],
  ['avl', 0xff],
  ['unusable', 0xff],
] as const satisfies readonly (readonly [Exclude<keyof Segment, 'base'>, number])[];

/**
 * Segment, descriptor-table, control and paging state as KVM_GET_SREGS returns it (`struct
 * kvm_sregs` without CR8, the APIC base and the interrupt bitmap, which kvmtest leaves alone).
 */
export interface Sregs {
  cs: Segment;
  ds: Segment;
  es: Segment;
  fs: Segment;
  gs: Segment;
  ss: Segment;
  tr: Segment;
  ldt: Segment;
  gdt: DescriptorTable;
  idt: DescriptorTable;
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
}

/**
 * What KVM_SET_SREGS takes: the control registers and EFER always, segments and descriptor tables
 * optionally. KVM_SET_SREGS replaces the whole `struct kvm_sregs`; a segment or table left out here
 * keeps the vCPU's current value (the backend reads the current state and sets it back), so a
 * caller that sets only control registers changes nothing else, and get-modify-set round-trips.
 */
export type SregsInput = Pick<Sregs, 'cr0' | 'cr2' | 'cr3' | 'cr4' | 'efer'> &
  Partial<Pick<Sregs, SegmentName | 'gdt' | 'idt'>>;

/**
 * A flat 64-bit code segment as the selftests' kvm_seg_set_kernel_code_64bit() builds it
 * (tools/testing/selftests/kvm/lib/x86/processor.c): base 0, limit 0xffffffff page-granular,
 * execute/read/accessed (type 11), L=1, present, DPL 0.
 */
export function codeSegment64(selector: number): Segment {
  return { ...flatSegment(selector, 11), l: 1 };
}

/** A flat data segment as kvm_seg_set_kernel_data_64bit() builds it: like codeSegment64 with type 3 (read/write/accessed), L=0. */
export function dataSegment64(selector: number): Segment {
  return flatSegment(selector, 3);
}

/** A 64-bit TSS descriptor's hidden part as kvm_seg_set_tss_64bit() builds it: busy TSS (type 11), limit 0x67, present, S=0. */
export function tssSegment64(base: bigint, selector: number): Segment {
  return { ...flatSegment(selector, 11), base, limit: 0x67, s: 0, g: 0 };
}

/** A null segment as kvm_seg_set_unusable() builds it: every field zero but `unusable`. */
export function unusableSegment(): Segment {
  return segment({ unusable: 1 });
}

/** A `struct kvm_segment` with every field zero, then the given `fields` (a fresh object). */
export function segment(fields: Partial<Segment> = {}): Segment {
  return {
    base: 0n,
    limit: 0,
    selector: 0,
    type: 0,
    present: 0,
    dpl: 0,
    db: 0,
    s: 0,
    l: 0,
    g: 0,
    avl: 0,
    unusable: 0,
    ...fields,
  };
}

function flatSegment(selector: number, type: number): Segment {
  return segment({ limit: 0xffff_ffff, selector, type, present: 1, s: 1, g: 1 });
}

/** A copy of a Segment's fields (and of nothing else the object carries). */
function copySegment(g: Segment): Segment {
  const { base, limit, selector, type, present, dpl, db, s, l, avl, unusable } = g;
  return { base, limit, selector, type, present, dpl, db, s, l, g: g.g, avl, unusable };
}

/** A deep copy of an Sregs (it holds objects; each caller gets its own). */
export function copySregs(s: Sregs): Sregs {
  return mergeSregs(s, s);
}

/** The state KVM_SET_SREGS with `input` leaves: `input`'s fields over `current` (copies, never aliases). */
export function mergeSregs(current: Sregs, input: SregsInput): Sregs {
  const table = (t: DescriptorTable): DescriptorTable => ({ base: t.base, limit: t.limit });
  const seg = (n: SegmentName): Segment => copySegment(input[n] ?? current[n]);
  return {
    cs: seg('cs'),
    ds: seg('ds'),
    es: seg('es'),
    fs: seg('fs'),
    gs: seg('gs'),
    ss: seg('ss'),
    tr: seg('tr'),
    ldt: seg('ldt'),
    gdt: table(input.gdt ?? current.gdt),
    idt: table(input.idt ?? current.idt),
    cr0: input.cr0,
    cr2: input.cr2,
    cr3: input.cr3,
    cr4: input.cr4,
    efer: input.efer,
  };
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
