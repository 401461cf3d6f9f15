// The SEV model's window on the rest of the simulated kernel. The SEV code never reaches into the
// core's VM or vCPU objects: it sees them through these small views, which the arch seam adapts.

import type { VmType } from '@kvmtest/coco';
import type { Regs, Sregs } from '@kvmtest/kvm';
import type { ArchVm } from '../arch/ops.js';
import type { SevVcpuState, SevVmState } from './state.js';

/** What the SEV model needs from one vCPU (`struct kvm_vcpu` + `struct vcpu_svm`, the SEV parts). */
export interface SevVcpuView {
  /** The vCPU id given to KVM_CREATE_VCPU. */
  readonly id: number;
  /** This vCPU's SEV-ES slot (guest_state_protected, VMSA, GHCB MSR); created by `newSevVcpuState()`. */
  readonly sev: SevVcpuState;
  /** The register file KVM holds for the vCPU (`vcpu->arch.regs`), read when the VMSA is built. */
  regs(): Regs;
  /** Control registers and EFER, read when the VMSA is built. */
  sregs(): Sregs;
  /** True when KVM_SET_GUEST_DEBUG enabled debugging on this vCPU (`vcpu->guest_debug`). */
  readonly guestDebug: boolean;
  /** DR7 as KVM holds it (`vmcb->save.dr7`). */
  readonly dr7: bigint;
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
