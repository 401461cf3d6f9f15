// The TD's side: how its memory accesses are served (private by the S-bit, arch/x86/kvm/vmx/tdx.c: tdx_td_init()), which
// instructions raise #VE (guest side: arch/x86/coco/tdx/tdx.c: virt_exception_kernel()), and TDCALL — the TDX module's leaves and,
// through TDG.VP.VMCALL, KVM's TDVMCALL handling (arch/x86/kvm/vmx/tdx.c: handle_tdvmcall() and friends).

import {
  encodeVmxIoQualification,
  hex,
  TDCALL_LEAF,
  TDVMCALL_STATUS,
  TDVMCALL_SUBFUNCTION,
} from '@kvmtest/coco';
import {
  type CpuidEntry,
  findCpuid,
  type HypercallExit,
  type IoExit,
  KVM_HC,
  MAP_GPA_RANGE,
  MEMORY_ATTRIBUTE,
  type MmioExit,
  type SystemEventExit,
  type TdcallRegs,
  VECTOR,
} from '@kvmtest/kvm';
import type {
  AccessDecision,
  ArchCpu,
  ArchException,
  ArchVm,
  InterceptEvent,
  MemAccess,
} from '../arch/ops.js';
import { isPrivateGpa, tdCpuid } from './commands.js';
import {
  EPT_VIOLATION_QUAL,
  KVM_HC_RET,
  MSR_APIC_BASE,
  TD_ATTR,
  TDVMCALL_DEFAULT_RCX,
  TDVMCALL_RCX_INVALID,
  TDX_MAP_GPA_MAX_LEN,
  TDX_OPERAND_ID,
  TDX_STATUS,
  VMX_EXIT_REASON,
} from './constants.js';
import { type TdxVcpuState, type TdxVmState, tdOf, tdVcpuOf, type VeInfo } from './state.js';
import { vcpuCpuid } from './views.js';

const SHARED: AccessDecision = Object.freeze({ kind: 'shared' });
const PRIVATE: AccessDecision = Object.freeze({ kind: 'private' });
const FAULT_PRIVATE: AccessDecision = Object.freeze({ kind: 'memory-fault', private: true });
const FAULT_SHARED: AccessDecision = Object.freeze({ kind: 'memory-fault', private: false });
const PAGE = 4096n;
// Case labels as bigints, computed once (a `case BigInt(…)` would convert on every TDCALL).
const B_KVM_HC_KICK_CPU = BigInt(KVM_HC.KICK_CPU);
const B_KVM_HC_MAP_GPA_RANGE = BigInt(KVM_HC.MAP_GPA_RANGE);
const B_KVM_HC_SCHED_YIELD = BigInt(KVM_HC.SCHED_YIELD);
const B_KVM_HC_SEND_IPI = BigInt(KVM_HC.SEND_IPI);
const B_KVM_HC_VAPIC_POLL_IRQ = BigInt(KVM_HC.VAPIC_POLL_IRQ);
const B_TDCALL_LEAF_MEM_PAGE_ACCEPT = BigInt(TDCALL_LEAF.MEM_PAGE_ACCEPT);
const B_TDCALL_LEAF_MR_REPORT = BigInt(TDCALL_LEAF.MR_REPORT);
const B_TDCALL_LEAF_MR_RTMR_EXTEND = BigInt(TDCALL_LEAF.MR_RTMR_EXTEND);
const B_TDCALL_LEAF_VM_RD = BigInt(TDCALL_LEAF.VM_RD);
const B_TDCALL_LEAF_VM_WR = BigInt(TDCALL_LEAF.VM_WR);
const B_TDCALL_LEAF_VP_INFO = BigInt(TDCALL_LEAF.VP_INFO);
const B_TDCALL_LEAF_VP_VEINFO_GET = BigInt(TDCALL_LEAF.VP_VEINFO_GET);
const B_TDCALL_LEAF_VP_VMCALL = BigInt(TDCALL_LEAF.VP_VMCALL);
const B_TDVMCALL_SUBFUNCTION_CPUID = BigInt(TDVMCALL_SUBFUNCTION.CPUID);
const B_TDVMCALL_SUBFUNCTION_GET_QUOTE = BigInt(TDVMCALL_SUBFUNCTION.GET_QUOTE);
const B_TDVMCALL_SUBFUNCTION_GET_TD_VM_CALL_INFO = BigInt(TDVMCALL_SUBFUNCTION.GET_TD_VM_CALL_INFO);
const B_TDVMCALL_SUBFUNCTION_HLT = BigInt(TDVMCALL_SUBFUNCTION.HLT);
const B_TDVMCALL_SUBFUNCTION_IO = BigInt(TDVMCALL_SUBFUNCTION.IO);
const B_TDVMCALL_SUBFUNCTION_MAP_GPA = BigInt(TDVMCALL_SUBFUNCTION.MAP_GPA);
const B_TDVMCALL_SUBFUNCTION_RDMSR = BigInt(TDVMCALL_SUBFUNCTION.RDMSR);
const B_TDVMCALL_SUBFUNCTION_REPORT_FATAL_ERROR = BigInt(TDVMCALL_SUBFUNCTION.REPORT_FATAL_ERROR);
const B_TDVMCALL_SUBFUNCTION_REQUEST_MMIO = BigInt(TDVMCALL_SUBFUNCTION.REQUEST_MMIO);
const B_TDVMCALL_SUBFUNCTION_WRMSR = BigInt(TDVMCALL_SUBFUNCTION.WRMSR);

