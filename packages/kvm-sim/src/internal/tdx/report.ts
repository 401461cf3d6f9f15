// Simulator-only introspection of a TD: what the TDX module knows (state, KeyID, attributes, GPAW,
// MRTD) and a real host would expose only through attestation (TDG.MR.REPORT, a quote). Tests use it
// to check the measurement a launch produced; it is not a kernel interface.

import { tdxSharedBit } from '@kvmtest/coco';
import type { ArchVcpu, ArchVm } from '../arch/ops.js';
import { TD_STATE } from './constants.js';
import { tdOf, tdVcpuOf } from './state.js';

/** A TD's module-side facts, as the simulator holds them. */
export interface TdxReport {
  readonly state: 'uninitialized' | 'initialized' | 'runnable';
  /** The TD's host KeyID, or -1 before KVM_TDX_INIT_VM. */
  readonly hkid: number;
  readonly attributes: bigint;
  readonly xfam: bigint;
  readonly gpaw: 48 | 52 | undefined;
  /** The shared (S) bit position, GPAW − 1. */
  readonly sharedBit: 47 | 51 | undefined;
  /** MRTD (48 bytes): the finalized value once RUNNABLE, else the running digest; undefined before INIT_VM. */
  readonly mrtd: Uint8Array | undefined;
  readonly finalized: boolean;
  /** Pages TDH.MEM.PAGE.ADD added, and how many of them TDH.MR.EXTEND measured. */
  readonly pagesAdded: number;
  readonly pagesMeasured: number;
}

const STATE_NAME = {
  [TD_STATE.UNINITIALIZED]: 'uninitialized',
  [TD_STATE.INITIALIZED]: 'initialized',
  [TD_STATE.RUNNABLE]: 'runnable',
} as const;

/** Simulator-only: the TD facts of `vm` (a Vm of the simulator), or undefined when it is not a TD. */
export function tdxReport(vm: object): TdxReport | undefined {
  if (typeof vm !== 'object' || vm === null) return undefined;
  const td = tdOf(vm as ArchVm);
  if (td === undefined) return undefined;
  const mrtd = td.mrtd?.digest();
  return Object.freeze({
    state: STATE_NAME[td.state],
    hkid: td.hkid,
    attributes: td.attributes,
    xfam: td.xfam,
    gpaw: td.gpaw,
    sharedBit: td.gpaw === undefined ? undefined : tdxSharedBit(td.gpaw),
    mrtd: mrtd?.slice(),
    finalized: td.state === TD_STATE.RUNNABLE,
    pagesAdded: td.pagesAdded,
    pagesMeasured: td.pagesMeasured,
  });
}

/** A TD vCPU's module-side facts. */
export interface TdxVcpuReport {
  readonly initialized: boolean;
  /** VCPU_INDEX (TDH.VP.INIT order), -1 before KVM_TDX_INIT_VCPU. */
  readonly index: number;
  readonly initialRcx: bigint;
}

/** Simulator-only: the TD-vCPU facts of `vcpu`, or undefined when it is not a TD vCPU. */
export function tdxVcpuReport(vcpu: object): TdxVcpuReport | undefined {
  if (typeof vcpu !== 'object' || vcpu === null) return undefined;
  const tv = tdVcpuOf(vcpu as ArchVcpu);
  if (tv === undefined) return undefined;
  return Object.freeze({ initialized: tv.state === 1, index: tv.index, initialRcx: tv.initialRcx });
}

/**
 * Simulator-only: marks an event pending on `vcpu` (kvm_vcpu_has_events), the condition under
 * which TDVMCALL<MapGPA> stops between chunks with RETRY. The simulator injects no interrupts, so
 * only a test makes this true.
 */
export function tdxSetEventPending(vcpu: object, pending: boolean): void {
  const tv = tdVcpuOf(vcpu as ArchVcpu);
  if (tv === undefined) throw new TypeError('tdxSetEventPending: not a TD vCPU of the simulator');
  tv.eventPending = pending;
}
