// SEV-SNP behind the core's arch seam: the `sev-snp` ops table is the SEV-ES one (same state object,
// ASIDs, INIT2, GHCB, #VC) plus what SNP adds on the guest side:
//   * the RMP (./snp-state.ts): private pages live in guest_memfd and are assigned to the guest when
//     faulted in (`sev_gmem_prepare`) or launched (SNP_LAUNCH_UPDATE, validated by the firmware); a
//     private access to a page whose Validated bit is clear raises #VC PAGE_NOT_VALIDATED (0x404);
//     a C-bit access to a shared page, or a plain access to a private one, is an RMP #NPF that KVM turns
//     into KVM_EXIT_MEMORY_FAULT (private/shared mismatch with the memory attributes);
//   * PVALIDATE (status codes 0 / FAIL_INPUT 1 / FAIL_SIZEMISMATCH 6 / NOUPDATE 255);
//   * the SNP GHCB requests: GHCB GPA preference and registration (REG_GPA, arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol(), and the -EINVAL
//     of sev_handle_vmgexit() for an unregistered GHCB GPA), page-state changes through the MSR protocol (`snp_begin_psc_msr`) and the PSC NAE
//     event with a descriptor in the scratch area (`snp_begin_psc`), and VMMCALL through the GHCB
//     (KVM_HC_MAP_GPA_RANGE, x86.c `__kvm_emulate_hypercall`) — each a KVM_EXIT_HYPERCALL (nr 12) when
//     the VM enabled KVM_CAP_EXIT_HYPERCALL bit 12 (arch/x86/kvm/svm/sev.c: snp_begin_psc()).
//
// Host writes: the host cannot write a guest-owned page. In Linux the private page is a guest_memfd
// folio the VMM cannot map (and a write through any mapping of an RMP-assigned page takes an RMP #PF that
// kills the writer); here it is the guest_memfd page, which no simulator API hands to the host. The
// VMM's userspace buffer of the slot is the *shared* backing: writing it never reaches the private page.
// The simulator paths that would write a guest-owned page refuse instead: SNP_LAUNCH_UPDATE on an
// assigned page (EEXIST inside populate → EIO), the legacy LAUNCH_UPDATE_DATA / DBG_ENCRYPT (EPERM on an
// SNP guest, arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl()).
//
// Conversion: converting a page to shared (KVM_SET_MEMORY_ATTRIBUTES without PRIVATE) makes its RMP
// entry hypervisor-owned again, as when the VMM discards the private backing of a converted range (the
// guest_memfd hole punch QEMU does, `sev_gmem_invalidate`); the guest_memfd bytes stay. A page converted
// back is assigned again on its next private access, not validated: the guest must PVALIDATE it anew.
// The model applies a conversion when the PSC / hypercall exit that asked for it completes, and lazily
// on the next access to the page.

import {
  Ghcb,
  GHCB_ERR,
  GHCB_LAYOUT,
  GHCB_MSR_CODE,
  GHCB_MSR_PREF_GPA_NONE,
  type GhcbField,
  ghcbValidBit,
  hex,
  PSC_OP,
  SVM_EXIT,
  SVM_VMGEXIT,
  VMGEXIT_PSC_ERROR,
  VMGEXIT_PSC_MAX_ENTRY,
} from '@kvmtest/coco';
import {
  argTypeError,
  type HypercallExit,
  KVM_HC,
  KvmError,
  MAP_GPA_RANGE,
  MEMORY_ATTRIBUTE,
  VECTOR,
} from '@kvmtest/kvm';
import type { AccessDecision, ArchCpu, ArchOps, ArchVcpu, ArchVm, MemAccess } from '../arch/ops.js';
import type { ResolvedConfig } from '../config.js';
import { guestCpuView, sevArchOps, sevPlatform, vcpuView, vmView } from './arch-ops.js';
import type { SevPlatform } from './platform.js';
import { PVALIDATE_RET, snpVcpu, snpVm, VC_PAGE_NOT_VALIDATED } from './snp-state.js';
import { INVALID_PAGE, type SevVmState, sevSnpGuest } from './state.js';

