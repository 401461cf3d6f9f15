// THE ARCH SEAM — the simulator's `struct kvm_x86_ops`.
//
// The generic kernel model (fd table, memslots, guest_memfd, memory attributes, vCPU creation, the
// run loop, the guest MMU) lives in ../kvm.ts, ../vm.ts, ../vcpu.ts, ../guest.ts and knows nothing
// about SEV or TDX. Everything that differs by VM type or host vendor goes through one `ArchOps`
// object per VM, chosen ONCE, at KVM_CREATE_VM, by `selectArchOps` in ../arch-registry.ts.
//
// How the kernel splits it, and how we follow:
//   * x86.c / kvm_main.c call `kvm_x86_ops.<op>` — a per-HOST table (svm_x86_ops on AMD,
//     vt_x86_ops on Intel). Inside an op the vendor code then branches on the VM's type
//     (sev_guest(kvm), is_td(kvm)). We pick the table per VM instead (so one simulated process can
//     host SEV and TDX VMs side by side — see SimConfig.vendor), but each table must still behave
//     like the vendor's: e.g. on an AMD host a DEFAULT VM's KVM_MEMORY_ENCRYPT_OP reaches the SEV
//     code (legacy KVM_SEV_INIT turns it into an SEV guest), on an Intel host it reaches tdx_vm_ioctl
//     which answers ENOTTY ("not a TD"), arch/x86/kvm/vmx/main.c: vt_mem_enc_ioctl().
//   * An OPTIONAL method left undefined is a NULL op pointer: the core then answers exactly what
//     x86.c answers for a NULL pointer (ENOTTY for mem_enc_ioctl / reg_region, EINVAL for
//     copy/move enc context, #UD for vmgexit/tdcall/pvalidate). A table therefore leaves a method out
//     rather than faking success.
//   * `available` false = the host lacks this support entirely: the core drops the type from
//     KVM_CAP_VM_TYPES and KVM_CREATE_VM answers EINVAL for it (kvm_arch_init_vm), and /dev/sev is
//     absent (ENOENT) when no available ops table provides `sevDevice`.
//
// The views below (ArchKvm, ArchVm, ArchVcpu, ArchCpu) are what an arch implementation may touch
// of the core; they are implemented by the core classes. Arch implementations keep their own
// per-VM / per-vCPU state in the `arch` slot of the view (typed `unknown` here; each
// implementation casts to its own state type).
//
// Call order the core guarantees (mirrors kvm_main.c / x86.c):
//   KVM_CREATE_VM        -> vmInit(vm)                     (after the type check; may throw KvmError)
//   every VM/vCPU ioctl  -> dead-VM gate first (EIO), then the op      (virt/kvm/kvm_main.c: kvm_vm_ioctl())
//   KVM_CREATE_VCPU      -> id / count checks, vcpuPrecreate(vm, id), create, duplicate-id EEXIST,
//                           then vcpuCreated(vcpu)
//   KVM_RUN              -> runCheck(vcpu) before the guest runs (TDX: EINVAL unless RUNNABLE)
//   guest operations     -> intercept / classifyAccess / msr / hypercall / vmgexit / tdcall / pvalidate
//   last reference gone  -> vmDestroy(vm) once (after every vCPU fd and guest_memfd is closed)

import type { VmType } from '@kvmtest/coco';
import type { Exit, Regs, SevCommand, TdcallRegs, TdxCommand } from '@kvmtest/kvm';
import type { ResolvedConfig } from '../config.js';

/** What the core knows about a descriptor of this process (the `struct file` behind an fd). */
export type FdKind = 'kvm' | 'vm' | 'vcpu' | 'guest-memfd' | 'sev-device' | 'stats';

