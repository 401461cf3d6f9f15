// The backend's own views of itself: what a lower module uses of the object that owns it (a VM of
// its /dev/kvm, a vCPU of its VM) and what the guest agent and its entry hook use of a vCPU.
// LinuxKvm, LinuxVm and LinuxVcpu (kvm.ts, vm.ts, vcpu.ts) implement them; vm.ts, vcpu.ts, hooks.ts
// and the agent name their owners only through these interfaces, so the modules import each other
// in one direction (kvm → vm → vcpu → hooks) and the type graph has no loop either. Types only.

import type { VmType } from '@kvmtest/coco';
import type { Exit, Kvm, RunOptions, Vcpu, Vm } from '@kvmtest/kvm';

/** Per-run options of the linux backend. */
export interface LinuxRunOptions extends RunOptions {
  /** Watchdog deadline of this run in ms (default: the VM's `runTimeoutMs`). */
  timeoutMs?: number;
}

/** An open /dev/kvm as its VMs and the agent's probe use it (LinuxKvm). */
export interface LinuxKvmCore extends Kvm {
  /** KVM_GET_VCPU_MMAP_SIZE: bytes of a vCPU's kvm_run mapping. */
  readonly vcpuMmapSize: number;
  /** KVM_CAP_USER_MEMORY2: memslots go through KVM_SET_USER_MEMORY_REGION2. */
  readonly hasUserMemory2: boolean;
  createVm(type?: VmType | number): LinuxVmCore;
  /** Records a descriptor a VM or vCPU opened (vCPU, guest_memfd, binary stats). */
  adoptFd(fd: number, kind: 'vcpu', vcpu: LinuxVcpuCore): void;
  adoptFd(fd: number, kind: 'guest_memfd' | 'stats'): void;
  closeFd(fd: number): void;
}

/** A VM as its vCPUs, the agent and the probe use it (LinuxVm). */
export interface LinuxVmCore extends Vm {
  readonly kvm: LinuxKvmCore;
  readonly vcpus: readonly LinuxVcpuCore[];
  /** The watchdog deadline of a run of this VM's vCPUs, in ms. */
  runTimeoutMs: number;
  /** The guest symbol table (Vm.setGuestSymbols). */
  readonly guestSymbols: ReadonlyMap<string, bigint>;
  /** Host bytes behind guest-physical [gpa, gpa + len) in address space 0, in one memslot, or undefined. */
  hostBytes(gpa: bigint, len: number): Uint8Array | undefined;
  createVcpu(id: number): LinuxVcpuCore;
  /** Drops the memslots' memory once the VM fd and every vCPU fd are closed (the kernel destroys the VM). */
  dropSlotsIfDead(): void;
}

/** A vCPU as the guest agent, its entry hook and one KVM_RUN (vcpu.ts: runOnce) use it (LinuxVcpu). */
export interface LinuxVcpuCore extends Vcpu {
  readonly vm: LinuxVmCore;
  /** kvm_run, mmap'd from the vCPU fd. */
  readonly runBytes: Uint8Array;
  /** DataView over kvm_run. */
  readonly runView: DataView;
  /** Host address of kvm_run (for the watchdog). */
  readonly runAddr: bigint;
  /** Free-form state the agent keeps per vCPU. */
  agentState: unknown;
  /** Calls so far that set vCPU state (regs, sregs, MSRs, CPUID, XSAVE, XCRs). */
  readonly stateWrites: number;
  /** Makes `exit` the exit `vcpu.exit` shows (and the one completed next run). */
  setExitForHost(exit: Exit | undefined): void;
  /** The exit to complete into kvm_run before the next run (once). */
  takePending(): Exit | undefined;
  /** The Exit union for what is in kvm_run now. */
  decodeRunExit(): Exit;
  /** Throws EBADF once the vCPU fd is closed. */
  gate(op: string): void;
  /** KVM_GET_SREGS as the raw `struct kvm_sregs`. */
  getSregsRaw(): Uint8Array;
  /** KVM_SET_SREGS from a raw `struct kvm_sregs`. */
  setSregsRaw(buf: Uint8Array): void;
  /** One KVM_RUN on this thread, resolved to its Exit. */
  runSync(opts?: LinuxRunOptions): Exit;
}