const SHARED: AccessDecision = Object.freeze({ kind: 'shared' });
const PRIVATE: AccessDecision = Object.freeze({ kind: 'private' });
const FAULT_PRIVATE: AccessDecision = Object.freeze({ kind: 'memory-fault', private: true });
const FAULT_SHARED: AccessDecision = Object.freeze({ kind: 'memory-fault', private: false });
const PAGE = 4096n;
/** KVM_ENOSYS / KVM_EINVAL / KVM_EPERM / KVM_EOPNOTSUPP (uapi kvm_para.h), negated into RAX. */
const KVM_ENOSYS = 1000n;
const KVM_EINVAL = 22n;
const KVM_EPERM = 1n;
const KVM_EOPNOTSUPP = 95n;
/** GHCB_MSR_PSC_RESP_ERROR: bit 63 | PSC_RESP (arch/x86/kvm/svm/sev.c: snp_begin_psc_msr()). */
const PSC_RESP_ERROR = (1n << 63n) | BigInt(GHCB_MSR_CODE.PSC_RESP);
const GHCB_SCRATCH_AREA_LIMIT = 16 * 4096;

function stateOf(vm: ArchVm): SevVmState {
  return vmView(vm).sev;
}

// ---- memory ---------------------------------------------------------------------------------------

// Converting to shared makes the page's RMP entry hypervisor-owned (see the header).
function syncPage(p: SevPlatform, s: SevVmState, gfn: bigint, attributes: bigint): void {
  if ((attributes & MEMORY_ATTRIBUTE.PRIVATE) === 0n && p.rmp.lookup(s, gfn) !== undefined)
    p.rmp.makeShared(s, gfn);
}

function syncRange(vm: ArchVm, gpa: bigint, npages: bigint): void {
  const p = sevPlatform(vm.kvm);
  const s = stateOf(vm);
  const first = gpa >> 12n;
  // Walk whichever is smaller: the range, or the VM's assigned pages.
  if (npages <= BigInt(p.rmp.countOf(s)))
    for (let i = 0n; i < npages; i++) syncPage(p, s, first + i, vm.memoryAttributes((first + i) * PAGE));
  else
    for (const gfn of p.rmp.gfnsOf(s))
      if (gfn >= first && gfn < first + npages) syncPage(p, s, gfn, vm.memoryAttributes(gfn * PAGE));
  vm.flushTlbs();
}

/** SNP's classification of a guest access (RMP checks after the nested walk; arch/x86/virt/svm/sev.c: rmp_make_private(), APM §15.36.10). */
export function snpClassifyAccess(vm: ArchVm, a: MemAccess): AccessDecision {
  const s = stateOf(vm);
  if (!sevSnpGuest(s)) return SHARED;
  const p = sevPlatform(vm.kvm);
  const gfn = a.gpa >> 12n;
  const attrPrivate = (a.attributes & MEMORY_ATTRIBUTE.PRIVATE) !== 0n;
  syncPage(p, s, gfn, a.attributes);
  // PVALIDATE's own translation: only the walk matters, its hook judges the page (FAIL_INPUT when the
  // RMP cannot give it to the guest), whatever the TLB held before.
  if (a.pvalidate === true) return attrPrivate && a.slot?.hasGmem === true ? PRIVATE : SHARED;
  // Page-table walks read private memory (the guest's page tables are launched private pages).
  const wantsPrivate = a.tagged || a.implicit;
  // kvm_mmu_faultin_pfn: a private fault on a shared GFN or the reverse → KVM_EXIT_MEMORY_FAULT.
  if (wantsPrivate !== attrPrivate) return wantsPrivate ? FAULT_PRIVATE : FAULT_SHARED;
  if (!wantsPrivate) return SHARED;
  if (a.slot === undefined || !a.slot.hasGmem) return FAULT_PRIVATE;
  // sev_gmem_prepare: a guest_memfd page faulted in is assigned to the guest, not validated.
  const e = p.rmp.lookup(s, gfn) ?? p.rmp.assign(s, gfn, s.asid, false, false);
  if (!e.validated)
    return {
      kind: 'exception',
      vector: VECTOR.VC,
      errorCode: VC_PAGE_NOT_VALIDATED,
      detail: `#VC PAGE_NOT_VALIDATED (0x404): private GPA ${hex(a.gpa)} is assigned to the guest but not validated (PVALIDATE it first)`,
    };
  return PRIVATE;
}