function td(vm: ArchVm): TdxVmState {
  const t = tdOf(vm);
  if (t === undefined) throw new Error(`tdx: VM ${vm.fd} has no TD state (vmInit did not run)`);
  return t;
}

function tdv(cpu: ArchCpu): TdxVcpuState {
  const t = tdVcpuOf(cpu.vcpu);
  if (t === undefined) throw new Error(`tdx: vCPU ${cpu.vcpu.id} has no TD vCPU state`);
  return t;
}

// ---- memory -------------------------------------------------------------------------------------

/**
 * A TD's guest access (arch/x86/kvm/vmx/tdx.c: tdx_td_init(); mmu.c kvm_mmu_faultin_pfn for a TD): private iff the S-bit is
 * clear in the guest's GPA. When that intent differs from the page's PRIVATE attribute KVM exits
 * with KVM_EXIT_MEMORY_FAULT (flag PRIVATE = the guest's intent). Private pages come from
 * guest_memfd; one that was never added (INIT_MEM_REGION) nor accepted is PENDING in the secure
 * EPT: the guest gets #VE, or with SEPT_VE_DISABLE the VM dies (tdx_handle_ept_violation).
 */
export function tdxClassifyAccess(vm: ArchVm, a: MemAccess): AccessDecision {
  const t = td(vm);
  let gpa = a.gpa;
  let shared = a.tagged;
  // A physical access the walker did not tag (paging off, MMIO helpers) still carries the S-bit.
  if (t.sharedMask !== 0n && (gpa & t.sharedMask) !== 0n) {
    shared = true;
    gpa &= ~t.sharedMask;
  }
  const attrPrivate = (a.attributes & MEMORY_ATTRIBUTE.PRIVATE) !== 0n;
  const gfn = gpa >> 12n;
  // Converting a page to shared zaps its private mapping (TDH.MEM.PAGE.REMOVE); seen lazily here.
  if (!attrPrivate) t.mapped.delete(gfn);
  if (shared === attrPrivate) return shared ? FAULT_SHARED : FAULT_PRIVATE;
  if (shared) return SHARED;
  if (a.slot === undefined || !a.slot.hasGmem) return FAULT_PRIVATE;
  if (t.mapped.has(gfn)) return PRIVATE;
  if ((t.attributes & TD_ATTR.SEPT_VE_DISABLE) !== 0n) {
    // tdx_handle_ept_violation: "Guest access before accepting" -> kvm_vm_dead, KVM_RUN fails with EIO.
    vm.markDead();
    return FAULT_PRIVATE;
  }
  t.lastPendingVe = {
    exitReason: VMX_EXIT_REASON.EPT_VIOLATION,
    exitQualification: a.write ? EPT_VIOLATION_QUAL.WRITE : EPT_VIOLATION_QUAL.READ,
    gla: 0n,
    gpa,
    instructionLength: 0,
  };
  return {
    kind: 'exception',
    vector: VECTOR.VE,
    errorCode: undefined,
    detail: `#VE: private GPA ${hex(gpa)} is pending (neither added by KVM_TDX_INIT_MEM_REGION nor accepted with TDG.MEM.PAGE.ACCEPT)`,
  };
}

// ---- #VE ----------------------------------------------------------------------------------------

function ve(tv: TdxVcpuState, info: VeInfo, what: string): ArchException {
  tv.veInfo = info;
  return {
    vector: VECTOR.VE,
    errorCode: undefined,
    detail: `#VE: ${what} (exit reason ${info.exitReason}, qualification ${hex(info.exitQualification)}); the guest asks the VMM with TDG.VP.VMCALL`,
  };
}