/** System scope as the arch sees it: the host configuration and the fd table (for `sevFd`, source VM fds). */
export interface ArchKvm {
  readonly config: ResolvedConfig;
  /** Kind of the open descriptor `fd`, or undefined when it is not open (-> EBADF in the caller). */
  fdKind(fd: number): FdKind | undefined;
  /** The VM behind an open VM fd (MOVE/COPY_ENC_CONTEXT_FROM's args[0]); undefined if `fd` is not a VM fd. */
  vmByFd(fd: number): ArchVm | undefined;
  /** True when VM type `type` is supported by this host (configured and its ops table available). */
  typeAvailable(type: VmType): boolean;
  /** Per-host arch state (e.g. the SEV ASID bitmaps), created lazily by the arch and kept for the process. */
  hostState<T>(key: string, init: () => T): T;
}

/** A memslot as the arch sees it (read-only). */
export interface ArchMemslot {
  readonly asId: number;
  readonly id: number;
  readonly flags: number;
  readonly gpa: bigint;
  readonly size: bigint;
  /** The VMM memory behind the slot (`userspace_addr`). */
  readonly userspace: Uint8Array;
  /** True when the slot is bound to a guest_memfd (KVM_MEM_GUEST_MEMFD). */
  readonly hasGmem: boolean;
}

/** Where a host pointer (`uaddr`) lands: the memslot and GPA whose userspace memory contains it. */
export interface HostPtrTarget {
  readonly slot: ArchMemslot;
  readonly gpa: bigint;
}

/** One VM as the arch sees it. */
export interface ArchVm {
  readonly kvm: ArchKvm;
  readonly type: VmType;
  /** KVM_CREATE_VM type number. */
  readonly typeNumber: number;
  readonly fd: number;
  /** The arch's own per-VM state (set it in vmInit). */
  arch: unknown;
  /** kvm->arch.has_private_mem: memory attributes and GUEST_MEMFD memslots are allowed. Set in vmInit. */
  hasPrivateMem: boolean;
  /** kvm->arch.has_protected_state: register state may become inaccessible; no READONLY memslots. */
  hasProtectedState: boolean;
  /** kvm->created_vcpus (including ones whose creation is under way). */
  readonly createdVcpus: number;
  readonly vcpus: readonly ArchVcpu[];
  /** kvm->vm_dead. */
  readonly dead: boolean;
  /** kvm_vm_dead(): every later VM / vCPU ioctl fails with EIO, a vCPU in KVM_RUN returns EIO. */
  markDead(): void;
  /** True once KVM_CAP_EXIT_HYPERCALL enabled forwarding of hypercall `nr` (user_exit_on_hypercall). */
  hypercallExitEnabled(nr: number): boolean;
  /** The memslots of address space `asId` (default 0), in slot-id order. */
  memslots(asId?: number): readonly ArchMemslot[];
  /** The memslot containing `gpa` in address space 0, or undefined. */
  memslotAt(gpa: bigint): ArchMemslot | undefined;
  /** Finds the memslot whose userspace buffer holds `buffer[offset]` (the simulator's HVA -> GPA). */
  hostPtrTarget(buffer: Uint8Array, offset: number): HostPtrTarget | undefined;
  /** KVM_SET_MEMORY_ATTRIBUTES state of the page holding `gpa`. */
  memoryAttributes(gpa: bigint): bigint;
  /** Drops every cached guest translation and access decision of this VM (call after changing what classifyAccess answers). */
  flushTlbs(): void;
}

/** One vCPU as the arch sees it. */
export interface ArchVcpu {
  readonly vm: ArchVm;
  readonly id: number;
  readonly fd: number;
  /** The arch's own per-vCPU state (set it in vcpuCreated). */
  arch: unknown;
  /**
   * Destination side of an encryption-context move: take `from`'s register state (when `registers`)
   * and, if this vCPU has no program of its own, its guest program where it stopped.
   */
  adoptGuest?(from: ArchVcpu, registers: boolean): void;
}

