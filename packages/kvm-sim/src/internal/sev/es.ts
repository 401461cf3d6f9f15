// SEV-ES as the guest meets it (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit()): the SEV status MSR, #VC for intercepted instructions, the
// GHCB MSR protocol and VMGEXIT through a GHCB page in shared memory — validated the way KVM does
// (`sev_handle_vmgexit`, `sev_es_validate_vmgexit`) and turned into ordinary exits (IOIO → `io`).
// The core's guest CPU calls these; they never touch the core's objects except through the views.

import {
  GHCB_ERR,
  GHCB_FIELD,
  GHCB_LAYOUT,
  GHCB_MSR_CODE,
  Ghcb,
  type GhcbField,
  ghcbValidBit,
  SEV_MSR,
  SVM_EXIT,
  SVM_VMGEXIT,
  sevStatusFor,
} from '@kvmtest/coco';
import type { Errno, Exit } from '@kvmtest/kvm';
import type { SevPlatformCore } from './types.js';
import { sevEsGuest, sevSnpGuest, type SevVmState } from './state.js';
import type { PendingVmgexit, Regs4, SevGuestCpuView, SevVcpuView } from './views.js';

/** Guest events that an SEV-ES guest cannot let the hypervisor see directly (they raise #VC instead). */
export type VcEvent =
  | 'io'
  | 'cpuid'
  | 'msr'
  | 'vmmcall'
  | 'mmio'
  | 'rdtsc'
  | 'rdtscp'
  | 'wbinvd'
  | 'invd'
  | 'xsetbv';

/** The #VC vector (X86_TRAP_VC, arch/x86/include/asm/trapnr.h). */
export const VC_VECTOR = 29;

const VC_CODE: Record<VcEvent, number> = {
  io: SVM_EXIT.IOIO,
  cpuid: SVM_EXIT.CPUID,
  msr: SVM_EXIT.MSR,
  vmmcall: SVM_EXIT.VMMCALL,
  mmio: SVM_EXIT.NPF,
  rdtsc: SVM_EXIT.RDTSC,
  rdtscp: SVM_EXIT.RDTSCP,
  wbinvd: SVM_EXIT.WBINVD,
  invd: SVM_EXIT.INVD,
  // XSETBV is intercepted for SEV-ES guests (svm.c: init_vmcb() sets INTERCEPT_XSETBV).
  xsetbv: SVM_EXIT.XSETBV,
};

/**
 * The #VC error code (the SVM exit code) for `event` in this VM, or undefined when the event does not
 * trap (not an SEV-ES guest; or an MSR the hardware lets through: the GHCB MSR and SEV status MSR).
 */
export function vcErrorCode(s: SevVmState, event: VcEvent, msr?: number): number | undefined {
  if (!sevEsGuest(s)) return undefined;
  if (event === 'msr' && (msr === SEV_MSR.MSR_AMD64_SEV_ES_GHCB || msr === SEV_MSR.MSR_AMD64_SEV))
    return undefined;
  return VC_CODE[event];
}

/** RDMSR 0xC0010131 (arch/x86/include/asm/msr-index.h: MSR_AMD64_SEV_*): 0 for a non-SEV guest; SEV bit 0; SEV-ES bit 1 and VMSA features << 2. */
export function sevStatusMsr(s: SevVmState): bigint {
  if (!s.active) return 0n;
  if (sevSnpGuest(s)) return sevStatusFor('sev-snp', s.vmsaFeatures);
  return s.esActive ? sevStatusFor('sev-es', s.vmsaFeatures) : sevStatusFor('sev');
}

/** RDMSR of the GHCB MSR. */
export function ghcbMsrRead(vcpu: SevVcpuView): bigint {
  return vcpu.sev.ghcbMsr;
}

/** WRMSR of the GHCB MSR. */
export function ghcbMsrWrite(vcpu: SevVcpuView, value: bigint): void {
  vcpu.sev.ghcbMsr = BigInt.asUintN(64, value);
}

/** The SEV_INFO response: [63:48] max GHCB version, [47:32] min (1), [31:24] C-bit position (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit_msr_protocol()). */
export function sevInfoResponse(p: SevPlatformCore, s: SevVmState): bigint {
  return (
    (BigInt(s.ghcbVersion) << 48n) |
    (1n << 32n) |
    (BigInt(p.info.cBit) << 24n) |
    BigInt(GHCB_MSR_CODE.SEV_INFO_RESP)
  );
}

