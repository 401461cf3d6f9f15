// What a backend answers once and never changes, read once per backend: KVM_CAP_VM_TYPES and
// KVM_GET_SUPPORTED_CPUID.

import { CAP, type CpuidEntry, type Kvm } from '@kvmtest/kvm';

const typeMasks = new WeakMap<Kvm, number>();
const cpuids = new WeakMap<Kvm, readonly CpuidEntry[]>();

/** KVM_CAP_VM_TYPES of a backend, read once. */
export function vmTypesMask(kvm: Kvm): number {
  let mask = typeMasks.get(kvm);
  if (mask === undefined) {
    mask = kvm.checkExtension(CAP.VM_TYPES);
    typeMasks.set(kvm, mask);
  }
  return mask;
}

/** KVM_GET_SUPPORTED_CPUID of a backend, read once. */
export function supportedCpuid(kvm: Kvm): readonly CpuidEntry[] {
  let c = cpuids.get(kvm);
  if (c === undefined) {
    c = Object.freeze(kvm.getSupportedCpuid());
    cpuids.set(kvm, c);
  }
  return c;
}
