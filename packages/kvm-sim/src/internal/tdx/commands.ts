// KVM_MEMORY_ENCRYPT_OP for TDs: the VM-scope (tdx_vm_ioctl) and vCPU-scope (tdx_vcpu_ioctl)
// dispatchers and their commands, each check in the order of arch/x86/kvm/vmx/tdx.c (tdx_vm_ioctl(),
// tdx_vcpu_ioctl() and the per-command functions). Every check runs before any state changes, so a rejected command leaves the TD as it was;
// the one exception is the kernel's own: INIT_MEM_REGION writes back the pages it did add before a
// later page failed.

import { cpuidHas, hex, tdxSharedBit, tdxSharedMask, X86_FEATURE } from '@kvmtest/coco';
import {
  type CpuidEntry,
  findCpuid,
  type HostPtr,
  MEM_FLAG,
  MEMORY_ATTRIBUTE,
  TDX_CMD,
  TDX_MEASURE_MEMORY_REGION,
  type TdxCommand,
} from '@kvmtest/kvm';
import type { ArchVcpu, ArchVm } from '../arch/ops.js';
import { supportedCpuid } from '../config.js';
import {
  CPUID7_EBX_TSX,
  CPUID7_ECX_WAITPKG,
  KVM_MAX_CPUID_ENTRIES,
  TD_STATE,
  TD_VCPU_STATE,
  TDVMCALLINFO_GET_QUOTE,
  TDX_CPUID_CONFIG,
  TDX_SUPPORTED_ATTRS,
  TDX_SUPPORTED_XFAM,
  TDX_XFAM_FIXED1,
  TD_INITIAL_CONTROL,
  TD_RESET_VECTOR,
  tdxApicBase,
} from './constants.js';
import { LazyMrtd } from './measure.js';
import { allocKeyId, type TdxVcpuState, type TdxVmState, takeKeyId, tdOf, tdVcpuOf } from './state.js';
import { fail, hostAddr, readCpuidEntry, UserStruct } from './uaccess.js';
import { gmemLocation, vcpuCpuidTable, vcpuRegs, vcpuSregs } from './views.js';

const OP = 'KVM_MEMORY_ENCRYPT_OP';
const PAGE = 4096n;
const U64 = (1n << 64n) - 1n;
const VM_CMD_NAME: Record<number, string> = {
  [TDX_CMD.CAPABILITIES]: 'KVM_TDX_CAPABILITIES',
  [TDX_CMD.INIT_VM]: 'KVM_TDX_INIT_VM',
  [TDX_CMD.FINALIZE_VM]: 'KVM_TDX_FINALIZE_VM',
  [TDX_CMD.INIT_VCPU]: 'KVM_TDX_INIT_VCPU',
  [TDX_CMD.INIT_MEM_REGION]: 'KVM_TDX_INIT_MEM_REGION',
  [TDX_CMD.GET_CPUID]: 'KVM_TDX_GET_CPUID',
};

/** `struct kvm_cpuid2` as KVM_TDX_GET_CPUID reads and fills it (`nent` in/out, `cpuid` out). */
export interface TdxGetCpuidData {
  nent: number;
  cpuid: CpuidEntry[];
}

/** The copied `struct kvm_tdx_cmd`. */
interface CmdCopy {
  readonly id: number;
  readonly flags: number;
  readonly hwError: bigint;
}

/** copy_from_user of `struct kvm_tdx_cmd` (NULL or a malformed struct -> EFAULT). */
function copyCmd(cmd: TdxCommand | undefined): CmdCopy {
  const s = new UserStruct(cmd, OP, 'struct kvm_tdx_cmd');
  // hw_error is an output field: an unset one (undefined or null) reads as 0.
  const unset = (cmd as { hwError?: unknown } | undefined)?.hwError === null;
  return { id: s.uint('id'), flags: s.uint('flags'), hwError: unset ? 0n : s.u64('hwError', 0n) };
}

/** True when `gpa` is a private GPA of the TD (vt_is_tdx_private_gpa: the shared bit is clear). */
export function isPrivateGpa(td: TdxVmState, gpa: bigint): boolean {
  return (gpa & td.sharedMask) === 0n;
}

// ---- VM scope -----------------------------------------------------------------------------------