/** `sev_es_vcpu_reset`: an SEV-ES vCPU starts with the SEV_INFO response in its GHCB MSR. */
export function vcpuReset(p: SevPlatformCore, s: SevVmState, vcpu: SevVcpuView): void {
  if (sevEsGuest(s)) vcpu.sev.ghcbMsr = sevInfoResponse(p, s);
}

/** What a VMGEXIT led to: back to the guest, an exit to userspace, or KVM_RUN failing. */
export type VmgexitOutcome =
  | { readonly kind: 'resume' }
  | { readonly kind: 'exit'; readonly exit: Exit }
  | { readonly kind: 'error'; readonly errno: Errno; readonly reason: string };

const RESUME: VmgexitOutcome = Object.freeze({ kind: 'resume' });
const GHCB_HV_FT_SUPPORTED = 3n; // SNP | SNP_AP_CREATION
const GHCB_SCRATCH_AREA_LIMIT = 16 * 4096;
const SEV_TERM_EXIT = (data: bigint): VmgexitOutcome => ({
  kind: 'exit',
  exit: { reason: 'system-event', type: 'sev-term', data: [data] },
});

/** VMGEXIT (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit()): the MSR protocol when GHCBData[11:0] ≠ 0, else the GHCB page at that GPA. */
export function vmgexit(p: SevPlatformCore, cpu: SevGuestCpuView): VmgexitOutcome {
  const s = cpu.vm.sev;
  if (!sevEsGuest(s))
    throw new Error('internal: VMGEXIT handled as SEV-ES on a VM that is not an SEV-ES guest');
  const msr = cpu.vcpu.sev.ghcbMsr;
  if ((msr & 0xfffn) !== 0n) return msrProtocol(p, cpu, msr);
  return ghcbExit(cpu, msr);
}

// The GHCB MSR protocol (sev_handle_vmgexit_msr_protocol()).
function msrProtocol(p: SevPlatformCore, cpu: SevGuestCpuView, msr: bigint): VmgexitOutcome {
  const s = cpu.vm.sev;
  const st = cpu.vcpu.sev;
  const code = Number(msr & 0xfffn);
  switch (code) {
    case GHCB_MSR_CODE.SEV_INFO_REQ:
      st.ghcbMsr = sevInfoResponse(p, s);
      return RESUME;
    case GHCB_MSR_CODE.CPUID_REQ: {
      const fn = Number(msr >> 32n);
      const reg = Number((msr >> 30n) & 3n);
      const r = cpu.cpuid(fn, 0);
      const v = [r.eax, r.ebx, r.ecx, r.edx][reg]! >>> 0;
      st.ghcbMsr = (BigInt(v) << 32n) | (BigInt(reg) << 30n) | BigInt(GHCB_MSR_CODE.CPUID_RESP);
      return RESUME;
    }
    case GHCB_MSR_CODE.AP_RESET_HOLD_REQ:
      // The AP would park until a SIPI; the simulator answers at once.
      st.ghcbMsr = (1n << 12n) | BigInt(GHCB_MSR_CODE.AP_RESET_HOLD_RESP);
      return RESUME;
    case GHCB_MSR_CODE.HV_FT_REQ:
      st.ghcbMsr = (GHCB_HV_FT_SUPPORTED << 12n) | BigInt(GHCB_MSR_CODE.HV_FT_RESP);
      return RESUME;
    case GHCB_MSR_CODE.TERM_REQ:
      return SEV_TERM_EXIT(msr);
    case GHCB_MSR_CODE.PREF_GPA_REQ:
    case GHCB_MSR_CODE.REG_GPA_REQ:
    case GHCB_MSR_CODE.PSC_REQ:
      // SNP-only requests from a non-SNP guest are treated as a termination request.
      if (!sevSnpGuest(s)) return SEV_TERM_EXIT(msr);
      throw new Error('internal: SNP MSR-protocol requests are not modelled by the SEV/SEV-ES model');
    default:
      // Unknown code: the MSR keeps its value and the guest resumes.
      return RESUME;
  }
}

/** KVM's copy of what the guest marked valid (`sev_es_sync_from_ghcb`). */
interface GhcbSnapshot {
  readonly valid: bigint;
  readonly exitCode: bigint;
  readonly info1: bigint;
  readonly info2: bigint;
  readonly scratch: bigint;
  readonly regs: { rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint };
  readonly usage: number;
}

