// Ops tables of the confidential VM types. SEV, SEV-ES and SEV-SNP come from the SEV model (../sev/);
// the types whose models are not wired in yet are stand-ins that behave as a host WITHOUT that
// support: `available: false` keeps the type out of KVM_CAP_VM_TYPES, KVM_CREATE_VM answers EINVAL for
// it (kvm_arch_init_vm). Nothing is faked.

import type { VmType } from '@kvmtest/coco';
import type { ResolvedConfig } from '../config.js';
import { sevArchOps, sevVendorExtras } from '../sev/arch-ops.js';
import { snpArchOps } from '../sev/snp-arch-ops.js';
import type { ArchOps } from './ops.js';
import { vendorBase } from './x86.js';

function unavailable(name: string): ArchOps {
  return {
    name,
    available: false,
    vmInit() {
      // Never reached: the core rejects an unavailable type before vmInit (kvm_arch_init_vm -> EINVAL).
      throw new Error(`${name}: VM type not supported by this simulated host`);
    },
  };
}

/** Ops for `sev` / `sev-es` VMs: the SEV model (../sev/arch-ops.ts) over the AMD vendor base. */
export function sevFamilyOps(type: Extract<VmType, 'sev' | 'sev-es'>, cfg: ResolvedConfig): ArchOps {
  return sevArchOps(type, cfg, vendorBase(cfg));
}

/** Ops for `sev-snp` VMs: the SNP model (../sev/snp-arch-ops.ts) over the SEV-ES ops and the AMD vendor base. */
export function snpOps(cfg: ResolvedConfig): ArchOps {
  return snpArchOps(cfg, vendorBase(cfg));
}

/** Ops for `tdx` VMs (a later issue; its vcpuPrecreate must answer EIO before KVM_TDX_INIT_VM, spec §13.2). */
export function tdxOps(_cfg: ResolvedConfig): ArchOps {
  return unavailable('tdx-stub');
}

/**
 * What an AMD host with the SEV model adds to DEFAULT and SW_PROTECTED VMs (svm_x86_ops'
 * mem_enc_ioctl, mem_enc_register_region, vm_copy/move_enc_context_from, the SEV MSRs and VMGEXIT
 * once legacy KVM_SEV_INIT / ES_INIT made the VM an SEV guest). Empty on a host without SEV, where the
 * core's missing-op answers (ENOTTY / EINVAL) reproduce `sev_enabled == false`.
 */
export function amdSevVendorExtras(cfg: ResolvedConfig): Partial<ArchOps> {
  return sevVendorExtras(cfg);
}