/**
 * vt_mem_enc_ioctl -> tdx_vm_ioctl (arch/x86/kvm/vmx/tdx.c): not a TD -> ENOTTY; copy -> EFAULT; hw_error set
 * -> EINVAL; unknown or vCPU-scoped id -> EINVAL (nothing copied back); else the command, after
 * which `hwError` is written back.
 */
export function tdxVmIoctl(vm: ArchVm, cmd: TdxCommand | undefined): void {
  const td = tdOf(vm);
  if (td === undefined)
    fail('ENOTTY', OP, `VM ${vm.fd} is a ${vm.type} VM, not a TD (arch/x86/kvm/vmx/tdx.c: tdx_vm_ioctl())`);
  const c = copyCmd(cmd);
  if (c.hwError !== 0n)
    fail(
      'EINVAL',
      OP,
      `hw_error ${hex(c.hwError)} must be 0 on input (tdx_vm_ioctl, arch/x86/kvm/vmx/tdx.c)`,
    );
  const name = VM_CMD_NAME[c.id];
  let run: () => void;
  switch (c.id) {
    case TDX_CMD.CAPABILITIES:
      run = () => tdxCapabilities(c, (cmd as TdxCommand).data);
      break;
    case TDX_CMD.INIT_VM:
      run = () => tdxInitVm(vm, td, c, (cmd as TdxCommand).data);
      break;
    case TDX_CMD.FINALIZE_VM:
      run = () => tdxFinalizeVm(td);
      break;
    default:
      fail(
        'EINVAL',
        OP,
        `${name ?? `command id ${c.id}`} is not a VM-scope TDX command (tdx_vm_ioctl default case, arch/x86/kvm/vmx/tdx.c)`,
        { id: c.id },
      );
  }
  try {
    run();
  } finally {
    // tdx_vm_ioctl copies the command (with hw_error) back whatever the command returned.
    (cmd as TdxCommand).hwError = 0n;
  }
}

/** KVM_TDX_CAPABILITIES (tdx_get_capabilities, arch/x86/kvm/vmx/tdx.c). */
function tdxCapabilities(c: CmdCopy, data: unknown): void {
  const op = 'KVM_TDX_CAPABILITIES';
  if (c.flags !== 0) fail('EINVAL', op, `flags ${hex(c.flags)} must be 0 (reserved)`);
  const s = new UserStruct(data, op, 'struct kvm_tdx_capabilities');
  const nent = s.uint('nent');
  const n = TDX_CPUID_CONFIG.length;
  if (nent < n)
    fail('E2BIG', op, `cpuid.nent ${nent} is smaller than the ${n} configurable CPUID leaves`, {
      nent,
      needed: n,
    });
  const out = s.obj;
  out.supportedAttrs = TDX_SUPPORTED_ATTRS;
  out.supportedXfam = TDX_SUPPORTED_XFAM;
  // 6.16: which GetTdVmCallInfo leaf-1 sub-functions KVM and userspace may handle.
  out.kernelTdvmcallinfo1R11 = 0n;
  out.userTdvmcallinfo1R11 = TDVMCALLINFO_GET_QUOTE;
  out.kernelTdvmcallinfo1R12 = 0n;
  out.userTdvmcallinfo1R12 = 0n;
  out.nent = n;
  out.cpuid = TDX_CPUID_CONFIG.map((l) => ({
    function: l.function,
    index: l.index ?? 0,
    flags: l.index === undefined ? 0 : 1,
    eax: l.eax,
    ebx: l.ebx,
    ecx: l.ecx,
    edx: l.edx,
  }));
}