function has(snap: GhcbSnapshot, field: GhcbField): boolean {
  return (snap.valid & VALID_MASK[field]) !== 0n;
}

/** Each field's bit in the 128-bit valid bitmap, as a mask (`has` without a BigInt shift per test). */
const VALID_MASK = Object.fromEntries(
  (Object.keys(GHCB_FIELD) as GhcbField[]).map((f) => [f, 1n << BigInt(ghcbValidBit(f))]),
) as Record<GhcbField, bigint>;

/**
 * The exit code as a number for the switches below: every SVM_EXIT / SVM_VMGEXIT code is a u32, so a
 * larger code (-1 here) matches no case, as it matched none of the BigInt cases.
 */
function exitCodeNumber(g: GhcbSnapshot): number {
  return g.exitCode <= 0xffff_ffffn ? Number(g.exitCode) : -1;
}

// The last GHCB page mapped: a Ghcb is only a view over its bytes, so the same bytes reuse it.
let lastGhcbBytes: Uint8Array | undefined;
let lastGhcbOffset = -1;
let lastGhcb: Ghcb | undefined;

function mapGhcb(cpu: SevGuestCpuView, gpa: bigint): Ghcb | undefined {
  const page = gpa & ~0xfffn;
  const loc = cpu.resolveGpa(page);
  if (loc === undefined || loc.offset + GHCB_LAYOUT.SIZE > loc.buffer.length) return undefined;
  if (loc.buffer === lastGhcbBytes && loc.offset === lastGhcbOffset) return lastGhcb;
  const ghcb = new Ghcb(loc.buffer.subarray(loc.offset, loc.offset + GHCB_LAYOUT.SIZE));
  lastGhcbBytes = loc.buffer;
  lastGhcbOffset = loc.offset;
  lastGhcb = ghcb;
  return ghcb;
}

// The GHCB page path of sev_handle_vmgexit(): map, sev_es_sync_from_ghcb(), sev_es_validate_vmgexit(), dispatch, sev_es_sync_to_ghcb().
function ghcbExit(cpu: SevGuestCpuView, gpa: bigint): VmgexitOutcome {
  const st = cpu.vcpu.sev;
  // #2: no GHCB, or one that cannot be mapped → straight back to the guest.
  if (gpa === 0n) return RESUME;
  const ghcb = mapGhcb(cpu, gpa);
  if (ghcb === undefined) return RESUME;
  st.ghcbGpa = gpa;
  // #3: copy in what is marked valid, then clear the guest's valid bitmap.
  const snap: GhcbSnapshot = {
    valid: ghcb.validBitmap,
    exitCode: ghcb.get('swExitCode'),
    info1: ghcb.get('swExitInfo1'),
    info2: ghcb.get('swExitInfo2'),
    scratch: ghcb.getIfValid('swScratch'),
    regs: {
      rax: ghcb.getIfValid('rax'),
      rbx: ghcb.getIfValid('rbx'),
      rcx: ghcb.getIfValid('rcx'),
      rdx: ghcb.getIfValid('rdx'),
    },
    usage: ghcb.usage,
  };
  ghcb.clearValidBitmap();
  // #5: validation; a failure is reported in the GHCB and the guest resumes.
  const bad = validate(cpu.vm.sev, snap);
  if (bad !== undefined) {
    ghcb.set('swExitInfo1', 2n);
    ghcb.set('swExitInfo2', BigInt(bad));
    return RESUME;
  }
  // #6
  ghcb.set('swExitInfo1', 0n);
  ghcb.set('swExitInfo2', 0n);
  const regs = { ...snap.regs };
  const pend: PendingVmgexit = { ghcbGpa: gpa, regs, io: undefined, mmioScratch: undefined };
  const out = dispatch(cpu, ghcb, pend, snap);
  if (out.kind === 'resume') syncToGhcb(ghcb, regs);
  else if (out.kind === 'exit') st.pendingExit = pend;
  return out;
}

// `sev_es_validate_vmgexit` (arch/x86/kvm/svm/sev.c): a GHCB_ERR_* reason, or undefined when the request is valid.
// MISSING_INPUT unless every one of `fields` is valid in the snapshot.
function need(g: GhcbSnapshot, ...fields: GhcbField[]): number | undefined {
  for (const f of fields) if (!has(g, f)) return GHCB_ERR.MISSING_INPUT;
  return undefined;
}

