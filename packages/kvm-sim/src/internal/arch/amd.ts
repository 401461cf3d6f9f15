// Ops tables of the AMD confidential VM types: SEV, SEV-ES and SEV-SNP come from the SEV model
// (../sev/) over the AMD vendor base. (TDX's table comes from ../tdx, see dispatch.ts.)

import type { VmType } from '@kvmtest/coco';
import type { ResolvedConfig } from '../config.js';
import { sevArchOps, sevVendorExtras } from '../sev/arch-ops.js';
import { snpArchOps } from '../sev/snp-arch-ops.js';
import type { ArchOps } from './ops.js';
import { vendorBase } from './x86.js';

/** Ops for `sev` / `sev-es` VMs: the SEV model (../sev/arch-ops.ts) over the AMD vendor base. */
export function sevFamilyOps(type: Extract<VmType, 'sev' | 'sev-es'>, cfg: ResolvedConfig): ArchOps {
  return sevArchOps(type, cfg, vendorBase(cfg));
}

/** Ops for `sev-snp` VMs: the SNP model (../sev/snp-arch-ops.ts) over the SEV-ES ops and the AMD vendor base. */
export function snpOps(cfg: ResolvedConfig): ArchOps {
  return snpArchOps(cfg, vendorBase(cfg));
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
