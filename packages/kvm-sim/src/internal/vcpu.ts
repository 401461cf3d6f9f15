// vCPU scope: register state, CPUID, MSRs and KVM_RUN, which drives the vCPU's guest program.
//
// The run loop: a guest program is an async function. Guest operations that exit (out, in, mmio,
// readAsync/writeAsync, hypercall, hlt, vmgexit, tdcall) hand an Exit to the pending run() and
// await the next run(); the synchronous memory accessors never exit. run() resolves when the guest
// reaches its next exit. At async operations a running guest also yields to the event loop through
// the seeded scheduler (sched.ts), so host tasks and other vCPUs' guests run beside it; a kick()
// from such a task ends the run with EINTR. A guest that awaits anything else (a timer, host I/O, a
// host promise) is caught by a macrotask check (setImmediate runs only after every microtask
// drained: a guest that has not exited or yielded by then is waiting on something that is not a
// guest exit) and the run ends with internal-error.

import { cpuidHas, X86_FEATURE } from '@kvmtest/coco';
import {
  argSregsInput,
  CPUID_FLAG_SIGNIFICANT_INDEX,
  CR,
  copySregs,
  findCpuid,
  type CpuidEntry,
  type Exit,
  GuestException,
  type GuestProgram,
  INTERNAL_ERROR,
  type InternalErrorExit,
  KvmError,
  mergeSregs,
  REG_NAMES,
  registerRunProbe,
  SEGMENT_NAMES,
  type RunInFlight,
  type Regs,
  type RunOptions,
  type Sregs,
  type SregsInput,
  type TdxCommand,
  type XcrEntry,
  XFEATURE,
  XSAVE_LAYOUT,
  zeroRegs,
} from '@kvmtest/kvm';
import type { RunState, VcpuCore, VmCore } from './core.js';
import { checkInt, checkU64 } from './check.js';
import { GuestUnwind, SimGuest } from './guest.js';
import { type StatsBlock, statsPid, vcpuStatIndex, vcpuStats } from './stats.js';
import { protectedSregs, resetSregs, type SegmentModule, segmentModule, storedSegment } from './sregs.js';
import {
  loadComponents,
  resetXsaveArea,
  uabiXsaveArea,
  SUPPORTED_XCR0,
  xcrProblem,
  xsaveAreaProblem,
} from './xsave.js';

/** KVM_MAX_XCRS. */
const MAX_XCRS = 16;
/** KVM_MAX_CPUID_ENTRIES. */
const MAX_CPUID_ENTRIES = 256;
/** The fields of a kvm_cpuid_entry2, in the order KVM_SET_CPUID2 checks them. */
const CPUID_FIELDS = ['function', 'index', 'flags', 'eax', 'ebx', 'ecx', 'edx'] as const;

/** MSR numbers of the small MSR file. */
export const MSR = {
  TSC: 0x10,
  APIC_BASE: 0x1b,
  SYSENTER_CS: 0x174,
  SYSENTER_ESP: 0x175,
  SYSENTER_EIP: 0x176,
  MISC_ENABLE: 0x1a0,
  PAT: 0x277,
  EFER: 0xc0000080,
  STAR: 0xc0000081,
  LSTAR: 0xc0000082,
  CSTAR: 0xc0000083,
  SFMASK: 0xc0000084,
  FS_BASE: 0xc0000100,
  GS_BASE: 0xc0000101,
  KERNEL_GS_BASE: 0xc0000102,
  TSC_AUX: 0xc0000103,
} as const;

/** EFER bits a guest or host may set: SCE, LME, LMA, NXE. */
const EFER_VALID = (1n << 0n) | (1n << 8n) | (1n << 10n) | (1n << 11n);

/**
 * CR4 bits KVM knows (VME … SMXE, FSGSBASE, PCIDE, OSXSAVE, KL, SMEP, SMAP, PKE, CET, PKS, LAM_SUP);
 * any other is in cr4_reserved_bits (arch/x86/kvm/x86.h: __cr4_reserved_bits()).
 */
const CR4_KNOWN =
  0x7fffn | (1n << 16n) | (1n << 17n) | (1n << 18n) | (1n << 19n) | (0xfn << 20n) | (1n << 24n) | (1n << 28n);
/**
 * CR4 bits reserved unless the vCPU's CPUID has the feature (x86.h __cr4_reserved_bits(), evaluated
 * on guest CPUID into cr4_guest_rsvd_bits): [CR4 bit, name, CPUID leaf, register, feature bit].
 */
const CR4_FEATURE_BITS = [
  [11, 'UMIP', 7, 'ecx', 2],
  [12, 'LA57', 7, 'ecx', 16],
  [13, 'VMXE', 1, 'ecx', 5],
  [14, 'SMXE', 1, 'ecx', 6],
  [16, 'FSGSBASE', 7, 'ebx', 0],
  [17, 'PCIDE', 1, 'ecx', 17],
  [18, 'OSXSAVE', 1, 'ecx', 26],
  [20, 'SMEP', 7, 'ebx', 7],
  [21, 'SMAP', 7, 'ebx', 20],
  [22, 'PKE', 7, 'ecx', 3],
] as const;