/**
 * The TD's CPUID as the TDX module virtualizes it (the INIT_VM configuration over the host's
 * leaves), when `leaf` is one the module answers itself: basic leaves up to the TD's CPUID.0.EAX,
 * extended ones up to its CPUID.0x80000000.EAX. undefined = the leaf #VEs. The vCPU's KVM table
 * (KVM_SET_CPUID2) plays no part here: it only answers the guest's TDG.VP.VMCALL<Instruction.CPUID>.
 */
function tdNativeCpuid(t: TdxVmState, vm: ArchVm, leaf: number): readonly CpuidEntry[] | undefined {
  const table = tdCpuid(vm, t);
  const maxBasic = (findCpuid(table, 0, 0)?.eax ?? 0) >>> 0;
  const maxExt = (findCpuid(table, 0x8000_0000, 0)?.eax ?? 0) >>> 0;
  const native = leaf < 0x4000_0000 ? leaf <= maxBasic : leaf >= 0x8000_0000 && leaf <= maxExt;
  return native ? table : undefined;
}

/** ArchOps.guestCpuid for a TD: a leaf the TDX module virtualizes reads the TD's CPUID configuration. */
export function tdxGuestCpuid(
  cpu: ArchCpu,
  leaf: number,
  subleaf: number,
): { eax: number; ebx: number; ecx: number; edx: number } | undefined {
  const t = tdOf(cpu.vcpu.vm);
  if (t === undefined) return undefined;
  const table = tdNativeCpuid(t, cpu.vcpu.vm, leaf >>> 0);
  if (table === undefined) return undefined;
  const e = findCpuid(table, leaf >>> 0, subleaf >>> 0);
  return e === undefined ? { eax: 0, ebx: 0, ecx: 0, edx: 0 } : e;
}

/**
 * Instructions a TD cannot let the VMM see raise #VE (vector 20) with the VMX exit reason and
 * qualification in the VE_INFO that TDG.VP.VEINFO.GET returns (guest side: arch/x86/coco/tdx/tdx.c: virt_exception_kernel(); Linux
 * arch/x86/coco/tdx/tdx.c virt_exception_kernel). VMCALL is not one of them: it is #UD in a TD.
 */
export function tdxIntercept(cpu: ArchCpu, ev: InterceptEvent): ArchException | undefined {
  const t = td(cpu.vcpu.vm);
  const tv = tdv(cpu);
  switch (ev.kind) {
    case 'io': {
      if (ev.size !== 1 && ev.size !== 2 && ev.size !== 4) return undefined;
      const q = encodeVmxIoQualification({
        direction: ev.in ? 'in' : 'out',
        size: ev.size,
        port: ev.port & 0xffff,
        string: false,
        rep: false,
        immediate: false,
      });
      const info = {
        exitReason: VMX_EXIT_REASON.IO_INSTRUCTION,
        exitQualification: q,
        gla: 0n,
        gpa: 0n,
        instructionLength: 1,
      };
      return ve(tv, info, `${ev.in ? 'IN' : 'OUT'} port ${hex(ev.port)} size ${ev.size}`);
    }
    case 'cpuid': {
      // The module answers the leaves it virtualizes (tdxGuestCpuid); the hypervisor range and leaves
      // past the TD's maximum #VE, and the guest asks KVM (tdx_emulate_cpuid).
      if (tdNativeCpuid(t, cpu.vcpu.vm, ev.leaf >>> 0) !== undefined) return undefined;
      const leaf = ev.leaf >>> 0;
      const info = {
        exitReason: VMX_EXIT_REASON.CPUID,
        exitQualification: 0n,
        gla: 0n,
        gpa: 0n,
        instructionLength: 2,
      };
      return ve(tv, info, `CPUID leaf ${hex(leaf)}`);
    }
    case 'rdmsr':
    case 'wrmsr': {
      const info = {
        exitReason: ev.kind === 'rdmsr' ? VMX_EXIT_REASON.MSR_READ : VMX_EXIT_REASON.MSR_WRITE,
        exitQualification: 0n,
        gla: 0n,
        gpa: 0n,
        instructionLength: 2,
      };
      return ve(tv, info, `${ev.kind.toUpperCase()} ${hex(ev.msr)}`);
    }
    case 'hlt':
      return ve(
        tv,
        { exitReason: VMX_EXIT_REASON.HLT, exitQualification: 0n, gla: 0n, gpa: 0n, instructionLength: 1 },
        'HLT',
      );
    case 'mmio': {
      // A shared GPA no memslot backs has KVM's MMIO SPTE with #VE not suppressed (tdx_vm_init):
      // the access becomes #VE, which the guest turns into TDVMCALL<#VE.RequestMMIO>.
      const shared = t.sharedMask !== 0n && (ev.gpa & t.sharedMask) !== 0n;
      if (!shared || cpu.vcpu.vm.memslotAt(ev.gpa & ~t.sharedMask) !== undefined) return undefined;
      const info = {
        exitReason: VMX_EXIT_REASON.EPT_VIOLATION,
        exitQualification: ev.write ? EPT_VIOLATION_QUAL.WRITE : EPT_VIOLATION_QUAL.READ,
        gla: 0n,
        gpa: ev.gpa,
        instructionLength: 0,
      };
      return ve(tv, info, `MMIO ${ev.write ? 'write' : 'read'} of shared GPA ${hex(ev.gpa)}`);
    }
    case 'hypercall':
      return {
        vector: VECTOR.UD,
        errorCode: undefined,
        detail: 'VMCALL in a TD is #UD: use TDG.VP.VMCALL with R10 = the hypercall number',
      };
  }
}

