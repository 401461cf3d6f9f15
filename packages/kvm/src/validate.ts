// Argument checks shared by the packages above the contract (ucall, kvm-sim, kvm-linux, testkit): a
// wrong argument is a TypeError (wrong type) or RangeError (right type, out of range) whose message
// names the call, the argument and the value — never an engine error from deeper down.

import { SEGMENT_FIELDS, SEGMENT_NAMES, type SregsInput } from './regs.js';

/** A value as an error message shows it: the type, and for primitives the value (bigints with `n`,
 *  strings quoted and cut to 60 characters). Never throws, whatever it is given. */
export function describeValue(v: unknown): string {
  switch (typeof v) {
    case 'bigint':
      return `bigint ${v}n`;
    case 'number':
      return `number ${String(v)}`;
    case 'string':
      return `string ${JSON.stringify(v.length > 60 ? `${v.slice(0, 60)}…` : v)}`;
    case 'boolean':
      return `boolean ${v}`;
    case 'undefined':
      return 'undefined';
    case 'symbol':
      return 'a symbol';
    case 'function':
      return 'a function';
    default:
      if (v === null) return 'null';
      if (Array.isArray(v)) return `an array of ${v.length}`;
      if (v instanceof Uint8Array) return `a Uint8Array of ${v.length} bytes`;
      return 'an object';
  }
}

/** `where: name must be …, got …` as a TypeError. */
export function argTypeError(where: string, name: string, want: string, got: unknown): TypeError {
  return new TypeError(`${where}: ${name} must be ${want}, got ${describeValue(got)}`);
}

/** A safe-integer number in [min, max]: TypeError for another type or a fraction, RangeError outside. */
export function argInteger(where: string, name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v))
    throw argTypeError(where, name, `an integer number in ${min}..${max}`, v);
  if (v < min || v > max) throw new RangeError(`${where}: ${name} ${v} is outside ${min}..${max}`);
  return v;
}

/** A bigint in [min, max]: TypeError for another type (a number included), RangeError outside. */
export function argBigint(where: string, name: string, v: unknown, min: bigint, max: bigint): bigint {
  if (typeof v !== 'bigint') throw argTypeError(where, name, `a bigint in ${min}..${max}`, v);
  if (v < min || v > max)
    throw new RangeError(`${where}: ${name} ${v}n is outside ${min}..0x${max.toString(16)}`);
  return v;
}

/** A u64 as a bigint. */
export function argU64(where: string, name: string, v: unknown): bigint {
  return argBigint(where, name, v, 0n, 0xffff_ffff_ffff_ffffn);
}

/** A non-null object (not a function). */
export function argObject<T extends object>(where: string, name: string, v: unknown): T {
  if (typeof v !== 'object' || v === null) throw argTypeError(where, name, 'an object', v);
  return v as T;
}

/** One of `allowed` (compared with ===). */
export function argOneOf<T>(where: string, name: string, v: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(v as T))
    throw new (typeof v === typeof allowed[0] ? RangeError : TypeError)(
      `${where}: ${name} must be one of ${allowed.map((a) => String(a)).join(', ')}, got ${describeValue(v)}`,
    );
  return v as T;
}

/** A string of at most `maxLength` characters. */
export function argString(where: string, name: string, v: unknown, maxLength = 4096): string {
  if (typeof v !== 'string') throw argTypeError(where, name, 'a string', v);
  if (v.length > maxLength)
    throw new RangeError(`${where}: ${name} has ${v.length} characters, more than ${maxLength}`);
  return v;
}

/**
 * A KVM_SET_SREGS argument (SregsInput): the control registers and EFER as u64 bigints, and each
 * segment or descriptor table that is present with every field of its uapi width.
 */
export function argSregsInput(where: string, v: unknown): SregsInput {
  const s = argObject<Record<string, unknown>>(where, 'sregs', v);
  for (const n of ['cr0', 'cr2', 'cr3', 'cr4', 'efer'] as const) argU64(where, `sregs.${n}`, s[n]);
  for (const n of SEGMENT_NAMES) {
    if (s[n] === undefined) continue;
    const seg = argObject<Record<string, unknown>>(where, `sregs.${n}`, s[n]);
    argU64(where, `sregs.${n}.base`, seg.base);
    for (const [f, max] of SEGMENT_FIELDS) argInteger(where, `sregs.${n}.${f}`, seg[f], 0, max);
  }
  for (const n of ['gdt', 'idt'] as const) {
    if (s[n] === undefined) continue;
    const t = argObject<Record<string, unknown>>(where, `sregs.${n}`, s[n]);
    argU64(where, `sregs.${n}.base`, t.base);
    argInteger(where, `sregs.${n}.limit`, t.limit, 0, 0xffff);
  }
  return v as SregsInput;
}
