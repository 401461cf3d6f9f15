// Shared pieces of the simulated guest CPU (guest-cpu.ts … guest.ts): constants, the signals and
// unwinding error of guest operations, TLB and page-access types, little-endian helpers and the
// operand checks. A leaf of the guest's files.

import { CR, type Exit } from '@kvmtest/kvm';
import type { AccessDecision, ArchException, PageCipher } from './arch/ops.js';

export const U64 = (1n << 64n) - 1n;
/** MSR_EFER. */
export const MSR_EFER = 0xc000_0080;
/** CR0 bits software may set (kvm x86.h CR0_RESERVED_BITS is the complement); others are ignored on write. */
export const CR0_DEFINED =
  CR.CR0_PE |
  CR.CR0_MP |
  CR.CR0_EM |
  CR.CR0_TS |
  CR.CR0_ET |
  CR.CR0_NE |
  CR.CR0_WP |
  CR.CR0_AM |
  CR.CR0_NW |
  CR.CR0_CD |
  CR.CR0_PG;
/**
 * CR4 bits that exist (VME … SMXE, FSGSBASE, PCIDE, OSXSAVE, KL, SMEP, SMAP, PKE, CET, PKS, LAM_SUP);
 * any other bit is reserved and a write setting it is #GP (kvm_is_valid_cr4 / __cr4_reserved_bits).
 */
export const CR4_DEFINED =
  0x7fffn | (1n << 16n) | (1n << 17n) | (1n << 18n) | (1n << 19n) | (0xfn << 20n) | (1n << 24n) | (1n << 28n);
/** Bits of CR0 and CR4 whose change drops cached translations (kvm_post_set_cr0 / kvm_post_set_cr4). */
export const CR0_MMU_BITS = CR.CR0_PG | CR.CR0_WP | CR.CR0_PE;
export const CR4_MMU_BITS =
  CR.CR4_PAE | CR.CR4_PSE | CR.CR4_PGE | CR.CR4_LA57 | CR.CR4_PCIDE | (1n << 20n) | (1n << 21n);
export const TWO53 = 2 ** 53;
export const SHARED: AccessDecision = Object.freeze({ kind: 'shared' });
export const TLB_CAPACITY = 256;
/** KVM_ENOSYS / KVM_EINVAL / KVM_EOPNOTSUPP (include/uapi/linux/kvm_para.h), returned negated in RAX. */
export const KVM_ENOSYS = 1000n;
export const KVM_EINVAL = 22n;
export const KVM_EOPNOTSUPP = 95n;

/**
 * Unwinds a guest program that can no longer run (budget spent in a sync operation, a sync
 * memory-fault, a stuck or destroyed vCPU). Every later guest operation throws it again.
 */
export class GuestUnwind extends Error {
  override readonly name = 'GuestUnwind';
}

/** Signals from an exception handler that the faulting operation is abandoned / re-executed. */
export class SkipSignal {}
export class RetrySignal {}
export const SKIP = new SkipSignal();
export const RETRY = new RetrySignal();

/** Thrown by translation inside an async access: the access needs an exit (MMIO or a memory fault). */
export class AccessExit {
  constructor(
    readonly gpa: bigint,
    /** The memory-fault exit, or undefined for MMIO. */
    readonly fault: Exit | undefined,
  ) {}
}

/** A PageCipher that also reads / writes an aligned-or-not u64 inside one page (SEV's SevPageCipher). */
export interface U64Cipher extends PageCipher {
  readU64(host: Uint8Array, hostOffset: number, pageOffset: number): bigint;
  writeU64(host: Uint8Array, hostOffset: number, pageOffset: number, value: bigint): void;
}

export function u64CipherOf(c: PageCipher | undefined): U64Cipher | undefined {
  return c !== undefined &&
    typeof (c as Partial<U64Cipher>).readU64 === 'function' &&
    typeof (c as Partial<U64Cipher>).writeU64 === 'function'
    ? (c as U64Cipher)
    : undefined;
}

