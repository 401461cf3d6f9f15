// copy_from_user / copy_to_user of the TDX command structs. The structs are plain objects the
// caller owns (the contract's TdxCommand, TdxInitVmData, …); a missing or mistyped field is what a
// bad user pointer is to the kernel: the copy fails with EFAULT.

import { type CpuidEntry, type HostPtr, KvmError } from '@kvmtest/kvm';

const U64 = (1n << 64n) - 1n;

/** Throws the KvmError `code` for `op`. */
export function fail(
  code: KvmError['code'],
  op: string,
  reason: string,
  details: Record<string, unknown> = {},
): never {
  throw new KvmError(code, op, reason, details);
}

/** Reads fields of a user struct; every failed read is EFAULT (copy_from_user). */
export class UserStruct {
  readonly obj: Record<string, unknown>;
  constructor(
    data: unknown,
    readonly op: string,
    readonly what: string,
  ) {
    if (typeof data !== 'object' || data === null || Array.isArray(data))
      fail(
        'EFAULT',
        op,
        `copy_from_user of ${what} failed: data is ${data === undefined ? 'NULL' : typeof data}`,
      );
    this.obj = data as Record<string, unknown>;
  }

  private bad(field: string, want: string): never {
    fail('EFAULT', this.op, `copy_from_user of ${this.what} failed: ${field} is not ${want}`, { field });
  }

  /** An unsigned integer field of `bits` bits (a number); `dflt` when absent. */
  uint(field: string, bits = 32, dflt?: number): number {
    const v = this.obj[field];
    if (v === undefined && dflt !== undefined) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= 2 ** bits)
      this.bad(field, `a u${bits}`);
    return v;
  }

  /** A u64 field (a bigint); `dflt` when absent. */
  u64(field: string, dflt?: bigint): bigint {
    const v = this.obj[field];
    if (v === undefined && dflt !== undefined) return dflt;
    if (typeof v !== 'bigint' || v < 0n || v > U64) this.bad(field, 'a u64 bigint');
    return v;
  }

  /** A fixed-size byte array field; all zero when absent. */
  bytes(field: string, length: number): Uint8Array {
    const v = this.obj[field];
    if (v === undefined) return new Uint8Array(length);
    if (!(v instanceof Uint8Array) || v.length !== length) this.bad(field, `a Uint8Array of ${length} bytes`);
    return v;
  }

  /** A user pointer (HostPtr) field; undefined is NULL. */
  ptr(field: string): HostPtr | undefined {
    const v = this.obj[field];
    if (v === undefined || v === null) return undefined;
    const p = v as { buffer?: unknown; offset?: unknown };
    if (
      typeof v !== 'object' ||
      !(p.buffer instanceof Uint8Array) ||
      typeof p.offset !== 'number' ||
      !Number.isSafeInteger(p.offset) ||
      p.offset < 0 ||
      p.offset > p.buffer.length
    )
      this.bad(field, 'a HostPtr');
    return v as HostPtr;
  }

  /** An array field (the header is read first; entries are copied separately). */
  array(field: string): readonly unknown[] {
    const v = this.obj[field];
    if (!Array.isArray(v)) this.bad(field, 'an array');
    return v;
  }
}

/** Copies one `struct kvm_cpuid_entry2` (every field a u32). */
export function readCpuidEntry(v: unknown, op: string, i: number): CpuidEntry {
  const s = new UserStruct(v, op, `cpuid entry ${i}`);
  return {
    function: s.uint('function'),
    index: s.uint('index'),
    flags: s.uint('flags'),
    eax: s.uint('eax'),
    ebx: s.uint('ebx'),
    ecx: s.uint('ecx'),
    edx: s.uint('edx'),
  };
}

/** The user address a HostPtr stands for, for the alignment rules (offset within its ArrayBuffer). */
export function hostAddr(p: HostPtr): number {
  return p.buffer.byteOffset + p.offset;
}