/**
 * The register file of a vCPU at RESET. arch/x86/kvm/x86.c: kvm_vcpu_reset(): every GPR zero
 * except RDX, which holds CPUID.1.EAX (family/model/stepping) or KVM's default 0x600 when no
 * CPUID.1 entry is found — always so at RESET, which runs in KVM_CREATE_VCPU before userspace
 * can set any CPUID; RFLAGS is X86_EFLAGS_FIXED (0x2) and RIP 0xfff0 (with CS base 0xffff0000,
 * svm.c: init_vmcb() / vmx.c: vmx_vcpu_reset(), the first instruction is at 0xfffffff0).
 */
function resetRegs(): Regs {
  const r = zeroRegs();
  r.rdx = 0x600n;
  r.rip = 0xfff0n;
  return r;
}

// ---- the macrotask watchdog (one setImmediate covers every run in flight) ----------------------

// The runs in flight are the listed vCPUs whose `flightSeq` is non-zero: a run start sets it to the
// next sequence number, the run's end clears it (no Set add/delete per run — that cost ~60 ns a
// round trip). The watchdog takes them in the order their current runs started, which is the
// insertion order a Set with add-on-start / delete-on-end would give.
const listed: SimVcpu[] = [];
let flightSeq = 0;
let armed = false;
const schedule: (f: () => void) => void =
  typeof setImmediate === 'function' ? (f) => setImmediate(f) : (f) => setTimeout(f, 0);

function watchdog(): void {
  armed = false;
  const stuck = listed
    .filter((v) => v.flightSeq !== 0 && !v.yielding)
    .sort((a, b) => a.flightSeq - b.flightSeq);
  // A guest waiting in the scheduler is not stuck: it stays tracked for the next check.
  const yielding = listed.filter((v) => v.flightSeq !== 0 && v.yielding);
  for (const v of listed) {
    v.flightSeq = 0;
    v.listed = false;
  }
  listed.length = 0;
  for (const v of yielding) track(v);
  for (const v of stuck) v.stuck();
}

/** Guest programs started and not ended, for timeout reports (registerRunProbe). */
const live = new Set<SimVcpu>();
registerRunProbe(() => [...live].map((v) => v.inFlight()));

function track(v: SimVcpu): void {
  v.flightSeq = ++flightSeq;
  if (!v.listed) {
    v.listed = true;
    listed.push(v);
  }
  if (!armed) {
    armed = true;
    schedule(watchdog);
  }
}

/** A simulated vCPU (the vCPU fd, `struct kvm_vcpu` and its `kvm_run`). */
export class SimVcpu implements VcpuCore {
  readonly fd: number;
  arch: unknown = undefined;
  fdOpen = true;
  readonly regs: Regs = resetRegs();
  /** Segments, descriptor tables, control registers and EFER (KVM_GET/SET_SREGS). */
  sregs: Sregs;
  /** Whose segment handling KVM_SET/GET_SREGS follows (the host's vendor module). */
  private readonly segmentModule: SegmentModule;
  /** XCR0: x87 only at RESET (arch/x86/kvm/x86.c: kvm_vcpu_reset(), __kvm_set_xcr(vcpu, 0, XFEATURE_MASK_FP)). */
  xcr0: bigint = XFEATURE.FP;
  /** The vCPU's binary statistics (KVM_GET_STATS_FD); exits are counted as they reach the host. */
  readonly stats: StatsBlock = vcpuStats();
  /** The x87/SSE/AVX state as a standard-format XSAVE area (XINUSE in its XSTATE_BV field). */
  readonly fpu: Uint8Array = resetXsaveArea();
  cpuid: CpuidEntry[];
  /**
   * KVM_SET_CPUID2 succeeded at least once: cpuid.c kvm_vcpu_after_set_cpuid() has computed
   * cr4_guest_rsvd_bits from the vCPU's CPUID. Until then they are 0 and only the bits KVM itself
   * does not support are reserved in CR4 (cr4_reserved_bits).
   */
  private cpuidSet = false;
  private readonly msrs = new Map<number, bigint>();
  /** KVM_RUN was entered at least once (kvm_vcpu_has_run). */
  hasRun = false;
  /** Watchdog bookkeeping: the start sequence of the run in flight (0: none), and whether it is listed. */
  flightSeq = 0;
  listed = false;
  /** The guest waits in the scheduler (sched.ts) inside a run. */
  yielding = false;
  /** A kick is pending: the run in flight (or the next) fails with EINTR. */
  kicked = false;
  exit: Exit | undefined = undefined;
  program: GuestProgram | undefined = undefined;
  guest: SimGuest;

  state: RunState = 'idle';
  /** The exit later runs replay once the program can no longer run. */
  private endExit: Exit | undefined;
  /** The exit a moved guest stopped at on its source vCPU, for the completion of that exit. */
  private pendingExit: Exit | undefined;
  private resumeFn: ((v: unknown) => void) | undefined;
  private completion: ((e: Exit) => unknown) | undefined;
  private resumeValue: unknown;
  private runResolve: ((e: Exit) => void) | undefined;
  private runReject: ((e: unknown) => void) | undefined;
  /** The run in progress, for callers that start a second one concurrently (vcpu->mutex). */
  private current: Promise<Exit> | undefined;
  // Promise executors made once per vCPU, so a run or an exit allocates its promise and nothing else.
  private readonly captureRun = (res: (e: Exit) => void, rej: (e: unknown) => void): void => {
    this.runResolve = res;
    this.runReject = rej;
  };
  private readonly captureResume = (r: (v: unknown) => void): void => {
    this.resumeFn = r;
  };

