// Per-VM and per-vCPU SEV state: fresh `struct kvm_sev_info` and SEV-ES parts of `struct vcpu_svm`
// (arch/x86/kvm/svm/svm.h; their shapes are declared beside the views in ./views.ts), with the
// predicates sev.c uses.

import type { VmType } from '@kvmtest/coco';
import type { SevVcpuState, SevVmState } from './views.js';

// The shapes live with the views that carry them (./views.ts); re-exported for the model's modules.
export type { EncRegionRecord, SevVcpuState, SevVmState } from './views.js';

/** An invalid page address (`INVALID_PAGE`), what KVM stores in ghcb_gpa / vmsa_pa when there is none. */
export const INVALID_PAGE = 0xffff_ffff_ffff_ffffn;

/** A fresh SEV slot for a VM of `vmType` (arch/x86/kvm/svm/svm.c: svm_vm_init(): `need_init` for the SEV VM types). */
export function newSevVmState(vmType: VmType): SevVmState {
  return {
    vmType,
    active: false,
    esActive: false,
    needInit: vmType === 'sev' || vmType === 'sev-es' || vmType === 'sev-snp',
    asid: 0,
    handle: 0,
    fd: 0,
    policy: 0,
    vmsaFeatures: 0n,
    ghcbVersion: 0,
    pagesLocked: 0,
    regions: [],
    mirrors: [],
    owner: undefined,
    migrationInProgress: false,
    locked: false,
    refs: 0,
    fdClosed: false,
    destroyed: false,
  };
}

/** A fresh SEV-ES slot for a vCPU. */
export function newSevVcpuState(): SevVcpuState {
  return {
    guestStateProtected: false,
    vmsa: undefined,
    ghcbMsr: 0n,
    ghcbGpa: INVALID_PAGE,
    pendingExit: undefined,
  };
}

/** `sev_guest(kvm)` (arch/x86/kvm/svm/svm.h). */
export function sevGuest(s: SevVmState): boolean {
  return s.active;
}

/** `sev_es_guest(kvm)` (arch/x86/kvm/svm/svm.h). */
export function sevEsGuest(s: SevVmState): boolean {
  return s.active && s.esActive;
}

/** `sev_snp_guest(kvm)`: SNP_ACTIVE in vmsa_features (arch/x86/kvm/svm/svm.h). */
export function sevSnpGuest(s: SevVmState): boolean {
  return (s.vmsaFeatures & 1n) !== 0n;
}

/** `is_mirroring_enc_context(kvm)` (arch/x86/kvm/svm/svm.h). */
export function isMirror(s: SevVmState): boolean {
  return s.owner !== undefined;
}
