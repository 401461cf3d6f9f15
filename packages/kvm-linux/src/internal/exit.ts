// Decoding `struct kvm_run` into the contract's Exit union, and writing IN/MMIO-read data back.

import { EXIT_REASON, type Exit, INTERNAL_ERROR, SYSTEM_EVENT, type SystemEventType } from '@kvmtest/kvm';
import { EXIT_IO_OUT, MEMORY_EXIT_FLAG_PRIVATE, RUN } from './uapi.js';

const SYSTEM_EVENT_NAME = new Map<number, SystemEventType>(
  Object.entries(SYSTEM_EVENT).map(([k, v]) => [v, k as SystemEventType]),
);

/**
 * The exit in `run` (a DataView over kvm_run; `bytes` the same memory). OUT and MMIO-write data
 * are copied; IN and MMIO-read exits get a fresh `data` array that `completeExit` copies back into
 * kvm_run before the next KVM_RUN (the kernel reads it there: complete_emulated_pio/mmio()).
 */
export function decodeExit(run: DataView, bytes: Uint8Array): Exit {
  const reason = run.getUint32(RUN.exit_reason, true);
  switch (reason) {
    case EXIT_REASON.IO: {
      const out = run.getUint8(RUN.io_direction) === EXIT_IO_OUT;
      const size = run.getUint8(RUN.io_size) as 1 | 2 | 4;
      const count = run.getUint32(RUN.io_count, true);
      const off = run.getUint32(RUN.io_data_offset, true); // a page offset into kvm_run: the high half is 0
      const n = size * count;
      return {
        reason: 'io',
        direction: out ? 'out' : 'in',
        port: run.getUint16(RUN.io_port, true),
        size,
        count,
        data: out ? bytes.slice(off, off + n) : new Uint8Array(n),
      };
    }
    case EXIT_REASON.MMIO: {
      const isWrite = run.getUint8(RUN.mmio_is_write) !== 0;
      const len = run.getUint32(RUN.mmio_len, true);
      return {
        reason: 'mmio',
        gpa: run.getBigUint64(RUN.mmio_phys_addr, true),
        isWrite,
        len,
        data: isWrite ? bytes.slice(RUN.mmio_data, RUN.mmio_data + len) : new Uint8Array(len),
      };
    }
    case EXIT_REASON.HLT:
      return { reason: 'hlt' };
    case EXIT_REASON.SHUTDOWN:
      return { reason: 'shutdown' };
    case EXIT_REASON.HYPERCALL: {
      const args: bigint[] = [];
      for (let i = 0; i < 6; i++) args.push(run.getBigUint64(RUN.hypercall_args + 8 * i, true));
      return {
        reason: 'hypercall',
        nr: run.getBigUint64(RUN.hypercall_nr, true),
        args,
        ret: run.getBigUint64(RUN.hypercall_ret, true),
        longmode: run.getUint32(RUN.hypercall_longmode, true) !== 0,
      };
    }
    case EXIT_REASON.SYSTEM_EVENT: {
      const type = run.getUint32(RUN.system_event_type, true);
      const ndata = Math.min(run.getUint32(RUN.system_event_ndata, true), 16);
      const data: bigint[] = [];
      for (let i = 0; i < ndata; i++) data.push(run.getBigUint64(RUN.system_event_data + 8 * i, true));
      const name = SYSTEM_EVENT_NAME.get(type);
      if (name) return { reason: 'system-event', type: name, data };
      return {
        reason: 'internal-error',
        suberror: INTERNAL_ERROR.UNEXPECTED_EXIT_REASON,
        detail: `KVM_EXIT_SYSTEM_EVENT type ${type} has no name in the contract (data [${data.join(', ')}])`,
      };
    }
    case EXIT_REASON.MEMORY_FAULT:
      return {
        reason: 'memory-fault',
        gpa: run.getBigUint64(RUN.memory_fault_gpa, true),
        size: run.getBigUint64(RUN.memory_fault_size, true),
        private: (run.getBigUint64(RUN.memory_fault_flags, true) & MEMORY_EXIT_FLAG_PRIVATE) !== 0n,
        errno: 'EFAULT',
      };
    case EXIT_REASON.INTERNAL_ERROR: {
      const suberror = run.getUint32(RUN.internal_suberror, true);
      const ndata = Math.min(run.getUint32(RUN.internal_ndata, true), 16);
      const data: string[] = [];
      for (let i = 0; i < ndata; i++)
        data.push(`0x${run.getBigUint64(RUN.internal_data + 8 * i, true).toString(16)}`);
      return {
        reason: 'internal-error',
        suberror,
        detail: `KVM_INTERNAL_ERROR suberror ${suberror}, data [${data.join(', ')}]`,
      };
    }
    case EXIT_REASON.INTR:
      return { reason: 'intr' };
    case EXIT_REASON.FAIL_ENTRY:
      return {
        reason: 'internal-error',
        suberror: INTERNAL_ERROR.UNEXPECTED_EXIT_REASON,
        detail: `KVM_EXIT_FAIL_ENTRY: hardware_entry_failure_reason 0x${run
          .getBigUint64(RUN.fail_entry_reason, true)
          .toString(16)} on cpu ${run.getUint32(RUN.fail_entry_cpu, true)}`,
      };
    default:
      return {
        reason: 'internal-error',
        suberror: INTERNAL_ERROR.UNEXPECTED_EXIT_REASON,
        detail: `KVM_EXIT ${reason} has no form in the contract's Exit union`,
      };
  }
}

/** Writes the host's answer to an IN or MMIO read back into kvm_run, where the next KVM_RUN reads it. */
export function completeExit(exit: Exit | undefined, run: DataView, bytes: Uint8Array): void {
  if (!exit) return;
  if (exit.reason === 'io' && exit.direction === 'in') {
    const off = run.getUint32(RUN.io_data_offset, true); // a page offset into kvm_run: the high half is 0
    bytes.set(exit.data.subarray(0, exit.size * exit.count), off);
  } else if (exit.reason === 'mmio' && !exit.isWrite) {
    bytes.set(exit.data.subarray(0, Math.min(exit.len, 8)), RUN.mmio_data);
  }
}
