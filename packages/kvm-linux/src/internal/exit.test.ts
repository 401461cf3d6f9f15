// Decoding of kvm_run exits the host cannot produce on demand (synthetic kvm_run contents).
import { EXIT_REASON, INTERNAL_ERROR } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { completeExit, decodeExit } from './exit.js';
import { RUN } from './uapi.js';

function run(reason: number, fill: (v: DataView) => void = () => {}) {
  const bytes = new Uint8Array(3 * 4096);
  const v = new DataView(bytes.buffer);
  v.setUint32(RUN.exit_reason, reason, true);
  fill(v);
  return { v, bytes };
}

describe('decodeExit', () => {
  it('decodes a hypercall with its six arguments and longmode', () => {
    const { v, bytes } = run(EXIT_REASON.HYPERCALL, (d) => {
      d.setBigUint64(RUN.hypercall_nr, 12n, true);
      for (let i = 0; i < 6; i++) d.setBigUint64(RUN.hypercall_args + 8 * i, BigInt(i + 1), true);
      d.setUint32(RUN.hypercall_longmode, 1, true);
    });
    expect(decodeExit(v, bytes)).toEqual({
      reason: 'hypercall',
      nr: 12n,
      args: [1n, 2n, 3n, 4n, 5n, 6n],
      ret: 0n,
      longmode: true,
    });
  });

  it('decodes system events by name and reports unnamed types as internal errors', () => {
    const named = run(EXIT_REASON.SYSTEM_EVENT, (d) => {
      d.setUint32(RUN.system_event_type, 6, true);
      d.setUint32(RUN.system_event_ndata, 2, true);
      d.setBigUint64(RUN.system_event_data, 0xan, true);
      d.setBigUint64(RUN.system_event_data + 8, 0xbn, true);
    });
    expect(decodeExit(named.v, named.bytes)).toEqual({
      reason: 'system-event',
      type: 'sev-term',
      data: [0xan, 0xbn],
    });
    const wakeup = run(EXIT_REASON.SYSTEM_EVENT, (d) => d.setUint32(RUN.system_event_type, 4, true));
    expect(decodeExit(wakeup.v, wakeup.bytes)).toMatchObject({
      reason: 'internal-error',
      suberror: INTERNAL_ERROR.UNEXPECTED_EXIT_REASON,
    });
  });

  it('decodes memory faults with the private flag', () => {
    const { v, bytes } = run(EXIT_REASON.MEMORY_FAULT, (d) => {
      d.setBigUint64(RUN.memory_fault_flags, 1n << 3n, true);
      d.setBigUint64(RUN.memory_fault_gpa, 0x10_0000n, true);
      d.setBigUint64(RUN.memory_fault_size, 0x1000n, true);
    });
    expect(decodeExit(v, bytes)).toEqual({
      reason: 'memory-fault',
      gpa: 0x10_0000n,
      size: 0x1000n,
      private: true,
      errno: 'EFAULT',
    });
  });

  it('decodes internal errors, FAIL_ENTRY and unknown reasons with their numbers in the detail', () => {
    const ie = run(EXIT_REASON.INTERNAL_ERROR, (d) => {
      d.setUint32(RUN.internal_suberror, 1, true);
      d.setUint32(RUN.internal_ndata, 1, true);
      d.setBigUint64(RUN.internal_data, 0xffn, true);
    });
    expect(decodeExit(ie.v, ie.bytes)).toEqual({
      reason: 'internal-error',
      suberror: 1,
      detail: 'KVM_INTERNAL_ERROR suberror 1, data [0xff]',
    });
    const fe = run(EXIT_REASON.FAIL_ENTRY, (d) => d.setBigUint64(RUN.fail_entry_reason, 0x21n, true));
    expect(decodeExit(fe.v, fe.bytes)).toMatchObject({
      reason: 'internal-error',
      detail: expect.stringMatching(/FAIL_ENTRY.*0x21/),
    });
    const unknown = run(29);
    expect(decodeExit(unknown.v, unknown.bytes)).toMatchObject({
      detail: expect.stringMatching(/KVM_EXIT 29/),
    });
  });

  it('copies OUT data, and writes IN data back at data_offset for the next run', () => {
    const out = run(EXIT_REASON.IO, (d) => {
      d.setUint8(RUN.io_direction, 1);
      d.setUint8(RUN.io_size, 2);
      d.setUint16(RUN.io_port, 0x3f8, true);
      d.setUint32(RUN.io_count, 2, true);
      d.setBigUint64(RUN.io_data_offset, 4096n, true);
    });
    out.bytes.set([1, 2, 3, 4], 4096);
    const e = decodeExit(out.v, out.bytes);
    expect(e).toMatchObject({ reason: 'io', direction: 'out', port: 0x3f8, size: 2, count: 2 });
    out.bytes[4096] = 9; // the copy does not follow kvm_run
    expect([...(e as { data: Uint8Array }).data]).toEqual([1, 2, 3, 4]);
    out.v.setUint8(RUN.io_direction, 0);
    const inn = decodeExit(out.v, out.bytes) as { data: Uint8Array };
    inn.data.set([5, 6, 7, 8]);
    completeExit(inn as never, out.v, out.bytes);
    expect([...out.bytes.subarray(4096, 4100)]).toEqual([5, 6, 7, 8]);
  });
});