  constructor(
    readonly vm: VmCore,
    readonly id: number,
  ) {
    // arch/x86/kvm/x86.c: kvm_arch_vcpu_create() leaves vcpu->arch.cpuid_entries empty: a new vCPU
    // has no CPUID until the VMM sets one with KVM_SET_CPUID2 (KVM_GET_CPUID2 returns 0 entries).
    this.cpuid = [];
    this.segmentModule = segmentModule(vm.kvm.config);
    this.sregs = resetSregs(this.segmentModule);
    this.msrs.set(MSR.TSC, 0n);
    // xAPIC enabled at the default base; BSP flag for vCPU 0.
    this.msrs.set(MSR.APIC_BASE, 0xfee00000n | 0x800n | (id === 0 ? 0x100n : 0n));
    for (const m of [MSR.SYSENTER_CS, MSR.SYSENTER_ESP, MSR.SYSENTER_EIP]) this.msrs.set(m, 0n);
    this.msrs.set(MSR.MISC_ENABLE, 1n);
    this.msrs.set(MSR.PAT, 0x0007040600070406n);
    for (const m of [MSR.STAR, MSR.LSTAR, MSR.CSTAR, MSR.SFMASK, MSR.KERNEL_GS_BASE]) this.msrs.set(m, 0n);
    this.msrs.set(MSR.TSC_AUX, 0n);
    this.guest = new SimGuest(this);
    this.fd = vm.kvm.allocFd({ kind: 'vcpu', vcpu: this });
  }

  /** The fd check (EBADF) and the dead-VM gate (EIO, virt/kvm/kvm_main.c: kvm_vm_ioctl()). */
  gate(op: string): void {
    if (!this.fdOpen) throw new KvmError('EBADF', op, `vCPU descriptor ${this.fd} is closed`);
    if (this.vm.dead)
      throw new KvmError('EIO', op, 'the VM is dead (kvm->vm_dead), virt/kvm/kvm_main.c: kvm_vm_ioctl()');
  }

  private protectedGate(op: string): void {
    this.gate(op);
    // x86.c: has_protected_state && guest_state_protected -> EINVAL for the register ioctls.
    if (this.vm.hasProtectedState && this.vm.ops.stateProtected?.(this))
      throw new KvmError('EINVAL', op, `vCPU ${this.id}'s register state is protected`);
  }

  // ---- registers ----------------------------------------------------------------------------

  getRegs(): Regs {
    this.protectedGate('KVM_GET_REGS');
    return { ...this.regs };
  }

  setRegs(regs: Regs): void {
    const op = 'KVM_SET_REGS';
    if (typeof regs !== 'object' || regs === null) throw new TypeError(`${op}: regs must be an object`);
    for (const n of REG_NAMES) checkU64(`regs.${n}`, regs[n], op);
    this.protectedGate(op);
    for (const n of REG_NAMES) this.regs[n] = regs[n];
  }

  getSregs(): Sregs {
    this.protectedGate('KVM_GET_SREGS');
    return this.vm.ops.stateProtected?.(this) ? protectedSregs(this.sregs) : copySregs(this.sregs);
  }

  /**
   * KVM_SET_SREGS replaces the whole struct; segments and tables the caller leaves out are the
   * current ones. The checks (kvm_is_valid_sregs()) see the struct as given; what is stored of each
   * segment is what the host's vendor module keeps (storedSegment()).
   */
  setSregs(input: SregsInput): void {
    const op = 'KVM_SET_SREGS';
    argSregsInput(op, input);
    this.protectedGate(op);
    const next = mergeSregs(this.sregs, input);
    const why = this.invalidSregs(next);
    if (why !== undefined) throw new KvmError('EINVAL', op, why);
    if (this.vm.ops.stateProtected?.(this)) return; // regs.c: __set_sregs_common() sets nothing once the state is protected
    for (const n of SEGMENT_NAMES)
      if (input[n] !== undefined) next[n] = storedSegment(this.segmentModule, n, next[n]);
    this.sregs = next;
    this.guest.flush();
  }