/** PVALIDATE of the 4 KiB page at `gpa` (the core translated the operand). Returns the status in RAX. */
export function snpPvalidate(cpu: ArchCpu, gpa: bigint, validate: boolean): number {
  const vm = cpu.vcpu.vm;
  try {
    // RAX must be aligned to the page size in ECX (4 KiB here).
    if ((gpa & 0xfffn) !== 0n) return PVALIDATE_RET.FAIL_INPUT;
    const s = stateOf(vm);
    const p = sevPlatform(vm.kvm);
    const gfn = gpa >> 12n;
    const slot = vm.memslotAt(gpa);
    // A page the RMP cannot assign to the guest (shared attribute, no guest_memfd): on hardware an RMP
    // #NPF KVM reports as KVM_EXIT_MEMORY_FAULT; a synchronous instruction cannot exit in the simulator,
    // so it answers FAIL_INPUT and changes nothing.
    if ((vm.memoryAttributes(gpa) & MEMORY_ATTRIBUTE.PRIVATE) === 0n || slot === undefined || !slot.hasGmem)
      return PVALIDATE_RET.FAIL_INPUT;
    const e = p.rmp.lookup(s, gfn) ?? p.rmp.assign(s, gfn, s.asid, false, false);
    if (e.validated === validate) return PVALIDATE_RET.FAIL_NOUPDATE;
    e.validated = validate;
    return PVALIDATE_RET.SUCCESS;
  } finally {
    // The operand's translation was cached without the validation check; drop it either way.
    vm.flushTlbs();
  }
}

// ---- VMGEXIT --------------------------------------------------------------------------------------

function hypercallExit(gpa: bigint, npages: bigint, attrs: bigint): HypercallExit {
  return {
    reason: 'hypercall',
    nr: BigInt(KVM_HC.MAP_GPA_RANGE),
    args: [gpa, npages, attrs],
    ret: 0n,
    longmode: true,
  };
}

// `snp_begin_psc_msr` / `snp_complete_psc_msr` (arch/x86/kvm/svm/sev.c; the GHCB MSR protocol's PSC_REQ, one 4K page per request).
async function pscMsr(cpu: ArchCpu, msr: bigint): Promise<void> {
  const vm = cpu.vcpu.vm;
  const st = vcpuView(cpu.vcpu).sev;
  const gfn = (msr >> 12n) & ((1n << 40n) - 1n);
  const op = Number((msr >> 52n) & 0xfn);
  if ((op !== PSC_OP.PRIVATE && op !== PSC_OP.SHARED) || !vm.hypercallExitEnabled(KVM_HC.MAP_GPA_RANGE)) {
    st.ghcbMsr = PSC_RESP_ERROR;
    return;
  }
  const attrs =
    (op === PSC_OP.PRIVATE ? MAP_GPA_RANGE.ENCRYPTED : MAP_GPA_RANGE.DECRYPTED) | MAP_GPA_RANGE.PAGE_SZ_4K;
  const done = await cpu.exitToHost(hypercallExit(gfn * PAGE, 1n, attrs));
  st.ghcbMsr = done.ret !== 0n ? PSC_RESP_ERROR : BigInt(GHCB_MSR_CODE.PSC_RESP);
  syncRange(vm, gfn * PAGE, 1n);
}

function has(valid: bigint, field: GhcbField): boolean {
  return ((valid >> BigInt(ghcbValidBit(field))) & 1n) === 1n;
}

function bad(ghcb: Ghcb, reason: number): void {
  ghcb.set('swExitInfo1', 2n);
  ghcb.set('swExitInfo2', BigInt(reason));
}

