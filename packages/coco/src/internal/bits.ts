// Bit-field helpers shared by the codecs. Numbers for fields of at most 32 bits, bigint above.

import { CocoError } from '../error.js';

const U64_LIMIT = 1n << 64n;

/** `0x…` for an integer number or bigint (negative values as `-0x…`; a non-integer number as it prints). */
export function hex(v: number | bigint): string {
  if (typeof v === 'number' && !Number.isInteger(v)) return String(v);
  return v < 0 ? `-0x${(-v).toString(16)}` : `0x${v.toString(16)}`;
}

/** Throws FIELD_RANGE unless `v` is an integer in [0, 2^bits). */
export function checkUint(what: string, v: number, bits: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= 2 ** bits) {
    throw new CocoError(
      'FIELD_RANGE',
      `${what} ${String(v)} does not fit in ${bits} bits (0..${hex(2 ** bits - 1)})`,
      {
        field: what,
        value: v,
        bits,
      },
    );
  }
  return v;
}

/** Throws FIELD_RANGE unless `v` is a bigint in [0, 2^bits). */
export function checkBigUint(what: string, v: bigint, bits: number): bigint {
  if (typeof v !== 'bigint' || v < 0n || v >= (bits === 64 ? U64_LIMIT : 1n << BigInt(bits))) {
    throw new CocoError(
      'FIELD_RANGE',
      `${what} ${typeof v === 'bigint' ? hex(v) : String(v)} does not fit in ${bits} bits (0..${hex((1n << BigInt(bits)) - 1n)})`,
      { field: what, value: v, bits },
    );
  }
  return v;
}

/** Throws FIELD_RANGE unless `v` is one of `allowed`. */
export function checkOneOf<T extends number | string>(what: string, v: T, allowed: readonly T[]): T {
  if (!allowed.includes(v)) {
    throw new CocoError('FIELD_RANGE', `${what} ${String(v)} is not one of ${allowed.join(', ')}`, {
      field: what,
      value: v,
      allowed,
    });
  }
  return v;
}

/** Mask of bits lo..hi inclusive, as a bigint. */
export function genmask(hi: number, lo: number): bigint {
  return ((1n << BigInt(hi - lo + 1)) - 1n) << BigInt(lo);
}

/** Extract bits lo..hi of `v` as a bigint. */
export function bitsOf(v: bigint, hi: number, lo: number): bigint {
  return (v >> BigInt(lo)) & ((1n << BigInt(hi - lo + 1)) - 1n);
}

/** Indices of the set bits of `v`. */
export function setBits(v: bigint): number[] {
  const out: number[] = [];
  for (let i = 0; v > 0n; i++, v >>= 1n) if (v & 1n) out.push(i);
  return out;
}

/** Throws RESERVED_BITS when `value & reservedMask` is non-zero, naming the bits. */
export function rejectReserved(what: string, value: bigint, reservedMask: bigint, rule: string): void {
  const bad = value & reservedMask;
  if (bad !== 0n) {
    const bits = setBits(bad);
    throw new CocoError(
      'RESERVED_BITS',
      `${what} ${hex(value)} has reserved bit${bits.length > 1 ? 's' : ''} ${bits.join(', ')} set (${rule})`,
      { field: what, value, reservedBits: bits },
    );
  }
}

/** Throws FIELD_RANGE unless `v` is a 64-bit unsigned bigint. */
export function checkU64(what: string, v: bigint): bigint {
  return checkBigUint(what, v, 64);
}