/** KVM_TDX_INIT_VM (tdx_td_init -> setup_tdparams -> __tdx_td_init, arch/x86/kvm/vmx/tdx.c). */
function tdxInitVm(vm: ArchVm, td: TdxVmState, c: CmdCopy, data: unknown): void {
  const op = 'KVM_TDX_INIT_VM';
  if (td.state !== TD_STATE.UNINITIALIZED)
    fail('EINVAL', op, `the TD is already initialized (state ${td.state}); INIT_VM runs once`);
  if (c.flags !== 0) fail('EINVAL', op, `flags ${hex(c.flags)} must be 0`);
  // copy_from_user of the fixed part.
  const s = new UserStruct(data, op, 'struct kvm_tdx_init_vm');
  const attributes = s.u64('attributes');
  const xfam = s.u64('xfam');
  s.bytes('mrconfigid', 48);
  s.bytes('mrowner', 48);
  s.bytes('mrownerconfig', 48);
  const reserved = s.obj.reserved === undefined ? new Uint8Array(0) : s.obj.reserved;
  if (!(reserved instanceof Uint8Array))
    fail('EFAULT', op, 'copy_from_user failed: reserved is not a Uint8Array');
  const padding = s.uint('cpuidPadding', 32, 0);
  const raw = s.array('cpuid');
  if (raw.length > KVM_MAX_CPUID_ENTRIES)
    fail('E2BIG', op, `cpuid.nent ${raw.length} exceeds KVM_MAX_CPUID_ENTRIES ${KVM_MAX_CPUID_ENTRIES}`);
  const cpuid = raw.map((e, i) => readCpuidEntry(e, op, i));
  if (reserved.some((b) => b !== 0)) fail('EINVAL', op, 'reserved bytes of struct kvm_tdx_init_vm must be 0');
  if (padding !== 0) fail('EINVAL', op, `cpuid.padding ${padding} must be 0`);
  // setup_tdparams.
  if (vm.createdVcpus > 0)
    fail('EBUSY', op, `${vm.createdVcpus} vCPU(s) already created; INIT_VM must precede KVM_CREATE_VCPU`);
  if ((attributes & ~TDX_SUPPORTED_ATTRS) !== 0n)
    fail('EINVAL', op, `attributes ${hex(attributes)} outside the supported ${hex(TDX_SUPPORTED_ATTRS)}`, {
      attributes,
    });
  if ((xfam & ~TDX_SUPPORTED_XFAM) !== 0n)
    fail('EINVAL', op, `xfam ${hex(xfam)} outside the supported ${hex(TDX_SUPPORTED_XFAM)}`, { xfam });
  // setup_tdparams_eptp_controls: GPAW from CPUID 0x80000008 EAX[23:16].
  const pa = findCpuid(cpuid, 0x8000_0008, 0);
  if (pa === undefined) fail('EINVAL', op, 'CPUID leaf 0x80000008 (guest physical address width) is missing');
  const gpaw = (pa.eax >>> 16) & 0xff;
  if (gpaw !== 48 && gpaw !== 52)
    fail('EINVAL', op, `guest physical address width ${gpaw} (CPUID 0x80000008 EAX[23:16]) must be 48 or 52`);
  if (gpaw === 52 && vm.kvm.config.tdxMaxGpaw < 52)
    fail('EINVAL', op, 'GPAW 52 needs 5-level EPT, which this host lacks (SimConfig.cpu.tdxMaxGpaw 48)');
  // setup_tdparams_cpuids: each entry must land in a configurable leaf; TSX / WAITPKG refused.
  let copied = 0;
  for (const leaf of TDX_CPUID_CONFIG) {
    const e = findCpuid(cpuid, leaf.function, leaf.index ?? 0);
    if (e === undefined) continue;
    if (
      e.function === 7 &&
      e.index === 0 &&
      ((e.ebx & CPUID7_EBX_TSX) !== 0 || (e.ecx & CPUID7_ECX_WAITPKG) !== 0)
    )
      fail('EINVAL', op, 'CPUID.7.0 enables TSX (HLE/RTM) or WAITPKG, which a TD cannot have');
    copied++;
  }
  if (copied !== cpuid.length)
    fail(
      'EINVAL',
      op,
      `${cpuid.length - copied} CPUID entr(y/ies) name leaves the TDX module cannot configure`,
    );
  // __tdx_td_init: a KeyID, then TDH.MNG.CREATE / KEY.CONFIG / ADDCX / INIT.
  const hkid = allocKeyId(vm.kvm, op);
  takeKeyId(vm.kvm, hkid);
  td.hkid = hkid;
  td.attributes = attributes;
  td.xfam = xfam | TDX_XFAM_FIXED1;
  td.gpaw = gpaw;
  td.sharedMask = tdxSharedMask(gpaw);
  td.cpuid = cpuid.map((e) => ({ ...e }));
  td.mrtd = new LazyMrtd();
  td.state = TD_STATE.INITIALIZED;
}