// The PSC scratch area (`setup_vmgexit_scratch`): inside the GHCB's shared buffer, or up to 16 pages
// of other shared memory. undefined = GHCB_ERR_INVALID_SCRATCH_AREA.
function pscScratch(cpu: ArchCpu, ghcbGpa: bigint, scratch: bigint): Uint8Array | undefined {
  if (scratch === 0n) return undefined;
  const view = guestCpuView(cpu);
  const page = ghcbGpa & ~0xfffn;
  const sbBeg = page + BigInt(GHCB_LAYOUT.SHARED_BUFFER_OFFSET);
  const sbEnd = sbBeg + BigInt(GHCB_LAYOUT.SHARED_BUFFER_SIZE);
  let len: number;
  if (scratch >= page && scratch < page + PAGE) {
    if (scratch < sbBeg || scratch >= sbEnd) return undefined;
    len = Number(sbEnd - scratch);
  } else len = Math.min(GHCB_SCRATCH_AREA_LIMIT, 8 + VMGEXIT_PSC_MAX_ENTRY * 8);
  const loc = view.resolveGpa(scratch);
  if (loc === undefined) return undefined;
  const n = Math.min(len, loc.buffer.length - loc.offset);
  if (n < 8) return undefined;
  return loc.buffer.subarray(loc.offset, loc.offset + n);
}

// `snp_begin_psc` / `snp_complete_one_psc` / `snp_complete_psc` (arch/x86/kvm/svm/sev.c): adjacent entries with the
// same operation and size become one KVM_HC_MAP_GPA_RANGE exit; PSMASH/UNSMASH entries are skipped.
async function pscGhcb(cpu: ArchCpu, ghcb: Ghcb, area: Uint8Array): Promise<void> {
  const vm = cpu.vcpu.vm;
  const complete = (ret: bigint) => {
    ghcb.set('swExitInfo1', 0n);
    ghcb.set('swExitInfo2', ret);
  };
  if (!vm.hypercallExitEnabled(KVM_HC.MAP_GPA_RANGE)) return complete(VMGEXIT_PSC_ERROR.GENERIC);
  const dv = new DataView(area.buffer, area.byteOffset, area.byteLength);
  const maxEntries = Math.floor((area.length - 8) / 8);
  const entryAt = (i: number) => dv.getBigUint64(8 + i * 8, true);
  for (;;) {
    const cur = dv.getUint16(0, true);
    const end = dv.getUint16(2, true);
    if (end >= VMGEXIT_PSC_MAX_ENTRY || end >= maxEntries) return complete(VMGEXIT_PSC_ERROR.INVALID_HDR);
    let idx = cur;
    let gfn = 0n;
    let npages = 0n;
    let huge = false;
    let op = 0;
    for (; idx <= end; idx++, dv.setUint16(0, dv.getUint16(0, true) + 1, true)) {
      const e = entryAt(idx);
      const curPage = e & 0xfffn;
      gfn = (e >> 12n) & ((1n << 40n) - 1n);
      op = Number((e >> 52n) & 0xfn);
      huge = ((e >> 56n) & 1n) === 1n;
      npages = huge ? 512n : 1n;
      if (curPage > npages || gfn % npages !== 0n) return complete(VMGEXIT_PSC_ERROR.INVALID_ENTRY);
      if (curPage !== 0n) {
        // A partly done 2M entry continues as 4K pages; a done 4K entry is skipped.
        gfn += curPage;
        npages -= curPage;
        huge = false;
        if (npages === 0n) continue;
      }
      break;
    }
    if (idx > end) return complete(0n);
    let inflight = 1;
    for (let j = idx + 1; j <= end; j++) {
      const e = entryAt(j);
      const jop = Number((e >> 52n) & 0xfn);
      const jgfn = (e >> 12n) & ((1n << 40n) - 1n);
      const jhuge = ((e >> 56n) & 1n) === 1n;
      if (jop !== op || jgfn !== gfn + npages || (e & 0xfffn) !== 0n || jhuge !== huge) break;
      inflight++;
      npages += huge ? 512n : 1n;
    }
    if (op === PSC_OP.PRIVATE || op === PSC_OP.SHARED) {
      const attrs =
        (op === PSC_OP.PRIVATE ? MAP_GPA_RANGE.ENCRYPTED : MAP_GPA_RANGE.DECRYPTED) |
        (huge ? MAP_GPA_RANGE.PAGE_SZ_2M : MAP_GPA_RANGE.PAGE_SZ_4K);
      const done = await cpu.exitToHost(hypercallExit(gfn * PAGE, npages, attrs));
      if (done.ret !== 0n) return complete(VMGEXIT_PSC_ERROR.GENERIC);
      syncRange(vm, gfn * PAGE, npages);
    }
    // __snp_complete_one_psc: the in-flight entries are done.
    for (let k = 0; k < inflight; k++) {
      const i = idx + k;
      const e = entryAt(i);
      dv.setBigUint64(8 + i * 8, (e & ~0xfffn) | (huge ? 512n : 1n), true);
      dv.setUint16(0, dv.getUint16(0, true) + 1, true);
    }
  }
}