  /**
   * The CPUID half of kvm_is_valid_cr4() (KVM_SET_SREGS and the guest's MOV to CR4 alike): a feature
   * bit KVM does not support (cr4_reserved_bits) or, once KVM_SET_CPUID2 has run
   * (cr4_guest_rsvd_bits, cpuid.c kvm_vcpu_after_set_cpuid()), one the vCPU's CPUID lacks.
   */
  cr4FeatureProblem(cr4: bigint): string | undefined {
    const hex = (v: bigint): string => `0x${v.toString(16)}`;
    for (const [bit, name, leaf, reg, fbit] of CR4_FEATURE_BITS) {
      if ((cr4 & (1n << BigInt(bit))) === 0n) continue;
      const host = findCpuid(this.vm.kvm.cpuid, leaf, 0);
      if (host === undefined || ((host[reg] >>> fbit) & 1) === 0)
        return `CR4 ${hex(cr4)} sets ${name} (bit ${bit}) but KVM does not support it (CPUID.0x${leaf.toString(16)}.${reg.toUpperCase()}[${fbit}] of KVM_GET_SUPPORTED_CPUID is 0)`;
      if (!this.cpuidSet) continue;
      const e = findCpuid(this.cpuid, leaf, 0);
      if (e === undefined || ((e[reg] >>> fbit) & 1) === 0)
        return `CR4 ${hex(cr4)} sets ${name} (bit ${bit}) but the vCPU's CPUID.0x${leaf.toString(16)}.${reg.toUpperCase()}[${fbit}] is 0`;
    }
    return undefined;
  }

  /**
   * arch/x86/kvm/x86.c (regs.c in newer trees): kvm_is_valid_sregs(), the check KVM_SET_SREGS makes
   * before changing anything: long mode with paging needs CR4.PAE, EFER.LMA and a legal CR3; outside
   * it neither EFER.LMA nor CS.L may be set; then kvm_is_valid_cr4() (reserved bits, bits of features
   * KVM does not support, and, once KVM_SET_CPUID2 computed cr4_guest_rsvd_bits, bits of features
   * the vCPU's CPUID lacks) and kvm_is_valid_cr0() (bits 63:32, NW without CD, PG without PE).
   * EFER is not checked beyond that: __set_sregs_common() hands it to the vendor's set_efer() with
   * no kvm_valid_efer() (measured on /dev/kvm: LME, NXE and reserved bit 2 are accepted on a vCPU
   * with no CPUID). Returns why the state is invalid.
   */
  private invalidSregs(sregs: Sregs): string | undefined {
    const { cr0, cr3, cr4, efer } = sregs;
    const hex = (v: bigint): string => `0x${v.toString(16)}`;
    if ((efer & CR.EFER_LME) !== 0n && (cr0 & CR.CR0_PG) !== 0n) {
      if ((cr4 & CR.CR4_PAE) === 0n) return 'long mode with paging (EFER.LME and CR0.PG) needs CR4.PAE';
      if ((efer & CR.EFER_LMA) === 0n) return 'long mode with paging (EFER.LME and CR0.PG) needs EFER.LMA';
      if (cr3 >> BigInt(this.vm.kvm.config.maxPhysAddr) !== 0n)
        return `CR3 ${hex(cr3)} has bits above MAXPHYADDR ${this.vm.kvm.config.maxPhysAddr}`;
    } else if ((efer & CR.EFER_LMA) !== 0n) return 'EFER.LMA needs EFER.LME and CR0.PG';
    else if (sregs.cs.l !== 0)
      return 'CS.L (a 64-bit code segment) needs long mode with paging (EFER.LME and CR0.PG)';
    const cr4Reserved = cr4 & ~CR4_KNOWN;
    if (cr4Reserved !== 0n) return `CR4 ${hex(cr4)} sets reserved bits ${hex(cr4Reserved)}`;
    const feature = this.cr4FeatureProblem(cr4);
    if (feature !== undefined) return feature;
    if (cr0 >> 32n !== 0n) return `CR0 ${hex(cr0)} sets bits 63:32`;
    if ((cr0 & CR.CR0_NW) !== 0n && (cr0 & CR.CR0_CD) === 0n) return `CR0 ${hex(cr0)} sets NW without CD`;
    if ((cr0 & CR.CR0_PG) !== 0n && (cr0 & CR.CR0_PE) === 0n) return `CR0 ${hex(cr0)} sets PG without PE`;
    return undefined;
  }

  // ---- XSAVE state and XCRs -----------------------------------------------------------------

  /** guest_supported_xcr0: CPUID.(0xD,0) EDX:EAX of the vCPU's CPUID, masked by what KVM saves. */
  guestSupportedXcr0(): bigint {
    const e = findCpuid(this.cpuid, 0xd, 0);
    return e === undefined ? 0n : ((BigInt(e.edx) << 32n) | BigInt(e.eax)) & SUPPORTED_XCR0;
  }

  /** arch/x86/kvm/x86.c: kvm_vcpu_ioctl_x86_get_xsave(): the state in the uABI (standard) format. */
  getXsave(): Uint8Array {
    this.protectedGate('KVM_GET_XSAVE');
    return uabiXsaveArea(this.fpu);
  }

  /** arch/x86/kvm/x86.c: kvm_vcpu_ioctl_x86_set_xsave() -> fpu_copy_uabi_to_guest_fpstate(). */
  setXsave(area: Uint8Array): void {
    const op = 'KVM_SET_XSAVE';
    if (!(area instanceof Uint8Array) || area.length !== XSAVE_LAYOUT.size)
      throw new TypeError(`${op}: area must be a ${XSAVE_LAYOUT.size}-byte Uint8Array (struct kvm_xsave)`);
    this.protectedGate(op);
    const why = xsaveAreaProblem(area, SUPPORTED_XCR0);
    if (why !== undefined) throw new KvmError('EINVAL', op, why);
    loadComponents(this.fpu, area, SUPPORTED_XCR0);
  }

