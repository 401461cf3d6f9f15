// What the guest agent needs from the vCPU it runs on: one synchronous KVM_RUN, the mmapped
// kvm_run, the full special registers, the general registers and the host bytes behind a GPA.
// kvm-linux's vCPU implements it (see INTERNAL.md); the agent never issues ioctls of its own
// except through the contract Vm (its memslot).

import type { Exit, Regs, Vm } from '@kvmtest/kvm';
import type { XsaveSupport } from './xprobe.js';

/** The vCPU-side primitives the agent runner drives. */
export interface AgentVcpuHost {
  /** vCPU id (KVM_CREATE_VCPU). */
  readonly id: number;
  /** The contract VM this vCPU belongs to (memslots, allocateUserMemory through `vm.kvm`). */
  readonly vm: Vm;
  /**
   * One KVM_RUN on this thread, under the watchdog. Returns undefined when the kernel left an exit
   * in kvm_run, or the Exit to hand back as is when the run ended without one (the watchdog's
   * timeout); throws KvmError when the ioctl fails.
   */
  runOnce(): Exit | undefined;
  /** A view of the mmapped `struct kvm_run` (the whole mapping, so the PIO data page is in it). */
  readonly runView: DataView;
  /** The contract Exit for what kvm_run holds now (what a plain run() would resolve with). */
  decodeExit(): Exit;
  /** KVM_GET_SREGS as the raw `struct kvm_sregs` (312 bytes, uapi layout). */
  getSregsRaw(): Uint8Array;
  /** KVM_SET_SREGS from a raw `struct kvm_sregs`. */
  setSregsRaw(sregs: Uint8Array): void;
  /** KVM_GET_REGS. */
  getRegs(): Regs;
  /** KVM_SET_REGS. */
  setRegs(regs: Regs): void;
  /** Host bytes behind guest-physical [gpa, gpa + length) in one memslot, or undefined. */
  hostBytes(gpa: bigint, length: number): Uint8Array | undefined;
  /** How many calls set this vCPU's state so far (the host's, between exits, included). */
  stateWrites(): number;
  /** The watchdog deadline of a run, in ms: a guest program's run that goes on longer is ended. */
  readonly timeoutMs: number;
  /** The VM's guest symbol table (Vm.setGuestSymbols). */
  guestSymbols(): ReadonlyMap<string, bigint>;
  /** Which XSAVE-family instructions a guest can execute on this host (probed once per process). */
  xsaveSupport(): XsaveSupport;
}