// VMMCALL through the GHCB (exit code 0x81): `vmmcall_interception` → `kvm_emulate_hypercall`.
async function vmmcallGhcb(
  cpu: ArchCpu,
  ghcb: Ghcb,
  regs: { rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint },
  cpl: number,
): Promise<void> {
  const vm = cpu.vcpu.vm;
  const nr = regs.rax;
  let ret: bigint;
  if (cpl !== 0) ret = -KVM_EPERM;
  else
    switch (nr) {
      case BigInt(KVM_HC.VAPIC_POLL_IRQ):
      case BigInt(KVM_HC.KICK_CPU):
      case BigInt(KVM_HC.SCHED_YIELD):
        ret = 0n;
        break;
      case BigInt(KVM_HC.SEND_IPI):
        ret = -KVM_EOPNOTSUPP;
        break;
      case BigInt(KVM_HC.MAP_GPA_RANGE): {
        const gpa = regs.rbx;
        const npages = regs.rcx;
        const gfn = gpa >> 12n;
        if (!vm.hypercallExitEnabled(KVM_HC.MAP_GPA_RANGE)) ret = -KVM_ENOSYS;
        else if ((gpa & 0xfffn) !== 0n || npages === 0n || BigInt.asUintN(64, gfn + npages) <= gfn)
          ret = -KVM_EINVAL;
        else {
          const done = await cpu.exitToHost(hypercallExit(gpa, npages, regs.rdx));
          ret = done.ret;
          syncRange(vm, gpa, npages);
        }
        break;
      }
      default:
        ret = -KVM_ENOSYS;
    }
  // sev_es_sync_to_ghcb: RAX..RDX go back to the GHCB.
  ghcb.set('rax', BigInt.asUintN(64, ret));
  ghcb.set('rbx', BigInt.asUintN(64, regs.rbx));
  ghcb.set('rcx', BigInt.asUintN(64, regs.rcx));
  ghcb.set('rdx', BigInt.asUintN(64, regs.rdx));
}

// The GHCB exits SNP adds to the SEV-ES dispatcher (PSC, VMMCALL). Steps of arch/x86/kvm/svm/sev.c: sev_handle_vmgexit() (sev_es_sync_from_ghcb(), sev_es_validate_vmgexit(), clearing sw_exit_info) as the
// SEV-ES path does them. Returns false when the exit is not one of these (the SEV-ES path handles it).
async function snpGhcbExit(cpu: ArchCpu, gpa: bigint, buf: Uint8Array, off: number): Promise<boolean> {
  const ghcb = new Ghcb(buf.subarray(off, off + GHCB_LAYOUT.SIZE));
  const code = ghcb.get('swExitCode');
  const valid = ghcb.validBitmap;
  const scratch = has(valid, 'swScratch') ? ghcb.get('swScratch') : 0n;
  const regs = {
    rax: ghcb.getIfValid('rax'),
    rbx: ghcb.getIfValid('rbx'),
    rcx: ghcb.getIfValid('rcx'),
    rdx: ghcb.getIfValid('rdx'),
  };
  const cpl = Number(ghcb.getIfValid('cpl'));
  const usage = ghcb.usage;
  vcpuView(cpu.vcpu).sev.ghcbGpa = gpa;
  ghcb.clearValidBitmap();
  if (usage !== 0) {
    bad(ghcb, GHCB_ERR.INVALID_USAGE);
    return true;
  }
  const need = (...f: GhcbField[]) => f.every((x) => has(valid, x));
  if (!need('swExitCode', 'swExitInfo1', 'swExitInfo2')) {
    bad(ghcb, GHCB_ERR.MISSING_INPUT);
    return true;
  }
  if (code === BigInt(SVM_VMGEXIT.PSC)) {
    if (!need('swScratch')) {
      bad(ghcb, GHCB_ERR.MISSING_INPUT);
      return true;
    }
    ghcb.set('swExitInfo1', 0n);
    ghcb.set('swExitInfo2', 0n);
    const area = pscScratch(cpu, gpa, scratch);
    if (area === undefined) {
      bad(ghcb, GHCB_ERR.INVALID_SCRATCH_AREA);
      return true;
    }
    await pscGhcb(cpu, ghcb, area);
    return true;
  }
  if (!need('rax', 'cpl')) {
    bad(ghcb, GHCB_ERR.MISSING_INPUT);
    return true;
  }
  ghcb.set('swExitInfo1', 0n);
  ghcb.set('swExitInfo2', 0n);
  await vmmcallGhcb(cpu, ghcb, regs, cpl);
  return true;
}

