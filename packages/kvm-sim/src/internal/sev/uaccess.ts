// User-memory access as sev.c sees it: copy_from_user / copy_to_user of command structs (plain
// objects here), user pointers (HostPtr) with a synthetic user virtual address each, and page pinning
// (`sev_pin_memory`) with its EINVAL / ENOMEM rules.

import { type Errno, type HostPtr, KvmError } from '@kvmtest/kvm';
import { bufferId } from './crypto.js';

/** Largest blob psp_copy_user_blob accepts (SEV_FW_BLOB_MAX_SIZE, 16 KiB; drivers/crypto/ccp/sev-dev.c). */
export const SEV_FW_BLOB_MAX_SIZE = 0x4000;
/** Host page size. */
export const PAGE_SIZE = 4096;

const U64_MAX = (1n << 64n) - 1n;
// Each host ArrayBuffer gets its own 64 GiB window of a synthetic user address space, page aligned.
const UADDR_BASE = 0x1000_0000_0000n;

/** The thrower every handler uses: a KvmError for `op` with the errno and a reason. */
export function fail(
  code: Errno,
  op: string,
  reason: string,
  details: Record<string, unknown> = {},
  fw?: number,
): never {
  throw new KvmError(code, op, reason, details, fw);
}

/** True when `v` is a HostPtr (a Uint8Array and an in-range integer offset). */
export function isHostPtr(v: unknown): v is HostPtr {
  if (typeof v !== 'object' || v === null) return false;
  const p = v as { buffer?: unknown; offset?: unknown };
  return (
    p.buffer instanceof Uint8Array &&
    typeof p.offset === 'number' &&
    Number.isSafeInteger(p.offset) &&
    p.offset >= 0 &&
    p.offset <= p.buffer.length
  );
}

/** The synthetic user virtual address of a HostPtr (0 for NULL). */
export function uaddrOf(p: HostPtr | undefined): bigint {
  if (p === undefined) return 0n;
  return UADDR_BASE + (BigInt(bufferId(p.buffer.buffer)) << 36n) + BigInt(p.buffer.byteOffset + p.offset);
}

/** A field reader over a user struct: each getter fails the copy (EFAULT) on a missing or mistyped field. */
export class StructReader {
  readonly #obj: Record<string, unknown>;
  readonly #op: string;
  constructor(data: unknown, op: string, what: string) {
    if (typeof data !== 'object' || data === null)
      fail(
        'EFAULT',
        op,
        `copy_from_user of ${what} failed: data is ${data === undefined ? 'NULL' : typeof data}`,
      );
    this.#obj = data as Record<string, unknown>;
    this.#op = op;
  }
  #bad(field: string, want: string): never {
    fail('EFAULT', this.#op, `copy_from_user failed: field ${field} is not ${want}`, { field });
  }
  /** A u32 (or u16/u8 with `bits`) field; `undefined` reads as `dflt` when given. */
  uint(field: string, bits = 32, dflt?: number): number {
    const v = this.#obj[field];
    if (v === undefined && dflt !== undefined) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= 2 ** bits)
      this.#bad(field, `a u${bits}`);
    return v;
  }
  /** A u64 field given as bigint. */
  u64(field: string): bigint {
    const v = this.#obj[field];
    if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) this.#bad(field, 'a u64 bigint');
    return v;
  }
  /** A user pointer: a HostPtr or undefined (NULL). */
  ptr(field: string): HostPtr | undefined {
    const v = this.#obj[field];
    if (v === undefined) return undefined;
    if (!isHostPtr(v)) this.#bad(field, 'a HostPtr');
    return v;
  }
  /** A blob given as bytes (its uaddr/len pair): undefined is a NULL pointer. */
  bytes(field: string, length?: number): Uint8Array | undefined {
    const v = this.#obj[field];
    if (v === undefined) return undefined;
    if (!(v instanceof Uint8Array) || (length !== undefined && v.length !== length))
      this.#bad(field, length === undefined ? 'a Uint8Array' : `a Uint8Array of ${length} bytes`);
    return v;
  }
}

/** copy_to_user into a user struct: assigns the fields, EFAULT when the object refuses the write. */
export function copyToUser(target: unknown, fields: Record<string, unknown>, op: string, what: string): void {
  if (typeof target !== 'object' || target === null || Object.isFrozen(target))
    fail('EFAULT', op, `copy_to_user of ${what} failed: the destination is not writable`);
  try {
    Object.assign(target, fields);
  } catch {
    fail('EFAULT', op, `copy_to_user of ${what} failed: the destination is not writable`);
  }
}

/** copy_to_user of bytes to a user pointer: EFAULT when NULL or beyond the buffer. */
export function copyBytesToUser(p: HostPtr | undefined, bytes: Uint8Array, op: string, what: string): void {
  if (p === undefined || p.offset + bytes.length > p.buffer.length)
    fail('EFAULT', op, `copy_to_user of ${what} (${bytes.length} bytes) failed: destination not mapped`);
  p.buffer.set(bytes, p.offset);
}

/** copy_from_user of bytes from a user pointer: EFAULT when NULL or beyond the buffer. */
export function copyBytesFromUser(p: HostPtr | undefined, len: number, op: string, what: string): Uint8Array {
  if (p === undefined || p.offset + len > p.buffer.length)
    fail('EFAULT', op, `copy_from_user of ${what} (${len} bytes) failed: source not mapped`);
  return p.buffer.slice(p.offset, p.offset + len);
}

/** `psp_copy_user_blob`: NULL or empty → EINVAL, over 16 KiB → EINVAL (drivers/crypto/ccp/sev-dev.c). */
export function pspCopyUserBlob(blob: Uint8Array | undefined, op: string, what: string): Uint8Array {
  if (blob === undefined || blob.length === 0) fail('EINVAL', op, `${what} blob is NULL or empty`);
  if (blob.length > SEV_FW_BLOB_MAX_SIZE)
    fail('EINVAL', op, `${what} blob is ${blob.length} bytes, over the 16 KiB limit (SEV_FW_BLOB_MAX_SIZE)`);
  return blob.slice();
}

/** A pinned user range: the host bytes behind it and the page count charged to `pages_locked`. */
export interface Pinned {
  readonly buffer: Uint8Array;
  readonly start: number;
  readonly len: number;
  readonly npages: number;
  readonly uaddr: bigint;
}

/**
 * `sev_pin_memory` (arch/x86/kvm/svm/sev.c): `len` 0 or a range that wraps → EINVAL; more pages than the memlock
 * limit allows → ENOMEM; pages that are not mapped (NULL, past the buffer) → ENOMEM. Does not charge
 * `pages_locked`; the caller adds `npages` when it keeps the pin.
 */
export function pinMemory(
  p: HostPtr | undefined,
  len: bigint,
  pagesLocked: number,
  memlockLimitPages: number,
  op: string,
): Pinned {
  const uaddr = uaddrOf(p);
  if (len === 0n || uaddr + len > U64_MAX + 1n)
    fail('EINVAL', op, `range of ${len} bytes is empty or wraps around`);
  const first = uaddr >> 12n;
  const last = (uaddr + len - 1n) >> 12n;
  const npages = Number(last - first + 1n);
  if (pagesLocked + npages > memlockLimitPages)
    fail('ENOMEM', op, `${pagesLocked + npages} locked pages exceed the lock limit of ${memlockLimitPages}`);
  if (p === undefined || BigInt(p.offset) + len > BigInt(p.buffer.length))
    fail('ENOMEM', op, `failure pinning ${npages} pages: the range is not mapped`);
  return { buffer: p.buffer, start: p.offset, len: Number(len), npages, uaddr };
}