function validate(s: SevVmState, g: GhcbSnapshot): number | undefined {
  if (g.usage !== 0) return GHCB_ERR.INVALID_USAGE;
  if (!has(g, 'swExitCode') || !has(g, 'swExitInfo1') || !has(g, 'swExitInfo2'))
    return GHCB_ERR.MISSING_INPUT;
  switch (exitCodeNumber(g)) {
    case SVM_EXIT.READ_DR7:
    case SVM_EXIT.RDTSC:
    case SVM_EXIT.RDTSCP:
    case SVM_EXIT.INVD:
    case SVM_EXIT.WBINVD:
    case SVM_VMGEXIT.NMI_COMPLETE:
    case SVM_VMGEXIT.AP_HLT_LOOP:
    case SVM_VMGEXIT.AP_JUMP_TABLE:
    case SVM_VMGEXIT.UNSUPPORTED_EVENT:
    case SVM_VMGEXIT.HV_FEATURES:
    case SVM_VMGEXIT.TERM_REQUEST:
      return undefined;
    case SVM_EXIT.WRITE_DR7:
      return need(g, 'rax');
    case SVM_EXIT.RDPMC:
      return need(g, 'rcx');
    case SVM_EXIT.CPUID:
      return need(g, 'rax', 'rcx') ?? (g.regs.rax === 0xdn ? need(g, 'xcr0') : undefined);
    case SVM_EXIT.IOIO:
      if (g.info1 & 4n) return need(g, 'swScratch');
      return g.info1 & 1n ? undefined : need(g, 'rax');
    case SVM_EXIT.MSR:
      return need(g, 'rcx') ?? (g.info1 !== 0n ? need(g, 'rax', 'rdx') : undefined);
    case SVM_EXIT.VMMCALL:
      return need(g, 'rax', 'cpl');
    case SVM_EXIT.MONITOR:
      return need(g, 'rax', 'rcx', 'rdx');
    case SVM_EXIT.MWAIT:
      return need(g, 'rax', 'rcx');
    case SVM_VMGEXIT.MMIO_READ:
    case SVM_VMGEXIT.MMIO_WRITE:
      return need(g, 'swScratch');
    case SVM_VMGEXIT.AP_CREATION:
    case SVM_VMGEXIT.PSC:
    case SVM_VMGEXIT.GUEST_REQUEST:
    case SVM_VMGEXIT.EXT_GUEST_REQUEST:
      // SNP-only exits are not valid events for an SEV-ES guest.
      return sevSnpGuest(s) ? undefined : GHCB_ERR.INVALID_EVENT;
    default:
      return GHCB_ERR.INVALID_EVENT;
  }
}

/** The event KVM reports back for a #GP it would inject (X86_TRAP_GP | SVM_EVTINJ_TYPE_EXEPT | SVM_EVTINJ_VALID). */
export const GHCB_GP_EVENT = 13n | (3n << 8n) | (1n << 31n);

// MSR through the GHCB: RCX = MSR, sw_exit_info_1 = 0 read / 1 write (RDX:RAX); an MSR KVM refuses
// is reported as a #GP to inject (sw_exit_info_1 = 1, sw_exit_info_2 = the event).
function msrExit(cpu: SevGuestCpuView, ghcb: Ghcb, g: GhcbSnapshot, regs: Regs4): VmgexitOutcome {
  const msr = Number(regs.rcx & 0xffff_ffffn);
  if (g.info1 === 0n) {
    const v = cpu.rdmsr?.(msr);
    if (v === undefined) return injectGp(ghcb);
    regs.rax = v & 0xffff_ffffn;
    regs.rdx = (v >> 32n) & 0xffff_ffffn;
    return RESUME;
  }
  const value = ((regs.rdx & 0xffff_ffffn) << 32n) | (regs.rax & 0xffff_ffffn);
  return cpu.wrmsr?.(msr, value) ? RESUME : injectGp(ghcb);
}

function injectGp(ghcb: Ghcb): VmgexitOutcome {
  ghcb.set('swExitInfo1', 1n);
  ghcb.set('swExitInfo2', GHCB_GP_EVENT);
  return RESUME;
}

