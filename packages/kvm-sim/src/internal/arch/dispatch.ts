// The ONE place a VM type becomes an ops table.

import type { VmType } from '@kvmtest/coco';
import type { ResolvedConfig } from '../config.js';
import type { ArchOps } from './ops.js';
import { tdxArchOps } from '../tdx/index.js';
import { amdSevVendorExtras, sevFamilyOps, snpOps } from './amd.js';
import { defaultOps, swProtectedOps } from './x86.js';

/**
 * Chooses the ops table for a VM of `type` on the host `cfg` (kvm_x86_ops plus the vendor's
 * per-type branches). On a host that is not Intel-only, DEFAULT and SW_PROTECTED VMs get AMD's vendor extras (the
 * legacy SEV_INIT path, COPY/MOVE_ENC_CONTEXT_FROM) — on the non-physical mixed host, every
 * non-TDX VM sees svm_x86_ops and TDX VMs see vt_x86_ops.
 */
export function selectArchOps(type: VmType, cfg: ResolvedConfig): ArchOps {
  switch (type) {
    case 'default':
      return defaultOps(cfg, cfg.vendor === 'intel' ? {} : amdSevVendorExtras(cfg));
    case 'sw-protected':
      return swProtectedOps(cfg, cfg.vendor === 'intel' ? {} : amdSevVendorExtras(cfg));
    case 'sev':
    case 'sev-es':
      return sevFamilyOps(type, cfg);
    case 'sev-snp':
      return snpOps(cfg);
    case 'tdx':
      // The TDX model (../tdx): vt_x86_ops for KVM_X86_TDX_VM (spec §13).
      return tdxArchOps(cfg);
  }
}

/** Ops tables of every type, built once per host (KVM_CAP_VM_TYPES, device attributes, /dev/sev). */
export function hostArchOps(cfg: ResolvedConfig): ReadonlyMap<VmType, ArchOps> {
  return new Map(cfg.vmTypes.map((t) => [t, selectArchOps(t, cfg)] as const));
}
