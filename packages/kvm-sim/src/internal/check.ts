// Argument checks shared by the ioctl entry points (a leaf module: it imports no other file here).

import { describeValue } from '@kvmtest/kvm';

const U64 = (1n << 64n) - 1n;

/** Throws TypeError unless `v` is an integer (the argument mistakes that are not kernel errors). */
export function checkInt(name: string, v: unknown, op: string): asserts v is number {
  if (typeof v !== 'number' || !Number.isInteger(v))
    throw new TypeError(
      `${op}: ${name} must be an integer, got ${typeof v === 'number' ? String(v) : describeValue(v)}`,
    );
}

/** Throws TypeError unless `v` is a bigint, RangeError unless it fits in a u64; returns it. */
export function checkU64(name: string, v: unknown, op: string): bigint {
  if (typeof v !== 'bigint') throw new TypeError(`${op}: ${name} must be a bigint, got ${describeValue(v)}`);
  if (v < 0n || v > U64) throw new RangeError(`${op}: ${name} 0x${v.toString(16)} does not fit in a u64`);
  return v;
}