function dispatch(cpu: SevGuestCpuView, ghcb: Ghcb, pend: PendingVmgexit, g: GhcbSnapshot): VmgexitOutcome {
  const regs = pend.regs;
  const gpa = pend.ghcbGpa;
  switch (exitCodeNumber(g)) {
    case SVM_EXIT.IOIO:
      return ioio(cpu, ghcb, pend, g);
    case SVM_EXIT.CPUID: {
      const r = cpu.cpuid(Number(regs.rax & 0xffff_ffffn), Number(regs.rcx & 0xffff_ffffn));
      regs.rax = BigInt(r.eax >>> 0);
      regs.rbx = BigInt(r.ebx >>> 0);
      regs.rcx = BigInt(r.ecx >>> 0);
      regs.rdx = BigInt(r.edx >>> 0);
      return RESUME;
    }
    case SVM_VMGEXIT.MMIO_READ:
    case SVM_VMGEXIT.MMIO_WRITE:
      return mmio(cpu, ghcb, pend, g);
    case SVM_EXIT.MSR:
      return msrExit(cpu, ghcb, g, regs);
    case SVM_VMGEXIT.TERM_REQUEST:
      return SEV_TERM_EXIT(gpa);
    case SVM_VMGEXIT.HV_FEATURES:
      ghcb.set('swExitInfo2', GHCB_HV_FT_SUPPORTED);
      return RESUME;
    case SVM_VMGEXIT.UNSUPPORTED_EVENT:
      return {
        kind: 'exit',
        exit: {
          reason: 'internal-error',
          suberror: 4,
          detail: `SEV-ES guest reported an unsupported event (info1 0x${g.info1.toString(16)}, info2 0x${g.info2.toString(16)})`,
        },
      };
    default:
      return {
        kind: 'exit',
        exit: {
          reason: 'internal-error',
          suberror: 4,
          detail: `VMGEXIT exit code 0x${g.exitCode.toString(16)} is valid but not modelled by the simulator`,
        },
      };
  }
}

// Scratch area of a string I/O or MMIO request (`setup_vmgexit_scratch`): inside the GHCB's shared
// buffer, or elsewhere in guest memory up to 16 pages. undefined = GHCB_ERR_INVALID_SCRATCH_AREA.
function scratchArea(
  cpu: SevGuestCpuView,
  ghcbGpa: bigint,
  scratch: bigint,
  len: number,
): Uint8Array | 'EFAULT' | undefined {
  if (scratch === 0n || len === 0) return undefined;
  const end = scratch + BigInt(len);
  if (end > 0xffff_ffff_ffff_ffffn) return undefined;
  const page = ghcbGpa & ~0xfffn;
  const sbBeg = page + BigInt(GHCB_LAYOUT.SHARED_BUFFER_OFFSET);
  const sbEnd = sbBeg + BigInt(GHCB_LAYOUT.SHARED_BUFFER_SIZE);
  if (scratch >= page && scratch < page + 4096n) {
    if (scratch < sbBeg || end > sbEnd) return undefined;
  } else if (len > GHCB_SCRATCH_AREA_LIMIT) return undefined;
  const loc = cpu.resolveGpa(scratch);
  if (loc === undefined || loc.offset + len > loc.buffer.length) return 'EFAULT';
  return loc.buffer.subarray(loc.offset, loc.offset + len);
}

// IOIO through the GHCB (arch/x86/kvm/svm/svm.c: io_interception()) → an `io` exit.
function ioio(cpu: SevGuestCpuView, ghcb: Ghcb, pend: PendingVmgexit, g: GhcbSnapshot): VmgexitOutcome {
  const gpa = pend.ghcbGpa;
  const regs = pend.regs;
  const info = g.info1;
  const isIn = (info & 1n) === 1n;
  const sz = Number((info >> 4n) & 7n);
  const port = Number((info >> 16n) & 0xffffn);
  if (sz !== 1 && sz !== 2 && sz !== 4) {
    // Not one of the one-hot sizes: refused as invalid input (the contract's exits carry 1, 2 or 4 bytes).
    ghcb.set('swExitInfo1', 2n);
    ghcb.set('swExitInfo2', BigInt(GHCB_ERR.INVALID_INPUT));
    return RESUME;
  }
  const size = sz as 1 | 2 | 4;
  if ((info & 4n) !== 0n) {
    const count = Number(g.info2 & 0xffff_ffffn);
    const bytes = count * size;
    if (bytes === 0) return RESUME;
    const area = scratchArea(cpu, gpa, g.scratch, bytes);
    if (area === 'EFAULT')
      return { kind: 'error', errno: 'EFAULT', reason: 'kvm_read_guest of the scratch area failed' };
    if (area === undefined) {
      ghcb.set('swExitInfo1', 2n);
      ghcb.set('swExitInfo2', BigInt(GHCB_ERR.INVALID_SCRATCH_AREA));
      return RESUME;
    }
    if (isIn) {
      pend.io = { direction: 'in', size, count, scratchGpa: g.scratch };
      return {
        kind: 'exit',
        exit: { reason: 'io', direction: 'in', port, size, count, data: new Uint8Array(bytes) },
      };
    }
    pend.io = { direction: 'out', size, count, scratchGpa: undefined };
    return { kind: 'exit', exit: { reason: 'io', direction: 'out', port, size, count, data: area.slice() } };
  }
  if (isIn) {
    pend.io = { direction: 'in', size, count: 1, scratchGpa: undefined };
    return {
      kind: 'exit',
      exit: { reason: 'io', direction: 'in', port, size, count: 1, data: new Uint8Array(size) },
    };
  }
  const data = new Uint8Array(size);
  // The low `size` (≤ 4) bytes of RAX, LE.
  let low = Number(regs.rax & 0xffff_ffffn);
  for (let i = 0; i < size; i++, low >>>= 8) data[i] = low & 0xff;
  pend.io = { direction: 'out', size, count: 1, scratchGpa: undefined };
  return { kind: 'exit', exit: { reason: 'io', direction: 'out', port, size, count: 1, data } };
}

