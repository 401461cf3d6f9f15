// The one place a VM type becomes a kit table: by the type's `launchFlow` trait (coco), chosen once
// when the kit makes (or adopts) a VM.

import { type LaunchFlow, VM_TYPE_TRAITS, type VmType, vmShape } from '@kvmtest/coco';
import { argTypeError, type Vcpu, type Vm } from '@kvmtest/kvm';
import { TestVm, testVmOf } from '../kit-vm.js';
import { defaultKitOps } from './default.js';
import type { KitOps } from './ops.js';
import { sevKitOps, snpKitOps } from './sev.js';
import { tdxKitOps } from './tdx.js';

/** The kit table of each launch flow. */
export const KIT_TABLES: Readonly<Record<LaunchFlow, KitOps<TestVm>>> = Object.freeze({
  none: defaultKitOps,
  sev: sevKitOps,
  snp: snpKitOps,
  tdx: tdxKitOps,
});

/** The kit table of a VM type. */
export function kitOpsFor(type: VmType): KitOps<TestVm> {
  return KIT_TABLES[VM_TYPE_TRAITS[type].launchFlow];
}

/**
 * Adopts a contract VM the kit did not make as a barebones kit VM (no memory, image or ucall; the
 * type's default policy), so kit helpers can keep launch state for it. Returns the existing kit VM
 * when there is one.
 */
export function adoptVm(vm: Vm): TestVm {
  if (typeof vm !== 'object' || vm === null || typeof (vm as Vm).createVcpu !== 'function')
    throw argTypeError('adoptVm', 'vm', 'a contract Vm', vm);
  const known = testVmOf(vm);
  if (known) return known;
  const shape = vmShape({ type: vm.type });
  return new TestVm({
    raw: vm,
    kvm: vm.kvm,
    shape,
    ops: kitOpsFor(shape.type),
    barebones: true,
    nrVcpus: 0,
    policy: VM_TYPE_TRAITS[shape.type].defaultPolicy,
  });
}

/** The kit VM a vCPU belongs to; the VM of a vCPU the kit did not make is adopted as barebones (adoptVm). */
export function testVmOfVcpu(vcpu: Vcpu): TestVm {
  return testVmOf(vcpu.vm) ?? adoptVm(vcpu.vm);
}