// ---- TDCALL ---------------------------------------------------------------------------------------

type Gpr = 'rdx' | 'r8' | 'r9' | 'r10' | 'r11' | 'r12' | 'r13' | 'r14' | 'r15';
const GPR_BIT: Record<Gpr, bigint> = {
  rdx: 2n,
  r8: 8n,
  r9: 9n,
  r10: 10n,
  r11: 11n,
  r12: 12n,
  r13: 13n,
  r14: 14n,
  r15: 15n,
};
/** 1n << GPR_BIT[r]: testing a register's RCX bit is one AND, with no BigInt shift per test. */
const GPR_MASK = Object.fromEntries(
  (Object.keys(GPR_BIT) as Gpr[]).map((r) => [r, 1n << GPR_BIT[r]]),
) as Record<Gpr, bigint>;

/** The VMM's view of a TDG.VP.VMCALL: the exposed registers (others read as 0) and the outputs to return. */
class VmcallFrame {
  readonly out: Partial<Record<Gpr, bigint>> = {};
  constructor(
    readonly regs: TdcallRegs,
    readonly exposed: bigint,
  ) {}
  get(r: Gpr): bigint {
    return (this.exposed & GPR_MASK[r]) !== 0n ? BigInt.asUintN(64, this.regs[r] ?? 0n) : 0n;
  }
  set(r: Gpr, v: bigint): void {
    this.out[r] = BigInt.asUintN(64, v);
  }
  status(v: bigint): void {
    this.set('r10', v);
  }
}

function le(bytes: Uint8Array, n: number): bigint {
  let v = 0n;
  for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i] ?? 0);
  return v;
}

