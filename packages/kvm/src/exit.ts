// What `vcpu.run()` returns: the `kvm_run` exit, as a discriminated union.

import { hex } from '@kvmtest/coco';
import type { Gpa } from '@kvmtest/guest-memory';

/** KVM_EXIT_* numbers (include/uapi/linux/kvm.h). */
export const EXIT_REASON = {
  UNKNOWN: 0,
  EXCEPTION: 1,
  IO: 2,
  HYPERCALL: 3,
  DEBUG: 4,
  HLT: 5,
  MMIO: 6,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  INTERNAL_ERROR: 17,
  SYSTEM_EVENT: 24,
  MEMORY_FAULT: 39,
  TDX: 40,
} as const;

/** KVM_SYSTEM_EVENT_* types (include/uapi/linux/kvm.h). */
export const SYSTEM_EVENT = {
  shutdown: 1,
  reset: 2,
  crash: 3,
  'sev-term': 6,
  'tdx-fatal': 7,
} as const;

/** A system-event type name. */
export type SystemEventType = keyof typeof SYSTEM_EVENT;

/** KVM_INTERNAL_ERROR_* sub-errors, plus the simulator's guest-crash code. */
export const INTERNAL_ERROR = {
  EMULATION: 1,
  SIMUL_EX: 2,
  DELIVERY_EV: 3,
  UNEXPECTED_EXIT_REASON: 4,
  /** The guest program itself failed (a JavaScript error, not an architectural event). */
  GUEST_CRASH: 0x100,
} as const;

/** Port I/O exit. `data` holds `size * count` bytes: written bytes for OUT; for IN the host fills it before resuming. */
export interface IoExit {
  reason: 'io';
  direction: 'in' | 'out';
  port: number;
  size: 1 | 2 | 4;
  count: number;
  data: Uint8Array;
}
/** MMIO exit: an access to a GPA no memslot backs. For a read the host fills `data` before resuming. */
export interface MmioExit {
  reason: 'mmio';
  gpa: Gpa;
  isWrite: boolean;
  len: number;
  data: Uint8Array;
}
/** KVM_EXIT_HYPERCALL for a hypercall the VM asked to see (KVM_CAP_EXIT_HYPERCALL); the host sets `ret`. */
export interface HypercallExit {
  reason: 'hypercall';
  nr: bigint;
  args: bigint[];
  ret: bigint;
  longmode: boolean;
}
/** KVM_EXIT_SYSTEM_EVENT. */
export interface SystemEventExit {
  reason: 'system-event';
  type: SystemEventType;
  data: bigint[];
}
/** KVM_EXIT_MEMORY_FAULT: KVM_RUN failed with EFAULT and described the access userspace must resolve. */
export interface MemoryFaultExit {
  reason: 'memory-fault';
  gpa: Gpa;
  size: bigint;
  private: boolean;
  /**
   * What KVM_RUN itself returned: the kernel fills the MEMORY_FAULT exit and fails the ioctl with
   * EFAULT (virt/kvm/kvm_main.c / arch/x86/kvm/mmu/mmu.c: kvm_mmu_prepare_memory_fault_exit(), then
   * -EFAULT from the page-fault path). `run()` resolves with the exit so the VMM can answer it (change
   * the attributes, add the memslot) and run again; the errno is kept here so it stays visible.
   */
  errno: 'EFAULT';
}
/** KVM_EXIT_HLT. */
export interface HltExit {
  reason: 'hlt';
}
/** KVM_EXIT_SHUTDOWN (triple fault); `detail` says what the guest was doing. */
export interface ShutdownExit {
  reason: 'shutdown';
  detail?: string;
}
/** KVM_EXIT_INTERNAL_ERROR; `detail` is a readable description (for a guest crash: the error and its stack). */
export interface InternalErrorExit {
  reason: 'internal-error';
  suberror: number;
  detail: string;
}
/**
 * KVM_EXIT_INTR: the run was interrupted — when the run's guest budget (the simulator's watchdog,
 * like a signal from a VMM timer) was spent (`budgetExhausted`). `immediateExit` is not an exit:
 * KVM_RUN fails with EINTR instead.
 */
export interface IntrExit {
  reason: 'intr';
  budgetExhausted?: boolean;
}

/** Every exit `run()` can return. */
export type Exit =
  | IoExit
  | MmioExit
  | HypercallExit
  | SystemEventExit
  | MemoryFaultExit
  | HltExit
  | ShutdownExit
  | InternalErrorExit
  | IntrExit;

/** The name of an exit reason. */
export type ExitReason = Exit['reason'];

/** KVM_EXIT_* number of an exit. */
export function exitReasonNumber(reason: ExitReason): number {
  switch (reason) {
    case 'io':
      return EXIT_REASON.IO;
    case 'mmio':
      return EXIT_REASON.MMIO;
    case 'hypercall':
      return EXIT_REASON.HYPERCALL;
    case 'system-event':
      return EXIT_REASON.SYSTEM_EVENT;
    case 'memory-fault':
      return EXIT_REASON.MEMORY_FAULT;
    case 'hlt':
      return EXIT_REASON.HLT;
    case 'shutdown':
      return EXIT_REASON.SHUTDOWN;
    case 'internal-error':
      return EXIT_REASON.INTERNAL_ERROR;
    case 'intr':
      return EXIT_REASON.INTR;
  }
}

/** One-line description of an exit for failure messages (`io out port 0x1000 size 4 data 0x…`). */
export function describeExit(exit: Exit): string {
  switch (exit.reason) {
    case 'io':
      return `io ${exit.direction} port ${hex(exit.port)} size ${exit.size} count ${exit.count}`;
    case 'mmio':
      return `mmio ${exit.isWrite ? 'write' : 'read'} gpa ${hex(exit.gpa)} len ${exit.len}`;
    case 'hypercall':
      return `hypercall nr ${exit.nr} args [${exit.args.map(hex).join(', ')}]`;
    case 'system-event':
      return `system-event ${exit.type} data [${exit.data.map(hex).join(', ')}]`;
    case 'memory-fault':
      return `memory-fault gpa ${hex(exit.gpa)} size ${hex(exit.size)} ${exit.private ? 'private' : 'shared'}`;
    case 'shutdown':
      return exit.detail ? `shutdown (${exit.detail})` : 'shutdown';
    case 'internal-error':
      return `internal-error ${exit.suberror}: ${exit.detail}`;
    case 'intr':
      return exit.budgetExhausted ? 'intr (guest budget spent)' : 'intr';
    case 'hlt':
      return 'hlt';
  }
}
