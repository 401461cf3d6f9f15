// The package's single error class, its code table and the one place where host values become
// 64-bit guest quantities.

/** Codes of GuestMemoryError, one per rule the package enforces. */
export const GUEST_MEMORY_ERROR = {
  /** A new memslot overlaps an existing one. */
  OVERLAP: 'OVERLAP',
  /** An address or size is not aligned to the page size the operation needs. */
  UNALIGNED: 'UNALIGNED',
  /** A region or allocation of zero bytes. */
  ZERO_SIZE: 'ZERO_SIZE',
  /** A memslot id is already used by another region. */
  SLOT_IN_USE: 'SLOT_IN_USE',
  /** No region has this memslot id. */
  NO_SUCH_SLOT: 'NO_SUCH_SLOT',
  /** A guest-physical access touches a byte that no memslot backs. */
  UNBACKED: 'UNBACKED',
  /** The physical page allocator has no run of free pages that fits. */
  OUT_OF_PAGES: 'OUT_OF_PAGES',
  /** A mapping would overlap an existing mapping. */
  ALREADY_MAPPED: 'ALREADY_MAPPED',
  /** A guest-virtual address has no mapping. */
  NOT_MAPPED: 'NOT_MAPPED',
  /** A guest-virtual address is not canonical for the paging mode. */
  NON_CANONICAL: 'NON_CANONICAL',
  /** An address is outside what the paging mode or the memslot space can express. */
  BAD_ADDRESS: 'BAD_ADDRESS',
  /** A supplied backing buffer does not have the region's size. */
  BAD_BACKING: 'BAD_BACKING',
  /** Pages being freed are not all allocated (double free or never allocated). */
  NOT_ALLOCATED: 'NOT_ALLOCATED',
  /** The guest-virtual address space has no unused gap of the requested size. */
  OUT_OF_VA: 'OUT_OF_VA',
  /** A guest image declares an invalid global (duplicate name, zero size, oversized init). */
  BAD_GLOBAL: 'BAD_GLOBAL',
  /** A loaded image has no global of this name. */
  UNKNOWN_GLOBAL: 'UNKNOWN_GLOBAL',
  /** Bytes written to or read from a global do not fit its size. */
  SIZE_MISMATCH: 'SIZE_MISMATCH',
} as const;

/** One of the GUEST_MEMORY_ERROR codes. */
export type GuestMemoryErrorCode = (typeof GUEST_MEMORY_ERROR)[keyof typeof GUEST_MEMORY_ERROR];

/** A guest-memory rule was broken; `code` names the rule and `details` holds the values involved. */
export class GuestMemoryError extends Error {
  override readonly name = 'GuestMemoryError';
  readonly code: GuestMemoryErrorCode;
  readonly details: Record<string, unknown>;

  constructor(code: GuestMemoryErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.code = code;
    this.details = details;
  }
}

/** 2^64 − 1, the largest 64-bit guest quantity. */
export const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** Formats a bigint or number as `0x…` (negative values as `-0x…`). */
export function hex(v: bigint | number): string {
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || !Number.isInteger(v)) return String(v);
    v = BigInt(v);
  }
  return v < 0n ? `-0x${(-v).toString(16)}` : `0x${v.toString(16)}`;
}

/** A value for an error message: its type and, for primitives, the value. Never throws. */
export function describe(v: unknown): string {
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 60 ? `${v.slice(0, 60)}…` : v)}`;
  if (typeof v === 'bigint') return `bigint ${v}n`;
  if (typeof v === 'symbol') return 'a symbol';
  if (typeof v === 'number') return `number ${v}`;
  if (v === null) return 'null';
  if (typeof v === 'object' || typeof v === 'function') return typeof v;
  return `${typeof v} ${String(v)}`;
}

/** Validates a 64-bit guest quantity: TypeError unless a bigint, RangeError unless 0 ≤ v ≤ 2^64−1. */
export function toU64(v: unknown, what: string): bigint {
  if (typeof v !== 'bigint') throw new TypeError(`${what} must be a bigint, got ${describe(v)}`);
  if (v < 0n || v > U64_MAX)
    throw new RangeError(`${what} ${hex(v)} is outside the u64 range 0x0–0xffffffffffffffff`);
  return v;
}

/** Validates a non-negative safe integer (`number`), e.g. a byte length or page count. */
export function toCount(v: unknown, what: string, min = 0): number {
  if (typeof v !== 'number') throw new TypeError(`${what} must be a number, got ${describe(v)}`);
  if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`${what} ${v} must be an integer ≥ ${min}`);
  return v;
}

/** Validates a memslot id (u32, as KVM's `slot` field). */
export function toSlot(v: unknown): number {
  if (typeof v !== 'number') throw new TypeError(`memslot id must be a number, got ${describe(v)}`);
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff)
    throw new RangeError(`memslot id ${v} must be an integer in 0–0xffffffff`);
  return v;
}
