// The kit table of TDs: the S-bit at GPAW − 1 (GPAW from the shape's paging mode), a boot-parameters
// region besides slot 0, KVM_TDX_INIT_VM after ucall, vCPUs set up through their boot parameters
// (the host cannot load a TD's registers), and the TDX launch (INIT_MEM_REGION, FINALIZE_VM).

import { supportedCpuid } from '../host-cpuid.js';
import type { TestVm } from '../kit-vm.js';
import { tdxAddBootRegion, tdxAddVcpu, tdxGpaw, tdxPostCreate, tdxTagPolicy, vmTdxLaunch } from '../tdx.js';
import type { KitOps } from './ops.js';

/** The table of tdx VMs. */
export const tdxKitOps: KitOps<TestVm> = Object.freeze<KitOps<TestVm>>({
  name: 'tdx',
  // A TD's S-bit follows the GPAW the kit configures at KVM_TDX_INIT_VM (48, or 52 for 5-level).
  tagPolicy: (shape) => tdxTagPolicy(tdxGpaw(shape.mode)),
  bootRegions: tdxAddBootRegion,
  postCreate: (vm) => tdxPostCreate(vm, supportedCpuid(vm.kvm)),
  addVcpu: tdxAddVcpu,
  launch: (vm) => vmTdxLaunch(vm),
});