  /** arch/x86/kvm/x86.c: kvm_vcpu_ioctl_x86_get_xcrs(): one XCR, XCR0. */
  getXcrs(): XcrEntry[] {
    this.protectedGate('KVM_GET_XCRS');
    return [{ xcr: 0, value: this.xcr0 }];
  }

  /** arch/x86/kvm/x86.c: kvm_vcpu_ioctl_x86_set_xcrs(): at most KVM_MAX_XCRS (16); the first XCR0 entry counts. */
  setXcrs(xcrs: readonly XcrEntry[]): void {
    const op = 'KVM_SET_XCRS';
    if (!Array.isArray(xcrs)) throw new TypeError(`${op}: xcrs must be an array`);
    xcrs.forEach((x, i) => {
      if (typeof x !== 'object' || x === null) throw new TypeError(`${op}: xcrs[${i}] must be an object`);
      checkInt(`xcrs[${i}].xcr`, x.xcr, op);
      checkU64(`xcrs[${i}].value`, x.value, op);
    });
    this.protectedGate(op);
    if (xcrs.length > MAX_XCRS)
      throw new KvmError('EINVAL', op, `${xcrs.length} XCRs exceed KVM_MAX_XCRS ${MAX_XCRS}`);
    const x = xcrs.find((e) => e.xcr === 0);
    if (x === undefined) return;
    const why = xcrProblem(0, x.value, this.guestSupportedXcr0());
    if (why !== undefined) throw new KvmError('EINVAL', op, why);
    this.xcr0 = x.value;
  }

  // ---- CPUID and MSRs -----------------------------------------------------------------------

  setCpuid(entries: readonly CpuidEntry[]): void {
    const op = 'KVM_SET_CPUID2';
    if (!Array.isArray(entries)) throw new TypeError(`${op}: entries must be an array`);
    const copy = entries.map((e, i) => {
      if (typeof e !== 'object' || e === null) throw new TypeError(`${op}: entries[${i}] must be an object`);
      const out = {} as CpuidEntry;
      for (const k of CPUID_FIELDS) {
        const v = e[k];
        // checkInt's own test first, so the field's name is only built for the error.
        if (typeof v !== 'number' || !Number.isInteger(v)) checkInt(`entries[${i}].${k}`, v, op);
        if (v < 0 || v > 0xffff_ffff)
          throw new RangeError(`${op}: entries[${i}].${k} ${v} does not fit in a u32`);
        out[k] = v;
      }
      return out;
    });
    this.gate(op);
    if (copy.length > MAX_CPUID_ENTRIES)
      throw new KvmError(
        'E2BIG',
        op,
        `${copy.length} entries exceed KVM_MAX_CPUID_ENTRIES ${MAX_CPUID_ENTRIES}`,
      );
    // cpuid.c kvm_set_cpuid: after KVM_RUN only an identical table is accepted.
    if (this.hasRun && !sameCpuid(copy, this.cpuid))
      throw new KvmError('EINVAL', op, 'CPUID cannot change after the vCPU has run');
    this.cpuid = copy;
    this.cpuidSet = true;
  }

  getCpuid(): CpuidEntry[] {
    this.gate('KVM_GET_CPUID2');
    return this.cpuid.map((e) => ({ ...e }));
  }

  /** The MSR file as the CPU sees it; undefined for an MSR the simulator does not model. */
  msr(index: number): bigint | undefined {
    if (index === MSR.EFER) return this.sregs.efer;
    // vmx_get_msr()/svm_get_msr(): MSR_FS_BASE and MSR_GS_BASE read the FS/GS segment bases.
    if (index === MSR.FS_BASE) return this.sregs.fs.base;
    if (index === MSR.GS_BASE) return this.sregs.gs.base;
    return this.msrs.get(index);
  }

  /**
   * arch/x86/kvm/x86.c: __kvm_set_msr() refuses a non-canonical FS/GS/KERNEL_GS base, LSTAR or CSTAR
   * (is_noncanonical_msr_address(): 57 address bits when the vCPU's CPUID has LA57, else 48).
   */
  private canonicalForMsr(value: bigint): boolean {
    const bits = cpuidHas(this.cpuid, X86_FEATURE.LA57) ? 57 : 48;
    return BigInt.asUintN(64, BigInt.asIntN(bits, value)) === value;
  }

  /** Writes the MSR file; false when the MSR is not modelled or the value is invalid for it. */
  writeMsr(index: number, value: bigint): boolean {
    if (index === MSR.EFER) {
      if ((value & ~EFER_VALID) !== 0n) return false;
      this.sregs.efer = value;
      this.guest.flush();
      return true;
    }
    switch (index) {
      case MSR.FS_BASE:
      case MSR.GS_BASE:
      case MSR.KERNEL_GS_BASE:
      case MSR.LSTAR:
      case MSR.CSTAR:
        if (!this.canonicalForMsr(value)) return false;
    }
    // vmx_set_msr()/svm_set_msr(): MSR_FS_BASE and MSR_GS_BASE write the FS/GS segment bases.
    if (index === MSR.FS_BASE) {
      this.sregs.fs.base = value;
      return true;
    }
    if (index === MSR.GS_BASE) {
      this.sregs.gs.base = value;
      return true;
    }
    if (!this.msrs.has(index)) return false;
    this.msrs.set(index, value);
    return true;
  }