/** KVM_TDX_FINALIZE_VM (tdx_td_finalize, arch/x86/kvm/vmx/tdx.c). */
function tdxFinalizeVm(td: TdxVmState): void {
  const op = 'KVM_TDX_FINALIZE_VM';
  if (td.hkid <= 0) fail('EINVAL', op, 'the TD has no HKID: KVM_TDX_INIT_VM has not run');
  if (td.state === TD_STATE.RUNNABLE) fail('EINVAL', op, 'the TD is already finalized (RUNNABLE)');
  // nr_premapped is always 0 here: INIT_MEM_REGION adds each page it maps in the same step.
  // TDH.MR.FINALIZE fixes the MRTD: once RUNNABLE nothing extends it any more.
  td.state = TD_STATE.RUNNABLE;
}

// ---- vCPU scope ---------------------------------------------------------------------------------

/**
 * vt_vcpu_mem_enc_ioctl -> tdx_vcpu_ioctl (arch/x86/kvm/vmx/tdx.c): not a TD vCPU -> EINVAL; TD without HKID
 * or already RUNNABLE -> EINVAL (before the copy); copy -> EFAULT; hw_error -> EINVAL; unknown id
 * -> EINVAL. Nothing is copied back to the command.
 */
export function tdxVcpuIoctl(vcpu: ArchVcpu, cmd: TdxCommand | undefined): void {
  const td = tdOf(vcpu.vm);
  const tv = tdVcpuOf(vcpu);
  if (td === undefined || tv === undefined)
    fail('EINVAL', OP, `vCPU ${vcpu.id} is not a TD vCPU (arch/x86/kvm/vmx/main.c: vt_vcpu_mem_enc_ioctl())`);
  if (td.hkid <= 0 || td.state === TD_STATE.RUNNABLE)
    fail(
      'EINVAL',
      OP,
      td.hkid <= 0
        ? 'the TD has no HKID (KVM_TDX_INIT_VM not done)'
        : 'the TD is finalized (RUNNABLE): vCPU-scope TDX commands are over',
    );
  const c = copyCmd(cmd);
  if (c.hwError !== 0n) fail('EINVAL', OP, `hw_error ${hex(c.hwError)} must be 0 on input`);
  const data = (cmd as TdxCommand).data;
  switch (c.id) {
    case TDX_CMD.INIT_VCPU:
      tdxInitVcpu(vcpu, td, tv, c, data);
      return;
    case TDX_CMD.INIT_MEM_REGION:
      tdxInitMemRegion(vcpu, td, tv, c, data);
      return;
    case TDX_CMD.GET_CPUID:
      tdxGetCpuid(vcpu, td, data);
      return;
    default:
      fail(
        'EINVAL',
        OP,
        `${VM_CMD_NAME[c.id] ?? `command id ${c.id}`} is not a vCPU-scope TDX command (tdx_vcpu_ioctl default case)`,
        { id: c.id },
      );
  }
}