/** A guest memory access the arch classifies (after the page walk, before touching any backing). */
export interface MemAccess {
  /** GPA with any tag bit (C-bit / S-bit) stripped. */
  readonly gpa: bigint;
  /** The leaf PTE carried the tag bit (C-bit set for SEV: encrypted; S-bit set for TDX: shared). */
  readonly tagged: boolean;
  readonly write: boolean;
  /** A page-table read by the walker (implicit supervisor access). */
  readonly implicit: boolean;
  /** The memslot holding `gpa`, if any. */
  readonly slot: ArchMemslot | undefined;
  /** The KVM_SET_MEMORY_ATTRIBUTES value of the page. */
  readonly attributes: bigint;
  /**
   * PVALIDATE's own translation of its operand (SNP): the page is about to be (in)validated, so an
   * arch must not refuse it for lacking validation. The core flushes nothing afterwards: the arch's
   * pvalidate hook does (`flushTlbs`).
   */
  readonly pvalidate?: boolean;
}

/** Byte transform between what the guest sees and what the host page holds (SEV's memory encryption). */
export interface PageCipher {
  /** Decrypts `length` bytes at `pageOffset` of the host page (`host`, starting at `hostOffset`) into `out`. */
  decrypt(host: Uint8Array, hostOffset: number, pageOffset: number, out: Uint8Array, length: number): void;
  /** Encrypts `data` into the host page at `pageOffset`. */
  encrypt(host: Uint8Array, hostOffset: number, pageOffset: number, data: Uint8Array): void;
}

/**
 * How an access is served. The core does the rest: `shared` reads the slot's userspace memory (no
 * slot -> MMIO exit; READONLY slot write -> MMIO exit); `private` reads the guest_memfd page (slot
 * without gmem or gmem gone -> memory-fault exit, private); `encrypted` reads userspace through
 * `cipher`; `memory-fault` exits to userspace (KVM_EXIT_MEMORY_FAULT); `exception` raises a guest
 * exception (#VC, #PF with RMP bits, #VE …).
 */
export type AccessDecision =
  | { readonly kind: 'shared' }
  | { readonly kind: 'private' }
  | { readonly kind: 'encrypted'; readonly cipher: PageCipher }
  | { readonly kind: 'memory-fault'; readonly private: boolean }
  | {
      readonly kind: 'exception';
      readonly vector: number;
      readonly errorCode: number | undefined;
      readonly detail: string;
    };

/** Guest events a protected guest cannot let the hypervisor see directly (SEV-ES #VC, TDX #VE). */
export type InterceptEvent =
  | { readonly kind: 'io'; readonly port: number; readonly size: number; readonly in: boolean }
  | { readonly kind: 'mmio'; readonly gpa: bigint; readonly size: number; readonly write: boolean }
  | { readonly kind: 'cpuid'; readonly leaf: number; readonly subleaf: number }
  | { readonly kind: 'rdmsr' | 'wrmsr'; readonly msr: number }
  | { readonly kind: 'hypercall' }
  | { readonly kind: 'hlt' }
  | { readonly kind: 'xsetbv' };

/** An exception the arch asks the core to raise in the guest. */
export interface ArchException {
  readonly vector: number;
  readonly errorCode: number | undefined;
  readonly detail: string;
}

