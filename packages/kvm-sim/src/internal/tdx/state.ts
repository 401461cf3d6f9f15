// Per-TD and per-TD-vCPU state of the simulated TDX module and of KVM's `struct kvm_tdx` /
// `struct vcpu_tdx` (arch/x86/kvm/vmx/tdx.h), kept in the `arch` slot of the core's VM and vCPU.

import { type CpuidEntry, KvmError } from '@kvmtest/kvm';
import type { ArchKvm, ArchVcpu, ArchVm } from '../arch/ops.js';
import { TD_STATE, TD_VCPU_STATE, TDX_GUEST_KEYIDS, type TdState } from './constants.js';
import type { LazyMrtd } from './measure.js';
import type { GmemPages } from './views.js';

/** What a #VE recorded for TDG.VP.VEINFO.GET (the TDX module's VE_INFO area). */
export interface VeInfo {
  readonly exitReason: number;
  readonly exitQualification: bigint;
  readonly gla: bigint;
  readonly gpa: bigint;
  readonly instructionLength: number;
}

/** `struct kvm_tdx` plus the module's TDR/TDCS facts the simulator needs. */
export interface TdxVmState {
  state: TdState;
  /** Host KeyID (> 0 once INIT_VM succeeded; is_hkid_assigned). */
  hkid: number;
  attributes: bigint;
  xfam: bigint;
  /** 48 or 52 once INITIALIZED. */
  gpaw: 48 | 52 | undefined;
  /** The shared bit as a GPA mask (kvm->arch.gfn_direct_bits << PAGE_SHIFT); 0 before INIT_VM. */
  sharedMask: bigint;
  /** CPUID the VMM configured at INIT_VM (the entries the module accepted). */
  cpuid: readonly CpuidEntry[];
  /** kvm->max_vcpus for a TD: min(KVM_MAX_VCPUS, present CPUs) (tdx_vm_init). */
  readonly maxVcpus: number;
  /** Running measurement (TDH.MEM.PAGE.ADD / TDH.MR.EXTEND), undefined before INIT_VM. */
  mrtd: LazyMrtd | undefined;
  /** Private GFNs mapped in the secure EPT: added by INIT_MEM_REGION or accepted by the guest. */
  readonly mapped: Set<bigint>;
  /** guest_memfd pages already populated (kvm_gmem_populate's "prepared" folios), per file. */
  readonly prepared: WeakMap<GmemPages, Set<number>>;
  /** Pages added with TDH.MEM.PAGE.ADD, and how many of them were measured. */
  pagesAdded: number;
  pagesMeasured: number;
  /** TDH.VP.INIT calls so far (the next vCPU's VCPU_INDEX). */
  vcpusInitialized: number;
  /** VE_INFO of the last #VE on a pending private page (the access hook does not know the vCPU). */
  lastPendingVe: VeInfo | undefined;
}

/** `struct vcpu_tdx`. */
export interface TdxVcpuState {
  state: (typeof TD_VCPU_STATE)[keyof typeof TD_VCPU_STATE];
  /** VCPU_INDEX the module gave at TDH.VP.INIT. */
  index: number;
  /** The RCX value INIT_VCPU passed (the guest BIOS's auxiliary datum). */
  initialRcx: bigint;
  /** APIC_BASE (x2APIC once INIT_VCPU ran). */
  apicBase: bigint;
  /** VE_INFO: valid until TDG.VP.VEINFO.GET reads it. */
  veInfo: VeInfo | undefined;
  /** Simulator stand-in for kvm_vcpu_has_events(): set by tests to see TDVMCALL<MapGPA> return RETRY. */
  eventPending: boolean;
}

/** A fresh, UNINITIALIZED TD (tdx_vm_init). */
export function newTdxVmState(maxVcpus: number): TdxVmState {
  return {
    state: TD_STATE.UNINITIALIZED,
    hkid: -1,
    attributes: 0n,
    xfam: 0n,
    gpaw: undefined,
    sharedMask: 0n,
    cpuid: [],
    maxVcpus,
    mrtd: undefined,
    mapped: new Set(),
    prepared: new WeakMap(),
    pagesAdded: 0,
    pagesMeasured: 0,
    vcpusInitialized: 0,
    lastPendingVe: undefined,
  };
}

/** A fresh TD vCPU (tdx_vcpu_create). */
export function newTdxVcpuState(vcpuId: number): TdxVcpuState {
  return {
    state: TD_VCPU_STATE.UNINITIALIZED,
    index: -1,
    initialRcx: 0n,
    apicBase: 0xfee0_0000n | (1n << 11n) | (vcpuId === 0 ? 1n << 8n : 0n),
    veInfo: undefined,
    eventPending: false,
  };
}

const STATE = Symbol('tdx');

/** Tags the arch slot so a foreign state (another arch's) is never mistaken for a TD's. */
interface Tagged<T> {
  readonly [STATE]: T;
}

/** Wraps a TD state for the view's `arch` slot. */
export function tagState<T>(s: T): Tagged<T> {
  return { [STATE]: s };
}

/** The TD state of `vm`, or undefined when `vm` is not a TD of this model. */
export function tdOf(vm: ArchVm): TdxVmState | undefined {
  const a = vm.arch as Partial<Tagged<TdxVmState>> | undefined;
  return a?.[STATE];
}

/** The TD vCPU state of `vcpu`, or undefined when it is not a TD vCPU of this model. */
export function tdVcpuOf(vcpu: ArchVcpu): TdxVcpuState | undefined {
  const a = vcpu.arch as Partial<Tagged<TdxVcpuState>> | undefined;
  return a?.[STATE];
}

/** The process-wide pool of TDX private KeyIDs (`tdx_guest_keyid_pool`). */
export interface KeyIdPool {
  readonly inUse: Set<number>;
}

/** This host's KeyID pool. */
export function keyIdPool(kvm: ArchKvm): KeyIdPool {
  return kvm.hostState<KeyIdPool>('tdx.keyids', () => ({ inUse: new Set() }));
}

/** tdx_guest_keyid_alloc: the lowest free KeyID; ida_alloc_range answers ENOSPC when none is left. */
export function allocKeyId(kvm: ArchKvm, op: string): number {
  const pool = keyIdPool(kvm);
  for (let id = 1; id <= TDX_GUEST_KEYIDS; id++) if (!pool.inUse.has(id)) return id;
  throw new KvmError('ENOSPC', op, `all ${TDX_GUEST_KEYIDS} TDX private KeyIDs are in use`);
}

/** Marks `id` used (after every check of the command passed). */
export function takeKeyId(kvm: ArchKvm, id: number): void {
  keyIdPool(kvm).inUse.add(id);
}

/** tdx_hkid_free. */
export function freeKeyId(kvm: ArchKvm, id: number): void {
  keyIdPool(kvm).inUse.delete(id);
}