  getMsr(index: number): bigint {
    const op = 'KVM_GET_MSRS';
    checkInt('index', index, op);
    this.gate(op);
    const v = this.vm.ops.readMsr?.(this, index) ?? this.msr(index);
    // KVM_GET_MSRS returns how many MSRs it processed; for one MSR, 0 is a failure.
    if (v === undefined)
      throw new KvmError('EINVAL', op, `MSR 0x${index.toString(16)} is not supported (0 of 1 processed)`);
    return v;
  }

  setMsr(index: number, value: bigint): void {
    const op = 'KVM_SET_MSRS';
    checkInt('index', index, op);
    checkU64('value', value, op);
    this.gate(op);
    if (this.vm.ops.writeMsr?.(this, index, value)) return;
    if (!this.writeMsr(index, value))
      throw new KvmError(
        'EINVAL',
        op,
        `MSR 0x${index.toString(16)} rejected 0x${value.toString(16)} (0 of 1 processed)`,
      );
  }

  /**
   * KVM_GET_STATS_FD on the vCPU (virt/kvm/kvm_main.c: kvm_vcpu_ioctl_get_stats_fd()): id
   * "kvm-<pid>/vcpu-<id>"; the file holds a reference on the VM.
   */
  getStatsFd(): number {
    this.gate('KVM_GET_STATS_FD');
    return this.vm.openStatsFd(this.stats, `kvm-${statsPid()}/vcpu-${this.id}`);
  }

  memEncryptOp(cmd: TdxCommand | undefined): void {
    const op = 'KVM_MEMORY_ENCRYPT_OP';
    if (cmd !== undefined && (typeof cmd !== 'object' || cmd === null))
      throw new TypeError(`${op}: cmd must be a command object or undefined (NULL)`);
    this.gate(op);
    const f = this.vm.ops.vcpuMemEncryptOp;
    // arch/x86/kvm/x86.c: kvm_arch_vcpu_ioctl(): SVM has no vCPU mem_enc op -> ENOTTY.
    if (f === undefined)
      throw new KvmError('ENOTTY', op, `no vCPU memory-encryption op on ${this.vm.ops.name}`);
    f.call(this.vm.ops, this, cmd);
  }

  setEntry(program: GuestProgram): void {
    if (typeof program !== 'function')
      throw new TypeError('setEntry: program must be a function (g) => Promise<void>');
    if (!this.fdOpen) throw new KvmError('EBADF', 'setEntry', `vCPU descriptor ${this.fd} is closed`);
    if (this.state !== 'idle')
      throw new Error(`setEntry: vCPU ${this.id} has already started its guest program`);
    this.program = program;
  }

  /**
   * The destination side of an encryption-context move (KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM): with
   * `registers` (SEV-ES, arch/x86/kvm/svm/sev.c: sev_migrate_from() moves each vCPU's VMSA, which
   * holds the control registers, EFER, the GPRs, RIP and the syscall MSRs) this vCPU takes `from`'s
   * register state. If this vCPU has no guest program of its own and has not run, it also takes
   * `from`'s guest program where it stopped — the simulator's stand-in for the guest's code and RIP
   * — so the guest goes on here; `from` keeps a fresh, idle guest.
   */
  adoptGuest(from: SimVcpu, registers: boolean): void {
    if (registers) {
      Object.assign(this.regs, from.regs);
      Object.assign(this.sregs, from.sregs);
      for (const [k, v] of from.msrs) if (this.msrs.has(k)) this.msrs.set(k, v);
      this.xcr0 = from.xcr0;
      this.fpu.set(from.fpu);
      this.guest.flush();
    }
    if (this.state !== 'idle' || this.program !== undefined || this.hasRun) return;
    if (from.program === undefined || from.state === 'running' || from.state === 'ended') return;
    const moved = from.guest;
    this.program = from.program;
    this.state = from.state;
    this.resumeFn = from.resumeFn;
    this.completion = from.completion;
    this.resumeValue = from.resumeValue;
    this.pendingExit = from.exit;
    moved.rebind(this);
    this.guest = moved;
    from.program = undefined;
    from.state = 'idle';
    from.resumeFn = undefined;
    from.completion = undefined;
    from.resumeValue = undefined;
    from.guest = new SimGuest(from);
  }

  // ---- KVM_RUN ------------------------------------------------------------------------------