// MMIO_READ / MMIO_WRITE: exit_info_1 = GPA, exit_info_2 = length, data in the scratch area.
function mmio(cpu: SevGuestCpuView, ghcb: Ghcb, pend: PendingVmgexit, g: GhcbSnapshot): VmgexitOutcome {
  const gpa = pend.ghcbGpa;
  const len = Number(g.info2 & 0xffff_ffffn);
  const area = scratchArea(cpu, gpa, g.scratch, len);
  if (area === 'EFAULT')
    return { kind: 'error', errno: 'EFAULT', reason: 'kvm_read_guest of the scratch area failed' };
  if (area === undefined) {
    ghcb.set('swExitInfo1', 2n);
    ghcb.set('swExitInfo2', BigInt(GHCB_ERR.INVALID_SCRATCH_AREA));
    return RESUME;
  }
  const isWrite = g.exitCode === BigInt(SVM_VMGEXIT.MMIO_WRITE);
  pend.mmioScratch = isWrite ? undefined : g.scratch;
  return {
    kind: 'exit',
    exit: { reason: 'mmio', gpa: g.info1, isWrite, len, data: isWrite ? area.slice() : new Uint8Array(len) },
  };
}

function syncToGhcb(ghcb: Ghcb, regs: Regs4): void {
  ghcb.set('rax', BigInt.asUintN(64, regs.rax));
  ghcb.set('rbx', BigInt.asUintN(64, regs.rbx));
  ghcb.set('rcx', BigInt.asUintN(64, regs.rcx));
  ghcb.set('rdx', BigInt.asUintN(64, regs.rdx));
}

/**
 * Next KVM_RUN after a VMGEXIT exit: IN data goes to RAX (merged below 4 bytes, as `complete_fast_pio_in`
 * does) or to the scratch area; then RAX/RBX/RCX/RDX are written back into the GHCB (arch/x86/kvm/svm/sev.c: sev_es_sync_to_ghcb()).
 */
export function completeVmgexit(cpu: SevGuestCpuView, exit: Exit): void {
  const st = cpu.vcpu.sev;
  const pend = st.pendingExit;
  if (pend === undefined) return;
  st.pendingExit = undefined;
  const regs = pend.regs;
  const io = pend.io;
  if (io?.direction === 'in' && exit.reason === 'io') {
    if (io.scratchGpa !== undefined) {
      const loc = cpu.resolveGpa(io.scratchGpa);
      if (loc) loc.buffer.set(exit.data.subarray(0, io.size * io.count), loc.offset);
    } else {
      let v = 0n;
      for (let i = io.size - 1; i >= 0; i--) v = (v << 8n) | BigInt(exit.data[i] ?? 0);
      regs.rax = io.size < 4 ? (regs.rax & ~((1n << BigInt(8 * io.size)) - 1n)) | v : v;
    }
  }
  if (pend.mmioScratch !== undefined && exit.reason === 'mmio' && !exit.isWrite) {
    const loc = cpu.resolveGpa(pend.mmioScratch);
    if (loc) loc.buffer.set(exit.data, loc.offset);
  }
  const ghcb = mapGhcb(cpu, pend.ghcbGpa);
  if (ghcb) syncToGhcb(ghcb, regs);
}