// sw_exit_code (u64 at 0x390) is PSC (0x8000_0010) or VMMCALL (0x81): a cheap peek before the full path.
function isSnpExit(buf: Uint8Array, off: number): boolean {
  const at = off + 0x390;
  const lo = (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24)) >>> 0;
  if ((buf[at + 4]! | buf[at + 5]! | buf[at + 6]! | buf[at + 7]!) !== 0) return false;
  return lo === SVM_VMGEXIT.PSC || lo === SVM_EXIT.VMMCALL;
}

// `sev_handle_vmgexit` for an SNP guest: the SNP MSR-protocol requests and GHCB exits here, the rest
// through the SEV-ES path (`fallback`).
async function snpVmgexit(cpu: ArchCpu, fallback: (cpu: ArchCpu) => Promise<void>): Promise<void> {
  const st = vcpuView(cpu.vcpu).sev;
  const sv = snpVcpu(st);
  const msr = st.ghcbMsr;
  if ((msr & 0xfffn) !== 0n) {
    switch (Number(msr & 0xfffn)) {
      case GHCB_MSR_CODE.PREF_GPA_REQ:
        // KVM has no preference.
        st.ghcbMsr = (GHCB_MSR_PREF_GPA_NONE << 12n) | BigInt(GHCB_MSR_CODE.PREF_GPA_RESP);
        return;
      case GHCB_MSR_CODE.REG_GPA_REQ: {
        const gfn = msr >> 12n;
        sv.registeredGhcb = gfn << 12n;
        st.ghcbMsr = (gfn << 12n) | BigInt(GHCB_MSR_CODE.REG_GPA_RESP);
        return;
      }
      case GHCB_MSR_CODE.PSC_REQ:
        return pscMsr(cpu, msr);
      default:
        return fallback(cpu);
    }
  }
  // sev_handle_vmgexit(): no GHCB / unmappable → resume is the SEV-ES path's; here an unregistered GHCB GPA → EINVAL.
  const page = msr & ~0xfffn;
  const slot = msr === 0n ? undefined : cpu.vcpu.vm.memslotAt(page);
  if (slot !== undefined && slot.userspace.length !== 0) {
    if (sv.registeredGhcb === INVALID_PAGE || sv.registeredGhcb !== page)
      throw new KvmError(
        'EINVAL',
        'KVM_RUN',
        `SNP guest used GHCB GPA ${hex(msr)} without registering it (GHCB MSR REG_GPA_REQ), arch/x86/kvm/svm/sev.c: sev_handle_vmgexit()`,
      );
    const buf = slot.userspace;
    const off = Number(page - slot.gpa);
    if (
      off + GHCB_LAYOUT.SIZE <= buf.length &&
      isSnpExit(buf, off) &&
      (await snpGhcbExit(cpu, msr, buf, off))
    )
      return;
  }
  return fallback(cpu);
}

// ---- the ops table --------------------------------------------------------------------------------

