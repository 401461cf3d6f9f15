// Stand-ins for the confidential VM types whose models are not wired in yet. They behave as a host
// WITHOUT that support: `available: false` keeps the type out of KVM_CAP_VM_TYPES, KVM_CREATE_VM
// answers EINVAL for it (kvm_arch_init_vm), and no /dev/sev exists. Nothing is faked.
//
// SEV wiring: replace `sevFamilyOps` (sev, sev-es) with the SEV model's ops table, and return the
// model's vendor-level extras (legacy KVM_SEV_INIT on DEFAULT VMs, COPY/MOVE_ENC_CONTEXT_FROM,
// REG/UNREG_REGION, /dev/sev) from `amdSevVendorExtras`. SNP and TDX follow the same pattern.

import type { VmType } from '@kvmtest/coco';
import type { ResolvedConfig } from '../config.js';
import type { ArchOps } from './ops.js';

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

/** Ops for `sev` / `sev-es` VMs (the SEV helper's model replaces this). */
export function sevFamilyOps(type: Extract<VmType, 'sev' | 'sev-es'>, _cfg: ResolvedConfig): ArchOps {
  return unavailable(`${type}-stub`);
}

/** Ops for `sev-snp` VMs (a later issue). */
export function snpOps(_cfg: ResolvedConfig): ArchOps {
  return unavailable('sev-snp-stub');
}

/** Ops for `tdx` VMs (a later issue; its vcpuPrecreate must answer EIO before KVM_TDX_INIT_VM, spec §13.2). */
export function tdxOps(_cfg: ResolvedConfig): ArchOps {
  return unavailable('tdx-stub');
}

/**
 * What an AMD host with the SEV model adds to DEFAULT and SW_PROTECTED VMs (svm_x86_ops'
 * mem_enc_ioctl, mem_enc_register_region, vm_copy/move_enc_context_from). Empty until the SEV model
 * is wired: a host without SEV has `sev_enabled == false`, which the core's missing-op answers
 * (ENOTTY / EINVAL) reproduce.
 */
export function amdSevVendorExtras(_cfg: ResolvedConfig): Partial<ArchOps> {
  return {};
}