/** The guest CPU as the arch sees it while it handles a guest operation (vmgexit, tdcall, …). */
export interface ArchCpu {
  readonly vcpu: ArchVcpu;
  /** The live register file. */
  readonly regs: Regs;
  /**
   * Guest-physical read, classified like a guest access (`tagged` = the guest's private intent).
   * For page-table reads by the walker the core passes `implicit: true, tagged: false` to
   * classifyAccess: the C-bit of upper-level entries is not reported, so the arch decides how page
   * tables are read (SEV: guest page tables live in private memory).
   */
  readPhys(gpa: bigint, length: number, tagged: boolean): Uint8Array;
  /** Guest-physical write, classified like a guest access. */
  writePhys(gpa: bigint, data: Uint8Array, tagged: boolean): void;
  /** The vCPU's MSR file (the core's view; no interception). */
  msr(index: number): bigint | undefined;
  setMsr(index: number, value: bigint): void;
  /** CPUID as the vCPU's table answers it (no interception). */
  cpuidTable(leaf: number, subleaf: number): { eax: number; ebx: number; ecx: number; edx: number };
  /**
   * Hands `exit` to the pending KVM_RUN and waits for the next KVM_RUN. Resolves with the exit
   * object as the host left it (IN data, hypercall ret filled in). Counts against the run budget.
   */
  exitToHost<E extends Exit>(exit: E): Promise<E>;
  /** Raises a guest exception now (throws out of the guest operation; the guest's handler runs). */
  raise(e: ArchException): never;
}

/** Result of the arch's hypercall hook: handled (value for RAX) or let the generic x86.c path run. */
export type HypercallResult = { readonly handled: true; readonly rax: bigint } | { readonly handled: false };

/** The per-VM operations table (kvm_x86_ops + the vendor branches inside its ops). */
export interface ArchOps {
  /** Name for messages (`svm`, `vmx`, `sw-protected`, `sev`, `sev-es`, `sev-snp`, `tdx`). */
  readonly name: string;
  /** False: the host has no support for this VM type (not advertised; KVM_CREATE_VM -> EINVAL). */
  readonly available: boolean;

  // ---- VM scope -----------------------------------------------------------------------------
  /** kvm_arch_init_vm + vendor vm_init: set `hasPrivateMem` / `hasProtectedState` / `arch`. */
  vmInit(vm: ArchVm): void;
  /** Vendor vm_destroy: release ASIDs, handles, … Runs once, when the VM's last reference goes. */
  vmDestroy?(vm: ArchVm): void;
  /** KVM_CHECK_EXTENSION answers this VM type overrides (undefined = the generic answer). */
  checkExtension?(vm: ArchVm | undefined, cap: number): number | undefined;
  /** KVM_ENABLE_CAP for caps this arch owns (undefined = not handled here, generic answer applies). */
  enableCap?(vm: ArchVm, cap: number, args: readonly bigint[]): 'handled' | undefined;
  /** KVM_MEMORY_ENCRYPT_OP on the VM fd; absent -> ENOTTY (arch/x86/kvm/x86.c: kvm_arch_vm_ioctl()). `cmd` undefined = NULL argp. */
  memEncryptOp?(vm: ArchVm, cmd: SevCommand | TdxCommand | undefined): void;
  /** KVM_MEMORY_ENCRYPT_REG_REGION; absent -> ENOTTY. */
  memEncryptRegRegion?(vm: ArchVm, buffer: Uint8Array, offset: number, size: bigint): void;
  /** KVM_MEMORY_ENCRYPT_UNREG_REGION; absent -> ENOTTY. */
  memEncryptUnregRegion?(vm: ArchVm, buffer: Uint8Array, offset: number, size: bigint): void;
  /** KVM_CAP_VM_COPY_ENC_CONTEXT_FROM with args[0] = source fd; absent -> EINVAL (arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap()). */
  vmCopyEncContextFrom?(dst: ArchVm, sourceFd: number): void;
  /** KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM with args[0] = source fd; absent -> EINVAL (arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap()). */
  vmMoveEncContextFrom?(dst: ArchVm, sourceFd: number): void;
  /**
   * The same MOVE as steps: each `yield` is a point where the kernel may sleep with the two-VM lock
   * held (mutex_lock of kvm->lock, of every vCPU mutex), so other tasks may run and contend
   * (Vm.enableCapAsync). Throws the errno of the first failing check, releasing the locks.
   */
  vmMoveEncContextSteps?(dst: ArchVm, sourceFd: number): Generator<unknown, void, void>;
  /** KVM_SET_USER_MEMORY_REGION2 extra checks for this type (x86 kvm_arch_prepare_memory_region). */
  prepareMemoryRegion?(vm: ArchVm, gpa: bigint, size: bigint, flags: number): void;