function leBytes(v: bigint, n: number): Uint8Array {
  const out = new Uint8Array(n);
  if (n <= 4) {
    // The low n ≤ 4 bytes fit a number: the same bytes without a BigInt shift per byte.
    let low = Number(BigInt.asUintN(32, v));
    for (let i = 0; i < n; i++, low >>>= 8) out[i] = low & 0xff;
    return out;
  }
  for (let i = 0; i < n; i++) out[i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return out;
}

/**
 * TDCALL. RAX is the leaf; the result carries the module's status in RAX. TDG.VP.VMCALL hands the
 * registers named by RCX to KVM (arch/x86/kvm/vmx/tdx.c: handle_tdvmcall()); other leaves are the module's own.
 */
export async function tdxTdcall(cpu: ArchCpu, leaf: bigint, regs: TdcallRegs): Promise<TdcallRegs> {
  const t = td(cpu.vcpu.vm);
  const tv = tdv(cpu);
  switch (leaf) {
    case B_TDCALL_LEAF_VP_VMCALL: {
      const rcx = regs.rcx ?? TDVMCALL_DEFAULT_RCX;
      if ((rcx & TDVMCALL_RCX_INVALID) !== 0n)
        return { ...regs, rax: TDX_STATUS.OPERAND_INVALID | TDX_OPERAND_ID.RCX };
      const f = new VmcallFrame(regs, rcx);
      await tdvmcall(cpu, t, tv, f);
      // `{ ...regs, rax }` as Object.assign: the same own properties in the same order, but a spread
      // followed by a property is a slow path in V8 (~1 µs, most of a TDVMCALL round trip).
      const res: TdcallRegs = Object.assign({}, regs, { rax: TDX_STATUS.SUCCESS });
      const out = f.out;
      for (const r in out) if ((rcx & GPR_MASK[r as Gpr]) !== 0n) res[r as Gpr] = out[r as Gpr];
      return res;
    }
    case B_TDCALL_LEAF_VP_INFO:
      // TDG.VP.INFO: GPAW, ATTRIBUTES, NUM_VCPUS | MAX_VCPUS << 32, VCPU_INDEX.
      return {
        ...regs,
        rax: TDX_STATUS.SUCCESS,
        rcx: BigInt(t.gpaw ?? 0),
        rdx: t.attributes,
        r8: BigInt(cpu.vcpu.vm.createdVcpus) | (BigInt(t.maxVcpus) << 32n),
        r9: BigInt(tv.index),
        r10: 0n,
        r11: 0n,
      };
    case B_TDCALL_LEAF_VP_VEINFO_GET: {
      const v = tv.veInfo ?? t.lastPendingVe;
      if (v === undefined) return { ...regs, rax: TDX_STATUS.NO_VALID_VE_INFO };
      tv.veInfo = undefined;
      t.lastPendingVe = undefined;
      return {
        ...regs,
        rax: TDX_STATUS.SUCCESS,
        rcx: BigInt(v.exitReason),
        rdx: v.exitQualification,
        r8: v.gla,
        r9: v.gpa,
        r10: BigInt(v.instructionLength),
      };
    }
    case B_TDCALL_LEAF_MEM_PAGE_ACCEPT:
      return { ...regs, rax: await acceptPage(cpu, t, regs.rcx ?? 0n) };
    case B_TDCALL_LEAF_MR_RTMR_EXTEND:
    case B_TDCALL_LEAF_MR_REPORT:
    case B_TDCALL_LEAF_VM_RD:
    case B_TDCALL_LEAF_VM_WR:
      throw new Error(`TDCALL leaf ${leaf} exists in the TDX module but is not modelled by the simulator`);
    default:
      return { ...regs, rax: TDX_STATUS.OPERAND_INVALID | TDX_OPERAND_ID.RAX };
  }
}

/**
 * TDG.MEM.PAGE.ACCEPT (RCX = GPA | level). KVM maps private pages 4 KiB only
 * (tdx_gmem_private_max_mapping_level), so a 2 MiB accept reports PAGE_SIZE_MISMATCH and the guest
 * falls back to 4 KiB. An unmapped page is faulted in first (TDH.MEM.PAGE.AUG), which needs the
 * PRIVATE attribute and a guest_memfd slot, else KVM exits with KVM_EXIT_MEMORY_FAULT until the
 * host fixes it. Accepting zeroes the page; a page already added or accepted answers ALREADY_ACCEPTED.
 */
async function acceptPage(cpu: ArchCpu, t: TdxVmState, rcx: bigint): Promise<bigint> {
  const level = rcx & 7n;
  const gpa = rcx & ~0xfffn & ~t.sharedMask;
  if (level !== 0n)
    return level === 1n || level === 2n
      ? TDX_STATUS.PAGE_SIZE_MISMATCH
      : TDX_STATUS.OPERAND_INVALID | TDX_OPERAND_ID.RCX;
  if ((rcx & 0xff8n) !== 0n || !isPrivateGpa(t, rcx)) return TDX_STATUS.OPERAND_INVALID | TDX_OPERAND_ID.RCX;
  const vm = cpu.vcpu.vm;
  const gfn = gpa >> 12n;
  for (;;) {
    const attr = vm.memoryAttributes(gpa);
    if ((attr & MEMORY_ATTRIBUTE.PRIVATE) === 0n) t.mapped.delete(gfn);
    if (t.mapped.has(gfn)) return TDX_STATUS.PAGE_ALREADY_ACCEPTED;
    const slot = vm.memslotAt(gpa);
    if ((attr & MEMORY_ATTRIBUTE.PRIVATE) !== 0n && slot !== undefined && slot.hasGmem) break;
    await cpu.exitToHost({ reason: 'memory-fault', gpa, size: PAGE, private: true, errno: 'EFAULT' });
  }
  t.mapped.add(gfn);
  vm.flushTlbs();
  cpu.writePhys(gpa, new Uint8Array(4096), false);
  return TDX_STATUS.SUCCESS;
}

/** KVM's side of TDG.VP.VMCALL (tdx_handle_exit's TDCALL cases and handle_tdvmcall). */
async function tdvmcall(cpu: ArchCpu, t: TdxVmState, tv: TdxVcpuState, f: VmcallFrame): Promise<void> {
  const r10 = f.get('r10');
  // R10 != 0: a vendor-specific call, which KVM treats as a KVM hypercall (tdx_emulate_vmcall).
  if (r10 !== 0n) {
    f.status(await kvmHypercall(cpu, r10, f.get('r11'), f.get('r12'), f.get('r13')));
    return;
  }
  const sub = f.get('r11');
  switch (sub) {
    case B_TDVMCALL_SUBFUNCTION_IO:
      return emulateIo(cpu, f);
    case B_TDVMCALL_SUBFUNCTION_REQUEST_MMIO:
      return emulateMmio(cpu, t, f);
    case B_TDVMCALL_SUBFUNCTION_CPUID: {
      // tdx_emulate_cpuid: EAX/ECX in R12/R13, the four results in R12..R15.
      const r = vcpuCpuid(cpu, Number(f.get('r12') & 0xffff_ffffn), Number(f.get('r13') & 0xffff_ffffn));
      f.set('r12', BigInt(r.eax >>> 0));
      f.set('r13', BigInt(r.ebx >>> 0));
      f.set('r14', BigInt(r.ecx >>> 0));
      f.set('r15', BigInt(r.edx >>> 0));
      f.status(TDVMCALL_STATUS.SUCCESS);
      return;
    }
    case B_TDVMCALL_SUBFUNCTION_HLT:
      await cpu.exitToHost({ reason: 'hlt' });
      f.status(TDVMCALL_STATUS.SUCCESS);
      return;
    case B_TDVMCALL_SUBFUNCTION_RDMSR:
    case B_TDVMCALL_SUBFUNCTION_WRMSR:
      return emulateMsr(cpu, tv, f, sub === BigInt(TDVMCALL_SUBFUNCTION.WRMSR));
    case B_TDVMCALL_SUBFUNCTION_MAP_GPA:
      return mapGpa(cpu, t, tv, f);
    case B_TDVMCALL_SUBFUNCTION_REPORT_FATAL_ERROR:
      return reportFatalError(cpu, f);
    case B_TDVMCALL_SUBFUNCTION_GET_TD_VM_CALL_INFO:
      return getTdVmCallInfo(f);
    case B_TDVMCALL_SUBFUNCTION_GET_QUOTE:
      // tdx_get_quote: the buffer must be shared. The KVM_EXIT_TDX it then makes is not in the
      // contract's Exit union; the reply is what KVM pre-fills (SUBFUNC_UNSUPPORTED), as if the VMM left it.
      f.status(
        isPrivateGpa(t, f.get('r12')) ? TDVMCALL_STATUS.INVALID_OPERAND : TDVMCALL_STATUS.SUBFUNC_UNSUPPORTED,
      );
      return;
    default:
      f.status(TDVMCALL_STATUS.SUBFUNC_UNSUPPORTED);
  }
}

/** x86.c __kvm_emulate_hypercall for a TD (RAX..RSI from R10..R14); the result goes to R10. */
async function kvmHypercall(cpu: ArchCpu, nr: bigint, a0: bigint, a1: bigint, a2: bigint): Promise<bigint> {
  switch (nr) {
    case B_KVM_HC_VAPIC_POLL_IRQ:
    case B_KVM_HC_KICK_CPU:
    case B_KVM_HC_SCHED_YIELD:
      return 0n;
    case B_KVM_HC_SEND_IPI:
      return KVM_HC_RET.EOPNOTSUPP;
    case B_KVM_HC_MAP_GPA_RANGE: {
      if (!cpu.vcpu.vm.hypercallExitEnabled(KVM_HC.MAP_GPA_RANGE)) return KVM_HC_RET.ENOSYS;
      const gfn = a0 >> 12n;
      if ((a0 & 0xfffn) !== 0n || a1 === 0n || BigInt.asUintN(64, gfn + a1) <= gfn) return KVM_HC_RET.EINVAL;
      const e = await cpu.exitToHost<HypercallExit>({
        reason: 'hypercall',
        nr,
        args: [a0, a1, a2],
        ret: 0n,
        longmode: true,
      });
      return typeof e.ret === 'bigint' ? BigInt.asUintN(64, e.ret) : 0n;
    }
    default:
      return KVM_HC_RET.ENOSYS;
  }
}

/** tdx_emulate_io: R12 size, R13 direction, R14 port, R15 value; IN returns the value in R11. */
async function emulateIo(cpu: ArchCpu, f: VmcallFrame): Promise<void> {
  const size = f.get('r12');
  const write = f.get('r13');
  if ((write !== 0n && write !== 1n) || (size !== 1n && size !== 2n && size !== 4n)) {
    f.status(TDVMCALL_STATUS.INVALID_OPERAND);
    return;
  }
  const n = Number(size) as 1 | 2 | 4;
  // The PIO emulator takes a 16-bit port.
  const port = Number(f.get('r14') & 0xffffn);
  if (write === 1n) {
    await cpu.exitToHost<IoExit>({
      reason: 'io',
      direction: 'out',
      port,
      size: n,
      count: 1,
      data: leBytes(f.get('r15'), n),
    });
  } else {
    const e = await cpu.exitToHost<IoExit>({
      reason: 'io',
      direction: 'in',
      port,
      size: n,
      count: 1,
      data: new Uint8Array(n),
    });
    f.set('r11', e.data instanceof Uint8Array ? le(e.data, n) : 0n);
  }
  f.status(TDVMCALL_STATUS.SUCCESS);
}

/** tdx_emulate_mmio: only shared GPAs; the exit names the GPA without the S-bit; a read returns in R11. */
async function emulateMmio(cpu: ArchCpu, t: TdxVmState, f: VmcallFrame): Promise<void> {
  const size = f.get('r12');
  const write = f.get('r13');
  const gpa = f.get('r14');
  if ((size !== 1n && size !== 2n && size !== 4n && size !== 8n) || (write !== 0n && write !== 1n)) {
    f.status(TDVMCALL_STATUS.INVALID_OPERAND);
    return;
  }
  if (isPrivateGpa(t, gpa) || isPrivateGpa(t, BigInt.asUintN(64, gpa + size - 1n))) {
    f.status(TDVMCALL_STATUS.INVALID_OPERAND);
    return;
  }
  const n = Number(size);
  const exitGpa = gpa & ~t.sharedMask;
  if (write === 1n) {
    await cpu.exitToHost<MmioExit>({
      reason: 'mmio',
      gpa: exitGpa,
      isWrite: true,
      len: n,
      data: leBytes(f.get('r15'), n),
    });
  } else {
    const e = await cpu.exitToHost<MmioExit>({
      reason: 'mmio',
      gpa: exitGpa,
      isWrite: false,
      len: n,
      data: new Uint8Array(n),
    });
    f.set('r11', e.data instanceof Uint8Array ? le(e.data, n) : 0n);
  }
  f.status(TDVMCALL_STATUS.SUCCESS);
}

/** tdx_has_emulated_msr: the MSRs KVM can emulate for a TD (x2APIC registers the CPU virtualizes excluded). */
export function tdxEmulatedMsr(index: number): boolean {
  if (index >= 0x800 && index <= 0x8ff) {
    // TPR, PPR, EOI, ISR, TMR, IRR live in the virtual-APIC page KVM cannot see.
    return !(index === 0x808 || index === 0x80a || index === 0x80b || (index >= 0x810 && index <= 0x828));
  }
  if (index >= 0x200 && index <= 0x26f) return true; // MTRRphysBase0 .. MTRRfix4K_F8000
  if (index >= 0x400 && index < 0x400 + 4 * 32) return true; // MCx_CTL/STATUS/ADDR/MISC
  if (index >= 0x280 && index < 0x280 + 32) return true; // MCx_CTL2
  return [
    0x8b, // UCODE_REV
    0x10a, // ARCH_CAPABILITIES
    0x1fc, // POWER_CTL
    0x277, // CR_PAT
    0xfe, // MTRRcap
    0x2ff, // MTRRdefType
    0x6e0, // TSC_DEADLINE
    0x1a0, // MISC_ENABLE
    0xce, // PLATFORM_INFO
    0x140, // MISC_FEATURES_ENABLES
    MSR_APIC_BASE,
    0xc000_0080, // EFER
    0x3a, // FEAT_CTL
    0x179, // MCG_CAP
    0x17a, // MCG_STATUS
    0x17b, // MCG_CTL
    0x4d0, // MCG_EXT_CTL
    0x4b56_4d05, // MSR_KVM_POLL_CONTROL
  ].includes(index);
}

/** TDVMCALL<Instruction.RDMSR/WRMSR> (tdx_get_msr / tdx_set_msr; failure -> INVALID_OPERAND). */
function emulateMsr(cpu: ArchCpu, tv: TdxVcpuState, f: VmcallFrame, write: boolean): void {
  const index = Number(f.get('r12') & 0xffff_ffffn);
  if (!tdxEmulatedMsr(index)) {
    f.status(TDVMCALL_STATUS.INVALID_OPERAND);
    return;
  }
  if (write) {
    // tdx_is_read_only_msr: APIC_BASE, EFER and FEAT_CTL are fixed for a TD.
    if (index === MSR_APIC_BASE || index === 0xc000_0080 || index === 0x3a || cpu.msr(index) === undefined) {
      f.status(TDVMCALL_STATUS.INVALID_OPERAND);
      return;
    }
    cpu.setMsr(index, f.get('r13'));
    f.status(TDVMCALL_STATUS.SUCCESS);
    return;
  }
  let v: bigint | undefined;
  if (index === 0x3a)
    v = 1n; // FEAT_CTL: locked, no LMCE
  else if (index === MSR_APIC_BASE) v = tv.apicBase;
  else v = cpu.msr(index);
  if (v === undefined) {
    f.status(TDVMCALL_STATUS.INVALID_OPERAND);
    return;
  }
  f.set('r11', v);
  f.status(TDVMCALL_STATUS.SUCCESS);
}

/**
 * tdx_map_gpa (arch/x86/kvm/vmx/tdx.c): KVM_EXIT_HYPERCALL(KVM_HC_MAP_GPA_RANGE) per ≤ 2 MiB chunk, GPA without
 * the S-bit, ENCRYPTED when the range is private. Needs KVM_CAP_EXIT_HYPERCALL bit 12
 * (SUBFUNC_UNSUPPORTED otherwise); a bad range is INVALID_OPERAND, misalignment ALIGN_ERROR — R11
 * then holds the GPA. The host's non-zero `ret` fails the call at the chunk (INVALID_OPERAND, R11 =
 * the chunk); a pending event between chunks returns RETRY with R11 = where to resume.
 */
async function mapGpa(cpu: ArchCpu, t: TdxVmState, tv: TdxVcpuState, f: VmcallFrame): Promise<void> {
  const gpa = f.get('r12');
  const size = f.get('r13');
  const err = (status: bigint, at: bigint) => {
    f.status(status);
    f.set('r11', at);
  };
  if (!cpu.vcpu.vm.hypercallExitEnabled(KVM_HC.MAP_GPA_RANGE))
    return err(TDVMCALL_STATUS.SUBFUNC_UNSUPPORTED, gpa);
  const end = BigInt.asUintN(64, gpa + size);
  const legal = (a: bigint) => a >> BigInt(t.gpaw ?? 52) === 0n;
  if (end <= gpa || !legal(gpa) || !legal(end - 1n) || isPrivateGpa(t, gpa) !== isPrivateGpa(t, end - 1n))
    return err(TDVMCALL_STATUS.INVALID_OPERAND, gpa);
  if ((gpa & 0xfffn) !== 0n || (size & 0xfffn) !== 0n) return err(TDVMCALL_STATUS.ALIGN_ERROR, gpa);
  const attrs = isPrivateGpa(t, gpa) ? MAP_GPA_RANGE.ENCRYPTED : MAP_GPA_RANGE.DECRYPTED;
  let next = gpa;
  for (;;) {
    const len = end - next > TDX_MAP_GPA_MAX_LEN ? TDX_MAP_GPA_MAX_LEN : end - next;
    const e = await cpu.exitToHost<HypercallExit>({
      reason: 'hypercall',
      nr: BigInt(KVM_HC.MAP_GPA_RANGE),
      args: [next & ~t.sharedMask, len / PAGE, attrs],
      ret: 0n,
      longmode: true,
    });
    if (e.ret !== 0n) return err(TDVMCALL_STATUS.INVALID_OPERAND, next);
    next += TDX_MAP_GPA_MAX_LEN;
    if (next >= end) {
      f.status(TDVMCALL_STATUS.SUCCESS);
      return;
    }
    if (tv.eventPending) return err(TDVMCALL_STATUS.RETRY, next);
  }
}

/** tdx_report_fatal_error: KVM_EXIT_SYSTEM_EVENT type TDX_FATAL with 16 GPRs (RAX..RDI, R8..R15). */
async function reportFatalError(cpu: ArchCpu, f: VmcallFrame): Promise<void> {
  const r = f.regs;
  const data = [
    BigInt(VMX_EXIT_REASON.TDCALL), // vp_enter_ret: the exit that brought the TD out
    BigInt.asUintN(64, r.rcx ?? 0n),
    f.get('rdx'),
    0n, // RBX (not in the Guest ABI's TdcallRegs)
    0n, // RSP
    0n, // RBP
    0n, // RSI
    0n, // RDI
    f.get('r8'),
    f.get('r9'),
    f.get('r10'),
    f.get('r11'),
    f.get('r12'),
    f.get('r13'),
    f.get('r14'),
    f.get('r15'),
  ];
  await cpu.exitToHost<SystemEventExit>({ reason: 'system-event', type: 'tdx-fatal', data });
}

/**
 * tdx_get_td_vm_call_info: leaf 0 answers all-zero R11..R14 with SUCCESS; leaf 1 goes to userspace
 * as KVM_EXIT_TDX, which the contract's Exit union lacks — the reply is KVM's pre-filled one
 * (SUCCESS, zeros), as if the VMM resumed without changes; other leaves INVALID_OPERAND.
 */
function getTdVmCallInfo(f: VmcallFrame): void {
  const leaf = f.get('r12');
  if (leaf !== 0n && leaf !== 1n) {
    f.status(TDVMCALL_STATUS.INVALID_OPERAND);
    return;
  }
  for (const r of ['r11', 'r12', 'r13', 'r14'] as const) f.set(r, 0n);
  f.status(TDVMCALL_STATUS.SUCCESS);
}
