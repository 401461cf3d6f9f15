// The kit tables of the AMD types: SEV/SEV-ES (the SEV launch flow) and SEV-SNP (SNP's). Both tag
// private leaves with the C-bit, init with KVM_SEV_INIT2 after ucall (kvm_arch_vm_post_create in the
// selftests) and set a vCPU's registers from the host before launch.

import { SEV_CMD } from '@kvmtest/kvm';
import { sevLaunchRemaining } from '../sev.js';
import { vmSnpLaunch } from '../snp.js';
import type { TestVm } from '../kit-vm.js';
import { x86AddVcpu } from './default.js';
import type { KitOps } from './ops.js';
import { tagPolicyFor } from './tag.js';

function initSev2(vm: TestVm): void {
  // A failure (e.g. EBUSY when the ASIDs are exhausted) propagates as the KvmError itself.
  vm.raw.memEncryptOp({ id: SEV_CMD.INIT2, data: { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 } });
}

/** The table of sev and sev-es VMs. */
export const sevKitOps: KitOps<TestVm> = Object.freeze<KitOps<TestVm>>({
  name: 'sev',
  tagPolicy: (shape, cpuid) => tagPolicyFor(shape.type, cpuid),
  bootRegions: () => {},
  postCreate: initSev2,
  addVcpu: x86AddVcpu,
  launch: sevLaunchRemaining,
});

/** The table of sev-snp VMs (snp_vm_init: INIT2 only; KVM_CAP_EXIT_HYPERCALL comes with the launch). */
export const snpKitOps: KitOps<TestVm> = Object.freeze<KitOps<TestVm>>({
  name: 'snp',
  tagPolicy: (shape, cpuid) => tagPolicyFor(shape.type, cpuid),
  bootRegions: () => {},
  postCreate: initSev2,
  addVcpu: x86AddVcpu,
  launch: (vm) => vmSnpLaunch(vm),
});
