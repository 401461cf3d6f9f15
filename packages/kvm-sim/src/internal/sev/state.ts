// Per-VM and per-vCPU SEV state: `struct kvm_sev_info` and the SEV-ES part of `struct vcpu_svm`,
// in one place (arch/x86/kvm/svm/svm.h), with the predicates sev.c uses.

import type { VmType } from '@kvmtest/coco';
import type { HostPtr } from '@kvmtest/kvm';
import type { PendingVmgexit } from './es.js';
import type { SevVmView } from './views.js';

/** One registered encrypted region (`struct enc_region`, arch/x86/kvm/svm/sev.c: sev_mem_enc_register_region(), sev_mem_enc_unregister_region()). */
export interface EncRegionRecord {
  /** The host pointer the region was registered with (compared by identity of address). */
  readonly uaddr: bigint;
  readonly size: bigint;
  readonly npages: number;
  readonly ptr: HostPtr;
}

/** `struct kvm_sev_info` (arch/x86/kvm/svm/svm.h). Mutated only by the SEV model, always after validation. */
export interface SevVmState {
  /** `kvm->arch.vm_type`, kept here so the model needs no view to classify the VM. */
  readonly vmType: VmType;
  active: boolean;
  esActive: boolean;
  needInit: boolean;
  asid: number;
  handle: number;
  fd: number;
  policy: number;
  vmsaFeatures: bigint;
  ghcbVersion: number;
  pagesLocked: number;
  regions: EncRegionRecord[];
  /** Mirrors of this VM (owner side, `mirror_vms`). */
  mirrors: SevVmView[];
  /** Owner of a mirror (`enc_context_owner`). */
  owner: SevVmView | undefined;
  /** `migration_in_progress` (the atomic taken by `sev_lock_two_vms`). */
  migrationInProgress: boolean;
  /** `kvm->lock` held by a command or a two-VM lock (the single-threaded model only asserts on it). */
  locked: boolean;
  /** References other VMs hold on this one (`kvm_get_kvm` by mirrors, arch/x86/kvm/svm/sev.c: sev_vm_copy_enc_context_from()). */
  refs: number;
  /** The VM fd was closed; destruction waits until `refs` drops to 0 (arch/x86/kvm/svm/sev.c: sev_vm_destroy()). */
  fdClosed: boolean;
  /** `sev_vm_destroy` ran. */
  destroyed: boolean;
}

/** An invalid page address (`INVALID_PAGE`), what KVM stores in ghcb_gpa / vmsa_pa when there is none. */
export const INVALID_PAGE = 0xffff_ffff_ffff_ffffn;

/** The SEV-ES part of a vCPU (`svm->sev_es`, `guest_state_protected`, GHCB GPA, VMSA). */
export interface SevVcpuState {
  /** `vcpu->arch.guest_state_protected`: set by LAUNCH_UPDATE_VMSA; KVM_GET/SET_REGS then fail (arch/x86/kvm/svm/sev.c: sev_launch_update_vmsa()). */
  guestStateProtected: boolean;
  /** The encrypted VMSA page handed to firmware (undefined before LAUNCH_UPDATE_VMSA). */
  vmsa: Uint8Array | undefined;
  /** The GHCB MSR 0xC0010130 as the guest last wrote it (or KVM set it). */
  ghcbMsr: bigint;
  /** `vmcb->control.ghcb_gpa`: the GPA of the GHCB the last VMGEXIT used. */
  ghcbGpa: bigint;
  /** A VMGEXIT that exited to userspace and completes on the next run (arch/x86/kvm/svm/sev.c: sev_es_sync_to_ghcb()). */
  pendingExit: PendingVmgexit | undefined;
}

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