  run(opts?: RunOptions): Promise<Exit> {
    if (opts !== undefined && (typeof opts !== 'object' || opts === null))
      return Promise.reject(new TypeError('KVM_RUN: opts must be an object'));
    if (this.current !== undefined) {
      // vcpu->mutex serialises KVM_RUN: a concurrent caller waits for the run in progress.
      const after = this.current.then(
        () => this.run(opts),
        () => this.run(opts),
      );
      return after;
    }
    try {
      this.gate('KVM_RUN');
      this.vm.ops.runCheck?.(this);
    } catch (e) {
      return Promise.reject(e);
    }
    this.hasRun = true;
    this.guest.enterRun();
    // complete_userspace_io: the data the host left in kvm_run finishes the pending IN/MMIO/hypercall.
    const pending = this.exit ?? this.pendingExit;
    if (this.completion !== undefined && pending !== undefined) {
      this.resumeValue = this.completion(pending);
      this.completion = undefined;
    }
    this.pendingExit = undefined;
    // arch/x86/kvm/x86.c: kvm_arch_vcpu_ioctl_run(): the pending I/O completes first, then
    // `!vcpu->wants_to_run` (immediate_exit set) fails KVM_RUN with EINTR; exit_reason stays as it was.
    if (opts?.immediateExit)
      return Promise.reject(new KvmError('EINTR', 'KVM_RUN', 'kvm_run.immediate_exit is set'));
    if (this.kicked) {
      // A kick before the run: as immediate_exit set by the VMM's signal handler.
      this.kicked = false;
      return Promise.reject(
        new KvmError(
          'EINTR',
          'KVM_RUN',
          `vCPU ${this.id} was kicked (immediate_exit) before KVM_RUN entered the guest`,
        ),
      );
    }
    if (this.state === 'ended') {
      this.exit = this.endExit!;
      return Promise.resolve(this.endExit!);
    }
    if (this.state === 'idle' && this.program === undefined) {
      const e: InternalErrorExit = {
        reason: 'internal-error',
        suberror: INTERNAL_ERROR.EMULATION,
        detail: `vCPU ${this.id} has no guest program: call vcpu.setEntry(program) before the first run`,
      };
      this.exit = e;
      return Promise.resolve(e);
    }
    const p = new Promise<Exit>(this.captureRun);
    this.current = p;
    const wasIdle = this.state === 'idle';
    this.state = 'running';
    track(this);
    if (wasIdle) this.start();
    else {
      const r = this.resumeFn!;
      const v = this.resumeValue;
      this.resumeFn = undefined;
      this.resumeValue = undefined;
      r(v);
    }
    return p;
  }

  private start(): void {
    const program = this.program!;
    live.add(this);
    let ret: unknown;
    try {
      ret = program(this.guest);
    } catch (e) {
      this.programFailed(e);
      return;
    }
    Promise.resolve(ret).then(
      () => this.programReturned(),
      (e: unknown) => this.programFailed(e),
    );
  }

  private programReturned(): void {
    if (this.state !== 'running') return;
    // The program returning is the vCPU halting for good: `hlt` now and on every later run.
    this.end({ reason: 'hlt' }, { reason: 'hlt' });
  }

  private programFailed(e: unknown): void {
    if (this.state !== 'running' || e instanceof GuestUnwind) return;
    let exit: Exit;
    if (e instanceof GuestException) {
      // An unhandled architectural exception: the CPU gives up (triple fault) -> KVM_EXIT_SHUTDOWN.
      exit = { reason: 'shutdown', detail: `unhandled ${e.message}` };
    } else {
      const err = e instanceof Error ? e : new Error(String(e));
      exit = {
        reason: 'internal-error',
        suberror: INTERNAL_ERROR.GUEST_CRASH,
        detail: `guest program of vCPU ${this.id} threw ${err.name}: ${err.message}\n${err.stack ?? ''}`,
      };
    }
    this.end(exit, exit);
  }

  /** Ends the program for good: `exit` now, `later` on every following run. */
  end(exit: Exit, later: Exit): void {
    live.delete(this);
    this.state = 'ended';
    this.endExit = later;
    this.resumeFn = undefined;
    this.completion = undefined;
    this.finishRun(exit);
  }

  private finishRun(exit: Exit, errno?: 'EINTR'): void {
    this.flightSeq = 0;
    countExit(this.stats, exit);
    this.current = undefined;
    this.exit = exit;
    const res = this.runResolve;
    const rej = this.runReject;
    this.runResolve = undefined;
    this.runReject = undefined;
    if (this.vm.dead && rej !== undefined) {
      // kvm_main.c: a vCPU in KVM_RUN that sees KVM_REQ_VM_DEAD returns EIO.
      rej(new KvmError('EIO', 'KVM_RUN', 'the VM died while the vCPU was running'));
      return;
    }
    if (errno !== undefined && rej !== undefined) {
      rej(
        new KvmError(
          errno,
          'KVM_RUN',
          `vCPU ${this.id} was kicked while running its guest (exit reason intr)`,
        ),
      );
      return;
    }
    res?.(exit);
  }

  /**
   * Kicks the vCPU (Vcpu.kick): as a VMM sets kvm_run.immediate_exit and signals the vCPU thread.
   * The guest sees it at its next async operation (its next instruction boundary here).
   */
  kick(): void {
    this.kicked = true;
    this.guest.yieldAt = 0;
  }

  /**
   * A second guest operation exited while the first one's exit is with the host: the program ends;
   * the host's next run reports `detail` (the exit the host holds is left as it is).
   */
  failAtExit(detail: string): void {
    live.delete(this);
    const e: InternalErrorExit = { reason: 'internal-error', suberror: INTERNAL_ERROR.GUEST_CRASH, detail };
    this.state = 'ended';
    this.endExit = e;
    this.resumeFn = undefined;
    this.completion = undefined;
  }