/** The ops of a `sev-snp` VM: the SEV-ES ops plus SNP's memory, PVALIDATE, GHCB requests and teardown. */
export function snpArchOps(cfg: ResolvedConfig, base: Partial<ArchOps> = {}): ArchOps {
  const sev = sevArchOps('sev-snp', cfg, base);
  const sevVmgexit = sev.vmgexit!;
  return {
    ...sev,
    name: 'sev-snp',
    runCheck(vcpu: ArchVcpu) {
      // pre_sev_run: an SNP vCPU has no valid VMSA until SNP_LAUNCH_FINISH made it guest-owned.
      const v = vcpuView(vcpu);
      if (!snpVcpu(v.sev).vmsaLaunched)
        throw new KvmError(
          'EINVAL',
          'KVM_RUN',
          `vCPU ${vcpu.id} of the SNP VM has no VMSA yet (KVM_SEV_SNP_LAUNCH_FINISH has not run for it), arch/x86/kvm/svm/sev.c: pre_sev_run()`,
        );
    },
    classifyAccess: snpClassifyAccess,
    pvalidate: snpPvalidate,
    vmgexit(cpu: ArchCpu) {
      return snpVmgexit(cpu, (c) => sevVmgexit.call(sev, c));
    },
  };
}

/** Simulator-only facts of an SNP VM's launch, as its firmware context holds them. */
export interface SnpLaunchReport {
  /** Firmware guest state. */
  readonly state: 'init' | 'launch' | 'running';
  readonly policy: bigint;
  /** The launch digest: GCTX.LD, frozen at SNP_LAUNCH_FINISH (the attestation report's MEASUREMENT). */
  readonly measurement: Uint8Array;
  readonly hostData: Uint8Array;
  readonly asid: number;
  /** Pages taken by SNP_LAUNCH_UPDATE, and VMSAs measured at SNP_LAUNCH_FINISH. */
  readonly pagesUpdated: number;
  readonly vmsas: number;
  /** RMP entries assigned to this VM now. */
  readonly rmpAssigned: number;
}

/**
 * Simulator-only: what the SNP firmware holds for `vm` (a simulator Vm), or undefined when it has no SNP
 * context. In Linux the measurement is only visible through an SNP_GUEST_REQUEST attestation report.
 */
export function snpLaunchReport(vm: object): SnpLaunchReport | undefined {
  const av = vm as ArchVm;
  if (
    typeof av !== 'object' ||
    av === null ||
    typeof av.kvm?.hostState !== 'function' ||
    av.type !== 'sev-snp'
  )
    return undefined;
  const view = vmView(av);
  const gctx = snpVm(view.sev).gctx;
  if (gctx === 0) return undefined;
  const p = sevPlatform(av.kvm);
  const ctx = p.snp.context(gctx);
  if (ctx === undefined) return undefined;
  return Object.freeze({
    state: ctx.state,
    policy: ctx.policy,
    measurement: (ctx.measurement ?? ctx.digest.digest()).slice(),
    hostData: ctx.hostData.slice(),
    asid: ctx.asid,
    pagesUpdated: ctx.pagesUpdated,
    vmsas: ctx.vmsas,
    rmpAssigned: p.rmp.countOf(view.sev),
  });
}

/** Simulator-only: the RMP entry of the page backing `gpa` in an SNP VM, or undefined (hypervisor-owned). */
export function snpRmpEntry(
  vm: object,
  gpa: bigint,
): { readonly asid: number; readonly validated: boolean } | undefined {
  const av = vm as ArchVm;
  if (typeof gpa !== 'bigint' || gpa < 0n || gpa > 0xffff_ffff_ffff_ffffn)
    throw argTypeError('snpRmpEntry', 'gpa', 'a u64 bigint', gpa);
  if (
    typeof av !== 'object' ||
    av === null ||
    typeof av.kvm?.hostState !== 'function' ||
    av.type !== 'sev-snp'
  )
    return undefined;
  const e = sevPlatform(av.kvm).rmp.lookup(vmView(av).sev, gpa >> 12n);
  return e === undefined ? undefined : Object.freeze({ asid: e.asid, validated: e.validated });
}
