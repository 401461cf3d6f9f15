// @kvmtest/kvm-linux — the @kvmtest/kvm contract over the real /dev/kvm (ioctls through koffi).

export type { LinuxKvmOptions } from './internal/kvm.js';
export { KVM_API_VERSION, LinuxKvm, openLinuxKvm } from './internal/kvm.js';
export type { LinuxRunOptions } from './internal/vcpu.js';
export { LinuxVcpu } from './internal/vcpu.js';
export type { LinuxSlot } from './internal/vm.js';
export { LinuxVm } from './internal/vm.js';
export { kvmAvailability } from './internal/probe.js';
