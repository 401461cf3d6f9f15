// Argument checks at the kit's entry points: a wrong argument is a TypeError naming the call, the
// argument and the value (kvm's argTypeError), before any work — never an engine error from deeper down.

import { argTypeError, describeValue, type Kvm, type Vcpu } from '@kvmtest/kvm';

/** `opts` must be an options object or undefined. */
export function checkOptions(opts: unknown, op: string, name = 'opts'): void {
  if (opts !== undefined && (typeof opts !== 'object' || opts === null))
    throw argTypeError(op, name, 'an options object or undefined', opts);
}

/** `vcpu` must be a contract Vcpu. */
export function checkVcpu(vcpu: unknown, op: string): Vcpu {
  if (typeof vcpu !== 'object' || vcpu === null || typeof (vcpu as Vcpu).run !== 'function')
    throw argTypeError(op, 'vcpu', 'a Vcpu', vcpu);
  return vcpu as Vcpu;
}

/** `kvm` must be a contract Kvm. */
export function checkKvm(kvm: unknown, op: string): Kvm {
  if (typeof kvm !== 'object' || kvm === null || typeof (kvm as Kvm).checkExtension !== 'function')
    throw argTypeError(op, 'kvm', 'a Kvm (getKvm() or a backend)', kvm);
  return kvm as Kvm;
}

/** A u64 bigint guest address. */
export function checkGva(gva: unknown, op: string, name = 'gva'): bigint {
  if (typeof gva !== 'bigint' || gva < 0n || gva > 0xffff_ffff_ffff_ffffn)
    throw argTypeError(op, name, 'a u64 bigint', gva);
  return gva;
}

/** A global's name. */
export function checkName(name: unknown, op: string): string {
  if (typeof name !== 'string') throw argTypeError(op, 'name', 'a string', name);
  return name;
}

/** A value inside a message: numbers and bigints as they are, anything else described in parentheses. */
export function shown(v: unknown): string {
  return typeof v === 'number' || typeof v === 'bigint' ? String(v) : `(${describeValue(v)})`;
}