export interface TlbEntry {
  vpn: number;
  /** Plain memory: a view over the backing (undefined when a cipher is in the way). */
  view: DataView | undefined;
  bytes: Uint8Array;
  /** Byte offset of the 4 KiB page inside `bytes`. */
  base: number;
  writeOk: boolean;
  gpaPage: bigint;
  ptPage: boolean;
  cipher: PageCipher | undefined;
  /** `cipher` when it has its own u64 accessors (the u64 fast path of an encrypted page). */
  u64: U64Cipher | undefined;
}

/** How one GPA page is served, after the arch's classification. */
export type PageAccess =
  | {
      kind: 'ram';
      bytes: Uint8Array;
      base: number;
      cipher: PageCipher | undefined;
      readonlySlot: boolean;
    }
  | { kind: 'mmio'; readonlySlot: boolean }
  | { kind: 'fault'; exit: Exit }
  | { kind: 'exception'; e: ArchException };

export const views = new WeakMap<ArrayBufferLike, DataView>();
export function viewOf(bytes: Uint8Array): DataView {
  // One DataView per ArrayBuffer; offsets below add the Uint8Array's byteOffset.
  let v = views.get(bytes.buffer);
  if (v === undefined) {
    v = new DataView(bytes.buffer);
    views.set(bytes.buffer, v);
  }
  return v;
}

export const hex = (v: bigint | number) => `0x${v.toString(16)}`;

export function budgetDetail(g: { budget: number }, op: string): string {
  return (
    `the run's budget of ${g.budget} guest operations ran out inside the synchronous operation ${op}; a ` +
    'JavaScript guest cannot be suspended there, so the program was unwound (await an async guest operation ' +
    'in long loops, or raise SimConfig.runBudget)'
  );
}

export function describeFault(e: Exit): string {
  return e.reason === 'memory-fault'
    ? `memory-fault (${e.private ? 'private' : 'shared'} GPA ${hex(e.gpa)})`
    : e.reason;
}

/** Little-endian value of up to 8 bytes. */
export function le(b: Uint8Array): bigint {
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  return v;
}

export function leBytes(v: bigint, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = v;
  for (let i = 0; i < n; i++, x >>= 8n) out[i] = Number(x & 0xffn);
  return out;
}

/** Most bytes one readBytes copies (64 MiB): a guest-chosen length is bounded before the allocation. */
export const GUEST_MAX_READ = 64 << 20;

/** One past the largest value of a 1-, 2- or 4-byte port access. */
export const IO_LIMIT = { 1: 0x100, 2: 0x1_0000, 4: 0x1_0000_0000 } as const;

/** A value for an error message: its type and, for primitives, the value (bigints with their `n`). */
export function describeValue(v: unknown): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'bigint') return `bigint ${v}n`;
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (v === null || v === undefined || typeof v !== 'object')
    return `${v === null ? 'null' : typeof v} ${String(v)}`;
  return typeof v;
}

export function checkPort(op: string, port: number, size: number): void {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 0xffff)
    throw new TypeError(`${op}: port must be an integer in 0..0xffff, got ${describeValue(port)}`);
  if (size !== 1 && size !== 2 && size !== 4)
    throw new TypeError(`${op}: size must be 1, 2 or 4, got ${describeValue(size)}`);
}

export function checkMmio(op: string, gpa: bigint, size: number): void {
  if (typeof gpa !== 'bigint' || gpa < 0n || gpa > U64)
    throw new TypeError(
      `${op}: gpa must be a u64 bigint, got ${typeof gpa === 'bigint' ? String(gpa) : typeof gpa}`,
    );
  if (size !== 1 && size !== 2 && size !== 4 && size !== 8)
    throw new TypeError(`${op}: size must be 1, 2, 4 or 8, got ${describeValue(size)}`);
}
