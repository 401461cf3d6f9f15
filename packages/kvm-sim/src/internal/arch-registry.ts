// The registry of the arch seam: the ONE place a VM type becomes an ops table. The seam's interface
// (arch/ops.ts) and the x86 base (arch/x86.ts) know nothing of the models; this file picks them:
// SEV and SEV-ES from ./sev over the AMD vendor base, SEV-SNP from ./sev/snp-arch-ops.ts, TDX from
// ./tdx, and AMD's vendor extras (the legacy SEV_INIT path) for DEFAULT and SW_PROTECTED VMs.

import type { VmType } from '@kvmtest/coco';
import { defaultOps, swProtectedOps, vendorBase } from './arch/x86.js';
import type { ArchOps } from './arch/ops.js';
import type { ResolvedConfig } from './config.js';
import { sevArchOps, sevVendorExtras } from './sev/arch-ops.js';
import { snpArchOps } from './sev/snp-arch-ops.js';
import { tdxArchOps } from './tdx/index.js';

/**
 * What an AMD host with the SEV model adds to DEFAULT and SW_PROTECTED VMs (svm_x86_ops'
 * mem_enc_ioctl, mem_enc_register_region, vm_copy/move_enc_context_from, the SEV MSRs and VMGEXIT
 * once legacy KVM_SEV_INIT / ES_INIT made the VM an SEV guest). Empty on a host without SEV, where the
 * core's missing-op answers (ENOTTY / EINVAL) reproduce `sev_enabled == false`.
 */
function amdExtras(cfg: ResolvedConfig): Partial<ArchOps> {
  return cfg.vendor === 'intel' ? {} : sevVendorExtras(cfg);
}

/**
 * Chooses the ops table for a VM of `type` on the host `cfg` (kvm_x86_ops plus the vendor's
 * per-type branches). On a host that is not Intel-only, DEFAULT and SW_PROTECTED VMs get AMD's vendor extras (the
 * legacy SEV_INIT path, COPY/MOVE_ENC_CONTEXT_FROM) — on the non-physical mixed host, every
 * non-TDX VM sees svm_x86_ops and TDX VMs see vt_x86_ops.
 */
export function selectArchOps(type: VmType, cfg: ResolvedConfig): ArchOps {
  switch (type) {
    case 'default':
      return defaultOps(cfg, amdExtras(cfg));
    case 'sw-protected':
      return swProtectedOps(cfg, amdExtras(cfg));
    case 'sev':
    case 'sev-es':
      // The SEV model over the AMD vendor base.
      return sevArchOps(type, cfg, vendorBase(cfg));
    case 'sev-snp':
      // The SNP model over the SEV-ES ops and the AMD vendor base.
      return snpArchOps(cfg, vendorBase(cfg));
    case 'tdx':
      // The TDX model (../tdx): vt_x86_ops for KVM_X86_TDX_VM (arch/x86/kvm/vmx/main.c).
      return tdxArchOps(cfg);
  }
}

/** Ops tables of every type, built once per host (KVM_CAP_VM_TYPES, device attributes, /dev/sev). */
export function hostArchOps(cfg: ResolvedConfig): ReadonlyMap<VmType, ArchOps> {
  return new Map(cfg.vmTypes.map((t) => [t, selectArchOps(t, cfg)] as const));
}