  /** What a timeout report says about this vCPU's guest, and how to end it. */
  inFlight(): RunInFlight {
    return {
      vcpuId: this.id,
      describe: () => {
        const g = this.guest;
        const doing =
          this.state === 'at-exit'
            ? `stopped at exit ${this.exit === undefined ? '?' : describeExitShort(this.exit)} (after ${g.lastOp || 'its first operation'}), waiting for the host's next KVM_RUN`
            : this.yielding
              ? `running, yielded to the event loop in ${g.lastOp}`
              : `running (last async operation: ${g.lastOp || 'none yet'})`;
        return `vCPU ${this.id} (VM fd ${this.vm.fd}, ${this.vm.ops.name}): ${doing}; ${g.ops} guest operations in this run`;
      },
      interrupt: (why: string) => this.interrupt(why),
    };
  }

  /** Ends the guest program for good: a run in flight returns internal-error `why`, as do later runs. */
  interrupt(why: string): void {
    if (this.state === 'ended' || this.state === 'idle') return;
    const e: InternalErrorExit = {
      reason: 'internal-error',
      suberror: INTERNAL_ERROR.GUEST_CRASH,
      detail: why,
    };
    this.guest.poison(new GuestUnwind(why));
    if (this.state === 'running') this.end(e, e);
    else this.failAtExit(why);
  }

  /**
   * A guest operation exits: `exit` goes to the pending run; the returned promise resolves with
   * what `complete` derives from the exit the host edited, when the next run starts.
   */
  exitToHost(exit: Exit, complete?: (e: Exit) => unknown, errno?: 'EINTR'): Promise<unknown> {
    if (this.state !== 'running') return Promise.reject(this.guest.outsideRun());
    this.state = 'at-exit';
    this.completion = complete;
    const p = new Promise<unknown>(this.captureResume);
    this.finishRun(exit, errno);
    return p;
  }

  /** Called by the watchdog: the guest is still "running" after every microtask drained. */
  stuck(): void {
    if (this.state !== 'running') return;
    const detail =
      `guest program of vCPU ${this.id} awaited something that is not a guest exit (a timer, host I/O or a ` +
      'host promise): a guest may only await its own Guest operations (out, in, mmio*, hypercall, hlt, …)';
    const e: InternalErrorExit = { reason: 'internal-error', suberror: INTERNAL_ERROR.GUEST_CRASH, detail };
    this.guest.poison(new GuestUnwind(detail));
    this.end(e, e);
  }

  get running(): boolean {
    return this.state === 'running';
  }

  /** The fd was closed. */
  releaseFd(): void {
    this.fdOpen = false;
    this.vm.vcpuFdReleased();
  }

  /** The VM is being destroyed: drop the guest program and its state. */
  destroy(): void {
    live.delete(this);
    this.flightSeq = 0;
    this.program = undefined;
    this.resumeFn = undefined;
    this.completion = undefined;
    this.guest.poison(`vCPU ${this.id} was destroyed`);
  }
}

// Value indices of the exit statistics, looked up once: an exit adds to two of them.
const STAT_EXITS = vcpuStatIndex('exits');
const STAT_IO_EXITS = vcpuStatIndex('io_exits');
const STAT_MMIO_EXITS = vcpuStatIndex('mmio_exits');
const STAT_HALT_EXITS = vcpuStatIndex('halt_exits');
const STAT_HYPERCALLS = vcpuStatIndex('hypercalls');
const STAT_SIGNAL_EXITS = vcpuStatIndex('signal_exits');

/** The x86 exit statistics an exit to the host adds to (vcpu->stat.exits, io_exits, mmio_exits, …). */
function countExit(stats: StatsBlock, exit: Exit): void {
  stats.bumpAt(STAT_EXITS);
  switch (exit.reason) {
    case 'io':
      stats.bumpAt(STAT_IO_EXITS);
      return;
    case 'mmio':
      stats.bumpAt(STAT_MMIO_EXITS);
      return;
    case 'hlt':
      stats.bumpAt(STAT_HALT_EXITS);
      return;
    case 'hypercall':
      stats.bumpAt(STAT_HYPERCALLS);
      return;
    case 'intr':
      stats.bumpAt(STAT_SIGNAL_EXITS);
      return;
    default:
      return;
  }
}

function describeExitShort(e: Exit): string {
  switch (e.reason) {
    case 'io':
      return `io ${e.direction} port 0x${e.port.toString(16)}`;
    case 'mmio':
      return `mmio ${e.isWrite ? 'write' : 'read'} gpa 0x${e.gpa.toString(16)}`;
    case 'memory-fault':
      return `memory-fault gpa 0x${e.gpa.toString(16)}`;
    default:
      return e.reason;
  }
}

function sameCpuid(a: readonly CpuidEntry[], b: readonly CpuidEntry[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((e, i) => {
    const f = b[i]!;
    const sig = (e.flags & CPUID_FLAG_SIGNIFICANT_INDEX) !== 0;
    return (
      e.function === f.function &&
      (!sig || e.index === f.index) &&
      e.flags === f.flags &&
      e.eax === f.eax &&
      e.ebx === f.ebx &&
      e.ecx === f.ecx &&
      e.edx === f.edx
    );
  });
}
