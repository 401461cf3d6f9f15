// The SEV model's window on the rest of the simulated kernel. The SEV code never reaches into the
// core's VM or vCPU objects: it sees them through these small views, which the arch seam adapts.
// The SEV slots the views carry (`struct kvm_sev_info`, the SEV-ES part of `struct vcpu_svm`) are
// declared here too, as they and the views name each other; ./state.ts makes and queries them.

import type { VmType } from '@kvmtest/coco';
import type { HostPtr, Regs, Sregs } from '@kvmtest/kvm';
import type { ArchVm } from '../arch/ops.js';

/** What the SEV model needs from one vCPU (`struct kvm_vcpu` + `struct vcpu_svm`, the SEV parts). */
export interface SevVcpuView {
  /** The vCPU id given to KVM_CREATE_VCPU. */
  readonly id: number;
  /** This vCPU's SEV-ES slot (guest_state_protected, VMSA, GHCB MSR); created by `newSevVcpuState()`. */
  readonly sev: SevVcpuState;
  /** The register file KVM holds for the vCPU (`vcpu->arch.regs`), read when the VMSA is built. */
  regs(): Regs;
  /** Segments, descriptor tables, control registers and EFER (KVM_GET_SREGS), read when the VMSA is built. */
  sregs(): Sregs;
  /** True when KVM_SET_GUEST_DEBUG enabled debugging on this vCPU (`vcpu->guest_debug`). */
  readonly guestDebug: boolean;
  /** DR7 as KVM holds it (`vmcb->save.dr7`). */
  readonly dr7: bigint;
  /** The vCPU's MSR file (KVM_GET_MSRS values), read when the VMSA is built; undefined = not modelled. */
  msr?(index: number): bigint | undefined;
  /** `vcpu->arch.xcr0`, read when the VMSA is built. */
  xcr0?(): bigint;
  /** The guest FPU as a standard-format XSAVE area, read when the VMSA of a non-DEFAULT VM type is built. */
  fpu?(): Uint8Array;
  /**
   * Destination side of a context move: take `from`'s register state (the VMSA's, when `registers`)
   * and its guest program where it stopped, unless this vCPU has one of its own.
   */
  adoptFrom?(from: SevVcpuView, registers: boolean): void;
}

/** What the SEV model needs from one VM (`struct kvm`, the parts sev.c touches). */
export interface SevVmView {
  /** The VM fd (for messages). */
  readonly fd: number;
  /** `kvm->arch.vm_type`. */
  readonly type: VmType;
  /** `kvm->vm_dead`: set by `markDead()`; the core's ioctl gate answers EIO from then on (virt/kvm/kvm_main.c: kvm_vm_ioctl()). */
  readonly dead: boolean;
  /** `kvm->created_vcpus`: KVM_CREATE_VCPU calls that got past reservation (includes in-flight ones). */
  readonly createdVcpus: number;
  /** `kvm->online_vcpus`: vCPUs fully created and visible to `vcpus()`. */
  readonly onlineVcpus: number;
  /** The online vCPUs in creation order (`kvm_for_each_vcpu`). */
  vcpus(): readonly SevVcpuView[];
  /** This VM's SEV slot (`struct kvm_sev_info`), created by `SevPlatform.newVmState()` at VM creation. */
  readonly sev: SevVmState;
  /**
   * The GPA at which one of this VM's memslots maps `buffer[offset]`, or undefined. The launch digest
   * records LAUNCH_UPDATE_DATA regions by GPA (coco SevLaunchDigest); without it the synthetic uaddr is used.
   */
  hostToGpa?(buffer: Uint8Array, offset: number): bigint | undefined;
  /** `kvm_vm_dead(kvm)`: every later VM and vCPU ioctl on this VM fails with EIO (virt/kvm/kvm_main.c: kvm_vm_ioctl()). */
  markDead(): void;
  /** The core VM (SNP reads its memslots, memory attributes and guest_memfd pages); absent in unit fakes. */
  readonly core?: ArchVm;
}

/** How an fd passed as `args[0]` of MOVE/COPY resolves (arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from()). */
export type VmFdLookup = SevVmView | 'not-open' | 'not-a-vm';

/** What the SEV model needs from the process: its descriptor table. */
export interface SevHostView {
  /** Resolves a VM fd: the VM, `'not-open'` (fd_empty) or `'not-a-vm'` (!file_is_kvm). */
  lookupVmFd(fd: number): VmFdLookup;
  /** True when `fd` is open and refers to /dev/sev (the PSP driver's file-ops check, drivers/crypto/ccp/sev-dev.c: sev_issue_cmd_external_user()). */
  isSevDeviceFd(fd: number): boolean;
}

/** Where a guest-physical address lands in host memory: a memslot backing and the byte inside it. */
export interface HostLocation {
  readonly buffer: Uint8Array;
  readonly offset: number;
}

/** What the SEV-ES guest-side hooks need from the vCPU that is running (the core's guest CPU). */
export interface SevGuestCpuView {
  readonly vm: SevVmView;
  readonly vcpu: SevVcpuView;
  /** Resolves a GPA (C-bit already stripped) to its host backing, or undefined when no memslot backs it. */
  resolveGpa(gpa: bigint): HostLocation | undefined;
  /** KVM's CPUID emulation for the guest (`kvm_cpuid`), used for the GHCB CPUID request and exit. */
  cpuid(leaf: number, subleaf: number): { eax: number; ebx: number; ecx: number; edx: number };
  /** KVM's RDMSR emulation for the guest; undefined = the MSR does not exist (#GP). */
  rdmsr?(msr: number): bigint | undefined;
  /** KVM's WRMSR emulation for the guest; false = refused (#GP). */
  wrmsr?(msr: number, value: bigint): boolean;
}

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

/** An I/O exit waiting for the host (IN data to deliver, or a string OUT already done). */
export interface PendingIo {
  readonly direction: 'in' | 'out';
  readonly size: 1 | 2 | 4;
  readonly count: number;
  /** Where string-IN data goes (the scratch GPA); undefined for a plain IN (RAX). */
  readonly scratchGpa: bigint | undefined;
}

/** RAX, RBX, RCX, RDX as KVM holds them during a VMGEXIT. */
export type Regs4 = { rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint };

/** An exit taken from a VMGEXIT, completed on the next run. */
export interface PendingVmgexit {
  readonly ghcbGpa: bigint;
  readonly regs: Regs4;
  io: PendingIo | undefined;
  mmioScratch: bigint | undefined;
}