/** KVM_TDX_INIT_VCPU (tdx_vcpu_init -> tdx_td_vcpu_init, arch/x86/kvm/vmx/tdx.c): `data` is the initial RCX. */
function tdxInitVcpu(vcpu: ArchVcpu, td: TdxVmState, tv: TdxVcpuState, c: CmdCopy, data: unknown): void {
  const op = 'KVM_TDX_INIT_VCPU';
  if (c.flags !== 0) fail('EINVAL', op, `flags ${hex(c.flags)} must be 0`);
  if (tv.state !== TD_VCPU_STATE.UNINITIALIZED) fail('EINVAL', op, `vCPU ${vcpu.id} is already initialized`);
  // tdx_vcpu_init(): TDX needs x2APIC; kvm_apic_set_base() refuses X2APIC_ENABLE (a reserved bit)
  // unless the vCPU's CPUID, set by the VMM with KVM_SET_CPUID2, has CPUID.1:ECX.x2APIC[21].
  const table = vcpuCpuidTable(vcpu);
  if (table !== undefined && !cpuidHas(table, X86_FEATURE.X2APIC))
    fail(
      'EINVAL',
      op,
      `vCPU ${vcpu.id}'s CPUID.1:ECX.x2APIC[21] is 0 (set a CPUID with x2APIC through KVM_SET_CPUID2 first)`,
    );
  let rcx: bigint;
  if (data === undefined || data === null) rcx = 0n;
  else if (typeof data === 'bigint' && data >= 0n && data <= U64) rcx = data;
  else if (typeof data === 'number' && Number.isSafeInteger(data) && data >= 0) rcx = BigInt(data);
  else fail('EFAULT', op, 'data (the initial RCX) must be a u64');
  // TDH.VP.CREATE / ADDCX / INIT: the module numbers vCPUs in TDH.VP.INIT order; x2APIC is forced.
  tv.index = td.vcpusInitialized++;
  tv.initialRcx = rcx;
  tv.apicBase = tdxApicBase(vcpu.id);
  // The vCPU's architectural state at its first TD entry (TDX module ABI "TD vCPU initial state"):
  // RIP at the reset vector, paging off, RCX and R8 = the INIT_VCPU datum, RBX = GPAW,
  // RSI = VCPU_INDEX (the boot code finds its per-vCPU parameters by it), other GPRs 0.
  const regs = vcpuRegs(vcpu);
  if (regs !== undefined) {
    for (const k of Object.keys(regs) as (keyof typeof regs)[]) regs[k] = 0n;
    regs.rip = TD_RESET_VECTOR;
    regs.rflags = 2n;
    regs.rcx = rcx;
    regs.r8 = rcx;
    regs.rbx = BigInt(td.gpaw ?? 0);
    regs.rsi = BigInt(tv.index);
  }
  const sregs = vcpuSregs(vcpu);
  if (sregs !== undefined) Object.assign(sregs, TD_INITIAL_CONTROL);
  tv.state = TD_VCPU_STATE.INITIALIZED;
}

/** One page step of kvm_gmem_populate + tdx_gmem_post_populate; throws the page's errno. */
function populatePage(
  vm: ArchVm,
  td: TdxVmState,
  gpa: bigint,
  src: HostPtr | undefined,
  measure: boolean,
): void {
  const op = 'KVM_TDX_INIT_MEM_REGION';
  const slot = vm.memslotAt(gpa);
  // kvm_gmem_populate: the slot must be able to hold private memory (a guest_memfd slot).
  if (slot === undefined || (slot.flags & MEM_FLAG.GUEST_MEMFD) === 0)
    fail('EINVAL', op, `GPA ${hex(gpa)} is not in a guest_memfd memslot`, { gpa });
  const loc = gmemLocation(slot, gpa);
  // kvm_gmem_get_file: the guest_memfd was closed.
  if (loc === undefined || loc.file.released)
    fail('EFAULT', op, `the guest_memfd behind GPA ${hex(gpa)} is gone`);
  const done = td.prepared.get(loc.file);
  if (done?.has(loc.index))
    fail('EEXIST', op, `the guest_memfd page behind GPA ${hex(gpa)} is already populated`, { gpa });
  if ((vm.memoryAttributes(gpa) & MEMORY_ATTRIBUTE.PRIVATE) === 0n)
    fail('EINVAL', op, `GPA ${hex(gpa)} does not have the PRIVATE memory attribute`, { gpa });
  // tdx_gmem_post_populate: get_user_pages_fast of the source page.
  if (src === undefined) fail('EFAULT', op, 'source_addr is NULL');
  if (src.offset + 4096 > src.buffer.length)
    fail(
      'EFAULT',
      op,
      `the source page at offset ${src.offset} runs past its ${src.buffer.length}-byte buffer`,
    );
  const bytes = src.buffer.subarray(src.offset, src.offset + 4096);
  // TDH.MEM.PAGE.ADD copies the source into the TD page; TDH.MR.EXTEND measures it 256 bytes at a time.
  const page = loc.file.page(loc.index, true)!;
  page.set(bytes);
  const mrtd = td.mrtd!;
  mrtd.addPage(gpa);
  if (measure) {
    mrtd.extendPage(gpa, page);
    td.pagesMeasured++;
  }
  td.pagesAdded++;
  td.mapped.add(gpa >> 12n);
  if (done === undefined) td.prepared.set(loc.file, new Set([loc.index]));
  else done.add(loc.index);
}

