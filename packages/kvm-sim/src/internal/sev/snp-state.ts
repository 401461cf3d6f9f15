// SEV-SNP state on top of the SEV model's (`struct kvm_sev_info` keeps one `snp_context` pointer; the
// vCPU keeps its registered GHCB GPA): the per-VM and per-vCPU SNP slots, the host's Reverse Map Table
// (RMP) and the guest_memfd view the SNP code needs. The SEV state objects stay as they are; the SNP
// slots hang off them in WeakMaps, so an SEV/SEV-ES VM carries nothing SNP.

import type { ArchMemslot } from '../arch/ops.js';
import { INVALID_PAGE, type SevVcpuState, type SevVmState } from './state.js';

/** PVALIDATE status codes in RAX (AMD APM vol. 3 PVALIDATE; Linux `PVALIDATE_FAIL_*`; NOUPDATE is CF=1). */
export const PVALIDATE_RET = {
  SUCCESS: 0,
  FAIL_INPUT: 1,
  FAIL_SIZEMISMATCH: 6,
  FAIL_NOUPDATE: 255,
} as const;

/** #VC error code of a private access to a page whose RMP Validated bit is clear (APM vol. 2 §15.36.10). */
export const VC_PAGE_NOT_VALIDATED = 0x404;

/** One assigned RMP entry (a page owned by a guest). Pages without an entry are hypervisor-owned. */
export interface RmpEntry {
  /** The ASID the page is assigned to. */
  readonly asid: number;
  /** The Validated bit: set by PVALIDATE, or by the firmware for SNP_LAUNCH_UPDATE pages. */
  validated: boolean;
  /** Immutable (firmware pages: launch pages until LAUNCH_FINISH, VMSA pages). */
  immutable: boolean;
}

/**
 * The host's RMP, for the guest_memfd pages the SNP guests own. Entries are keyed by the owning VM's
 * SEV state and the GFN the page backs (the simulator's stand-in for a PFN: a guest_memfd page backs
 * exactly one GFN of its VM). `rmp_make_private` = `assign`, `rmp_make_shared` = `makeShared`.
 */
export class SnpRmp {
  readonly #tables = new Map<SevVmState, Map<bigint, RmpEntry>>();

  /** The entry of the page backing `gfn` in `owner`, or undefined (hypervisor-owned). */
  lookup(owner: SevVmState, gfn: bigint): RmpEntry | undefined {
    return this.#tables.get(owner)?.get(gfn);
  }

  /** rmp_make_private: the page becomes guest-owned (not validated unless the firmware validates it). */
  assign(owner: SevVmState, gfn: bigint, asid: number, validated: boolean, immutable: boolean): RmpEntry {
    let t = this.#tables.get(owner);
    if (t === undefined) {
      t = new Map();
      this.#tables.set(owner, t);
    }
    const e: RmpEntry = { asid, validated, immutable };
    t.set(gfn, e);
    return e;
  }

  /** rmp_make_shared: the page goes back to the hypervisor (the Validated bit is lost with the entry). */
  makeShared(owner: SevVmState, gfn: bigint): void {
    const t = this.#tables.get(owner);
    if (t === undefined) return;
    t.delete(gfn);
    if (t.size === 0) this.#tables.delete(owner);
  }

  /** sev_gmem_invalidate for every page of a VM being torn down: all its entries become hypervisor-owned. */
  release(owner: SevVmState): number {
    const n = this.#tables.get(owner)?.size ?? 0;
    this.#tables.delete(owner);
    return n;
  }

  /** GFNs of the guest-owned entries of one VM (a copy). */
  gfnsOf(owner: SevVmState): bigint[] {
    return [...(this.#tables.get(owner)?.keys() ?? [])];
  }

  /** Guest-owned entries of one VM. */
  countOf(owner: SevVmState): number {
    return this.#tables.get(owner)?.size ?? 0;
  }

  /** Guest-owned entries host-wide (0 once every SNP VM is gone). */
  get assignedCount(): number {
    let n = 0;
    for (const t of this.#tables.values()) n += t.size;
    return n;
  }
}

/** The SNP part of `struct kvm_sev_info`: the firmware guest context (`snp_context`), 0 = none. */
export interface SnpVmState {
  /** The firmware guest context handle (GCTX page) created by SNP_LAUNCH_START, 0 when none. */
  gctx: number;
  /** SNP_LAUNCH_FINISH succeeded (`kvm->arch.pre_fault_allowed`). */
  launched: boolean;
}

/** The SNP part of a vCPU: the registered GHCB GPA (`snp_ghcb_gpa` registration, arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol() REG_GPA). */
export interface SnpVcpuState {
  /** GPA the guest registered with REG_GPA_REQ, INVALID_PAGE until then. */
  registeredGhcb: bigint;
  /** The VMSA went through SNP_LAUNCH_UPDATE (type VMSA) at SNP_LAUNCH_FINISH. */
  vmsaLaunched: boolean;
}

const vmSlots = new WeakMap<SevVmState, SnpVmState>();
const vcpuSlots = new WeakMap<SevVcpuState, SnpVcpuState>();

/** The SNP slot of a VM (created on first use). */
export function snpVm(s: SevVmState): SnpVmState {
  let v = vmSlots.get(s);
  if (v === undefined) {
    v = { gctx: 0, launched: false };
    vmSlots.set(s, v);
  }
  return v;
}

/** The SNP slot of a vCPU (created on first use). */
export function snpVcpu(s: SevVcpuState): SnpVcpuState {
  let v = vcpuSlots.get(s);
  if (v === undefined) {
    v = { registeredGhcb: INVALID_PAGE, vmsaLaunched: false };
    vcpuSlots.set(s, v);
  }
  return v;
}

// ---- guest_memfd pages of a memslot ------------------------------------------------------------------

/** What the SNP code reads of the core's memslot besides the ArchMemslot view: its guest_memfd binding. */
interface GmemBoundSlot extends ArchMemslot {
  readonly gmem?: { page(index: number, allocate: boolean): Uint8Array | undefined } | undefined;
  readonly gmemOffset?: bigint;
}

/** The guest_memfd page backing `gpa` in `slot` (allocated when `allocate`), or undefined (no gmem file). */
export function gmemPage(slot: ArchMemslot, gpa: bigint, allocate: boolean): Uint8Array | undefined {
  const s = slot as GmemBoundSlot;
  if (!s.hasGmem || s.gmem === undefined) return undefined;
  const index = Number((gpa - s.gpa + (s.gmemOffset ?? 0n)) >> 12n);
  return s.gmem.page(index, allocate);
}