  // ---- vCPU scope ---------------------------------------------------------------------------
  /** kvm_arch_vcpu_precreate vendor part (TDX: EIO before INIT_VM). */
  vcpuPrecreate?(vm: ArchVm, id: number): void;
  /** vCPU created: set `vcpu.arch`. */
  vcpuCreated?(vcpu: ArchVcpu): void;
  /** vCPU freed (its VM is being destroyed). */
  vcpuDestroy?(vcpu: ArchVcpu): void;
  /** KVM_MEMORY_ENCRYPT_OP on the vCPU fd; absent -> ENOTTY (SVM has none, arch/x86/kvm/x86.c: kvm_arch_vcpu_ioctl()). */
  vcpuMemEncryptOp?(vcpu: ArchVcpu, cmd: TdxCommand | undefined): void;
  /** guest_state_protected: KVM_GET/SET_REGS and SREGS fail with EINVAL while true. */
  stateProtected?(vcpu: ArchVcpu): boolean;
  /** Checks before entering the guest (pre_sev_run, TDX runnable state); throws KvmError to fail KVM_RUN. */
  runCheck?(vcpu: ArchVcpu): void;

  // ---- guest side ---------------------------------------------------------------------------
  /** Classifies a guest memory access (see AccessDecision). Absent -> always `shared`. */
  classifyAccess?(vm: ArchVm, access: MemAccess): AccessDecision;
  /** Whether the page walk uses a tag bit, and which (C-bit position for SEV, S-bit for TDX). */
  tagBit?(vm: ArchVm): number | undefined;
  /** A protected guest's view of an event that would exit: an exception to raise, or undefined to proceed. */
  intercept?(cpu: ArchCpu, event: InterceptEvent): ArchException | undefined;
  /**
   * A guest CPUID the arch answers without KVM (a TD's leaves the TDX module virtualizes, from the
   * TD's CPUID configuration); undefined = KVM's answer from the vCPU's table (kvm_cpuid()).
   */
  guestCpuid?(
    cpu: ArchCpu,
    leaf: number,
    subleaf: number,
  ): { eax: number; ebx: number; ecx: number; edx: number } | undefined;
  /** RDMSR of an MSR the arch owns (e.g. 0xC0010131 SEV status); undefined = not owned here. */
  readMsr?(vcpu: ArchVcpu, msr: number): bigint | undefined;
  /** WRMSR of an MSR the arch owns (e.g. the GHCB MSR); false = not owned here. */
  writeMsr?(vcpu: ArchVcpu, msr: number, value: bigint): boolean;
  /** VMMCALL / VMCALL before the generic x86.c hypercall path. */
  hypercall?(cpu: ArchCpu, nr: bigint, args: readonly bigint[]): Promise<HypercallResult>;
  /** VMGEXIT (SEV-ES/SNP); absent -> #UD. */
  vmgexit?(cpu: ArchCpu): Promise<void>;
  /** TDCALL (TDX); absent -> #UD. */
  tdcall?(cpu: ArchCpu, leaf: bigint, regs: TdcallRegs): Promise<TdcallRegs>;
  /** PVALIDATE (SNP); absent -> #UD. Returns the instruction's status (RAX). */
  pvalidate?(cpu: ArchCpu, gpa: bigint, validate: boolean): number;

  // ---- system scope -------------------------------------------------------------------------
  /** KVM_GET_DEVICE_ATTR(group, attr) on /dev/kvm for groups this arch owns; undefined = not owned. */
  deviceAttr?(kvm: ArchKvm, group: number, attr: number): bigint | undefined;
  /** True when this ops table brings a /dev/sev (the PSP driver). */
  readonly sevDevice?: boolean;
}