/** KVM_TDX_INIT_MEM_REGION (tdx_vcpu_init_mem_region, arch/x86/kvm/vmx/tdx.c). */
function tdxInitMemRegion(vcpu: ArchVcpu, td: TdxVmState, tv: TdxVcpuState, c: CmdCopy, data: unknown): void {
  const op = 'KVM_TDX_INIT_MEM_REGION';
  if (tv.state !== TD_VCPU_STATE.INITIALIZED)
    fail('EINVAL', op, `vCPU ${vcpu.id} is not initialized (KVM_TDX_INIT_VCPU first)`);
  if (td.state === TD_STATE.RUNNABLE) fail('EINVAL', op, 'the TD is finalized: its initial memory is fixed');
  if ((c.flags & ~TDX_MEASURE_MEMORY_REGION) !== 0)
    fail('EINVAL', op, `flags ${hex(c.flags)} has bits other than KVM_TDX_MEASURE_MEMORY_REGION`);
  const s = new UserStruct(data, op, 'struct kvm_tdx_init_mem_region');
  let src = s.ptr('source');
  let gpa = s.u64('gpa');
  let nrPages = s.u64('nrPages');
  const srcAddr = src === undefined ? 0 : hostAddr(src);
  const end = BigInt.asUintN(64, gpa + BigInt.asUintN(64, nrPages << 12n));
  if (srcAddr % 4096 !== 0) fail('EINVAL', op, `source_addr (buffer offset ${srcAddr}) is not page aligned`);
  if (gpa % PAGE !== 0n) fail('EINVAL', op, `gpa ${hex(gpa)} is not page aligned`);
  if (nrPages === 0n) fail('EINVAL', op, 'nr_pages is 0');
  if (end <= gpa) fail('EINVAL', op, `gpa ${hex(gpa)} + ${nrPages} pages wraps around`);
  if (!isPrivateGpa(td, gpa) || !isPrivateGpa(td, end - 1n))
    fail('EINVAL', op, `the range ${hex(gpa)}-${hex(end - 1n)} has the shared bit set (not private)`);
  const measure = (c.flags & TDX_MEASURE_MEMORY_REGION) !== 0;
  const out = s.obj;
  try {
    while (nrPages > 0n) {
      populatePage(vcpu.vm, td, gpa, src, measure);
      src = src === undefined ? undefined : { buffer: src.buffer, offset: src.offset + 4096 };
      gpa += PAGE;
      nrPages--;
    }
  } finally {
    // The kernel copies the region back on success and on failure alike: the pages already added stay.
    out.source = src;
    out.gpa = gpa;
    out.nrPages = nrPages;
  }
}

/** The TD's CPUID as the module reports it: the host's leaves, the INIT_VM configuration, GPAW in 0x80000008. */
export function tdCpuid(vm: ArchVm, td: TdxVmState): CpuidEntry[] {
  const out = supportedCpuid(vm.kvm.config).map((e) => ({ ...e }));
  for (const u of td.cpuid) {
    const i = out.findIndex(
      (e) => e.function === u.function && ((u.flags & 1) === 0 || (e.flags & 1) === 0 || e.index === u.index),
    );
    if (i >= 0) out[i] = { ...out[i]!, eax: u.eax, ebx: u.ebx, ecx: u.ecx, edx: u.edx };
    else out.push({ ...u });
  }
  // tdx_read_cpuid: 0x80000008 EAX[23:16] comes from the shared bit (GPAW = S-bit + 1).
  const pa = out.find((e) => e.function === 0x8000_0008);
  if (pa !== undefined && td.gpaw !== undefined)
    pa.eax = ((pa.eax & ~0x00ff_0000) | ((tdxSharedBit(td.gpaw) + 1) << 16)) >>> 0;
  return out.sort((a, b) => a.function - b.function || a.index - b.index);
}

/** KVM_TDX_GET_CPUID (tdx_vcpu_get_cpuid, arch/x86/kvm/vmx/tdx.c): a short buffer -> E2BIG with `nent` set to the count. */
function tdxGetCpuid(vcpu: ArchVcpu, td: TdxVmState, data: unknown): void {
  const op = 'KVM_TDX_GET_CPUID';
  const s = new UserStruct(data, op, 'struct kvm_cpuid2');
  const nent = s.uint('nent');
  const entries = tdCpuid(vcpu.vm, td);
  s.obj.nent = entries.length;
  if (nent < entries.length)
    fail('E2BIG', op, `nent ${nent} is smaller than the TD's ${entries.length} CPUID entries`, {
      nent,
      needed: entries.length,
    });
  s.obj.cpuid = entries;
}
