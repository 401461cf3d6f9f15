// LinuxVcpu: a vCPU file descriptor, its mmap'd `kvm_run`, and KVM_RUN under the watchdog.
//
// Internal entry points for the guest agent (documented in INTERNAL.md):
//   runOnce(vcpu, opts)      one synchronous KVM_RUN (watchdog-guarded); returns the raw exit
//                            reason number, or throws KvmError (EINTR for immediate_exit, the
//                            watchdog's timeout as EINTR with details.watchdog = true, …).
//   vcpu.runView / runBytes  DataView / Uint8Array over kvm_run (offsets in uapi.ts RUN).
//   vcpu.decodeRunExit()     the Exit union for what is in kvm_run now.
//   vcpu.setExitForHost(e)   make `e` the exit `vcpu.exit` shows (and the one completed next run).
//   setEntryHook(hook)       how setEntry()/run() reach the agent (see hooks.ts).

import type {
  CpuidEntry,
  Exit,
  GuestProgram,
  Regs,
  Sregs,
  SregsInput,
  TdxCommand,
  XcrEntry,
} from '@kvmtest/kvm';
import { argSregsInput, EXIT_REASON, KvmError, REG_NAMES, XSAVE_LAYOUT } from '@kvmtest/kvm';
import { completeExit, decodeExit } from './exit.js';
import { entryHook } from './hooks.js';
import { adoptMapping, detachFileMapping } from './memory.js';
import {
  addressOf,
  ioctlBuf,
  ioctlBufRaw,
  ioctlInt,
  ioctlIntRaw,
  lastErrno,
  MAP_SHARED,
  PROT_READ,
  PROT_WRITE,
  sysClose,
  sysMmap,
} from './sys.js';
import { decodeSregs, encodeSregsInput } from './sregs.js';
import { IOCTL, MAX_XCRS, RUN, SIZE, XCRS } from './uapi.js';
import { beginRun, endRun, processExiting, wasKicked } from './watchdog.js';
import type { LinuxRunOptions, LinuxVcpuCore, LinuxVmCore } from './core.js';
import { encryptOpVcpu } from './encrypt.js';

export type { LinuxRunOptions } from './core.js';

/** A vCPU on /dev/kvm. */
export class LinuxVcpu implements LinuxVcpuCore {
  readonly vm: LinuxVmCore;
  readonly id: number;
  readonly fd: number;
  /** kvm_run, mmap'd from the vCPU fd (and replaced by anonymous memory once the vCPU closes). */
  readonly runBytes: Uint8Array;
  /** DataView over kvm_run. */
  readonly runView: DataView;
  /** Host address of kvm_run (for the watchdog). */
  readonly runAddr: bigint;
  private fdOpen = true;
  private lastExit: Exit | undefined;
  /** The IN / MMIO-read exit whose data the next KVM_RUN must find in kvm_run. */
  private pending: Exit | undefined;
  /** The guest program from setEntry (run by the agent hook). */
  entry: GuestProgram | undefined;
  /** Free-form state the agent keeps per vCPU. */
  agentState: unknown;
  /** A kick() is pending: the next run fails with EINTR. */
  private kicked = false;
  private readonly regsBuf = new Uint8Array(SIZE.kvm_regs);
  private readonly regsView = new DataView(this.regsBuf.buffer);
  private readonly sregsBuf = new Uint8Array(SIZE.kvm_sregs);
  private readonly sregsView = new DataView(this.sregsBuf.buffer);

  constructor(vm: LinuxVmCore, id: number, fd: number, mmapSize: number) {
    this.vm = vm;
    this.id = id;
    this.fd = fd;
    const addr = sysMmap(mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0, 0n, 'mmap(kvm_run)');
    const ab = adoptMapping(addr, mmapSize);
    this.runAddr = addr;
    this.runBytes = new Uint8Array(ab);
    this.runView = new DataView(ab);
  }

  /** True until close. */
  get isOpen(): boolean {
    return this.fdOpen;
  }

  get exit(): Exit | undefined {
    return this.lastExit;
  }

  /** Calls that set vCPU state (registers, special registers, MSRs, CPUID, XSAVE, XCRs); the agent compares it across an exit. */
  stateWrites = 0;

  /** Sets what `exit` shows (and what is completed into kvm_run before the next run). */
  setExitForHost(exit: Exit | undefined): void {
    this.lastExit = exit;
    this.pending = exit;
  }

  /** The exit to complete before the next run (once). */
  takePending(): Exit | undefined {
    const p = this.pending;
    this.pending = undefined;
    return p;
  }

  /** The Exit union for the current contents of kvm_run. */
  decodeRunExit(): Exit {
    return decodeExit(this.runView, this.runBytes);
  }

  /** Throws EBADF once closed (the fd is gone: the kernel would say so). */
  gate(op: string): void {
    if (!this.fdOpen) throw new KvmError('EBADF', op, `vCPU ${this.id} descriptor ${this.fd} is closed`);
  }

  /**
   * A host task kicks this vCPU (the contract's kick): runs happen synchronously on the calling
   * thread, so no run can be in flight while another task of that thread calls this; the next run
   * therefore fails with EINTR after completing pending I/O — KVM_RUN with immediate_exit set, as the
   * kernel answers a VMM's kick (arch/x86/kvm/x86.c: kvm_arch_vcpu_ioctl_run()). One kick, one EINTR.
   */
  kick(): void {
    this.gate('kick');
    this.kicked = true;
  }

  async run(opts?: LinuxRunOptions): Promise<Exit> {
    if (this.kicked) {
      this.kicked = false;
      opts = { ...opts, immediateExit: true };
    }
    if (this.entry !== undefined) {
      const hook = entryHook();
      if (!hook)
        throw new Error(
          `vCPU ${this.id}: a guest program is set (setEntry) but no guest agent is registered to run it on /dev/kvm`,
        );
      return hook.run(this, opts ?? {});
    }
    return this.runSync(opts);
  }

  /** One KVM_RUN, decoded; what `run()` does without a guest program. */
  runSync(opts?: LinuxRunOptions): Exit {
    runOnce(this, opts);
    const exit = this.decodeRunExit();
    this.setExitForHost(exit);
    return exit;
  }

  getRegs(): Regs {
    this.gate('KVM_GET_REGS');
    ioctlBuf(this.fd, IOCTL.KVM_GET_REGS, this.regsBuf, 'KVM_GET_REGS');
    const r = {} as Regs;
    for (let i = 0; i < REG_NAMES.length; i++) r[REG_NAMES[i]!] = this.regsView.getBigUint64(i * 8, true);
    return r;
  }

  setRegs(regs: Regs): void {
    this.stateWrites++;
    for (const n of REG_NAMES)
      if (typeof regs[n] !== 'bigint')
        throw new TypeError(`KVM_SET_REGS: ${n} must be a bigint, got ${typeof regs[n]}`);
    this.gate('KVM_SET_REGS');
    for (let i = 0; i < REG_NAMES.length; i++)
      this.regsView.setBigUint64(i * 8, BigInt.asUintN(64, regs[REG_NAMES[i]!]), true);
    ioctlBuf(this.fd, IOCTL.KVM_SET_REGS, this.regsBuf, 'KVM_SET_REGS');
  }

  /** KVM_GET_SREGS into a fresh full `struct kvm_sregs` (312 bytes; offsets in uapi.ts SREGS). */
  getSregsRaw(): Uint8Array {
    this.gate('KVM_GET_SREGS');
    const buf = new Uint8Array(SIZE.kvm_sregs);
    ioctlBuf(this.fd, IOCTL.KVM_GET_SREGS, buf, 'KVM_GET_SREGS');
    return buf;
  }

  /** KVM_SET_SREGS from a full `struct kvm_sregs`. */
  setSregsRaw(buf: Uint8Array): void {
    this.stateWrites++;
    if (buf.length !== SIZE.kvm_sregs)
      throw new RangeError(`KVM_SET_SREGS: struct kvm_sregs is ${SIZE.kvm_sregs} bytes, got ${buf.length}`);
    this.gate('KVM_SET_SREGS');
    ioctlBuf(this.fd, IOCTL.KVM_SET_SREGS, buf, 'KVM_SET_SREGS');
  }

  getSregs(): Sregs {
    this.gate('KVM_GET_SREGS');
    ioctlBuf(this.fd, IOCTL.KVM_GET_SREGS, this.sregsBuf, 'KVM_GET_SREGS');
    return decodeSregs(this.sregsView);
  }

  /** Read-modify-write: segments and tables left out, CR8, the APIC base and the interrupt bitmap are kept. */
  setSregs(sregs: SregsInput): void {
    argSregsInput('KVM_SET_SREGS', sregs);
    this.stateWrites++;
    this.gate('KVM_SET_SREGS');
    ioctlBuf(this.fd, IOCTL.KVM_GET_SREGS, this.sregsBuf, 'KVM_SET_SREGS (reading the current state)');
    encodeSregsInput(this.sregsView, sregs);
    ioctlBuf(this.fd, IOCTL.KVM_SET_SREGS, this.sregsBuf, 'KVM_SET_SREGS');
  }

  setCpuid(entries: readonly CpuidEntry[]): void {
    this.stateWrites++;
    this.gate('KVM_SET_CPUID2');
    ioctlBuf(this.fd, IOCTL.KVM_SET_CPUID2, encodeCpuid(entries), 'KVM_SET_CPUID2');
  }

  getCpuid(): CpuidEntry[] {
    this.gate('KVM_GET_CPUID2');
    return getCpuidList(this.fd, IOCTL.KVM_GET_CPUID2, 'KVM_GET_CPUID2');
  }

  getMsr(index: number): bigint {
    checkU32('index', index, 'KVM_GET_MSRS');
    this.gate('KVM_GET_MSRS');
    const buf = msrBuf(index, 0n);
    const n = ioctlBuf(this.fd, IOCTL.KVM_GET_MSRS, buf, 'KVM_GET_MSRS');
    // The ioctl returns how many MSRs it processed: 0 means the MSR could not be read.
    if (n !== 1)
      throw new KvmError(
        'EINVAL',
        'KVM_GET_MSRS',
        `MSR 0x${index.toString(16)} could not be read (KVM_GET_MSRS processed ${n} of 1)`,
        { index },
      );
    return new DataView(buf.buffer).getBigUint64(16, true);
  }

  setMsr(index: number, value: bigint): void {
    this.stateWrites++;
    checkU32('index', index, 'KVM_SET_MSRS');
    if (typeof value !== 'bigint')
      throw new TypeError(`KVM_SET_MSRS: value must be a bigint, got ${typeof value}`);
    this.gate('KVM_SET_MSRS');
    const n = ioctlBuf(this.fd, IOCTL.KVM_SET_MSRS, msrBuf(index, BigInt.asUintN(64, value)), 'KVM_SET_MSRS');
    if (n !== 1)
      throw new KvmError(
        'EINVAL',
        'KVM_SET_MSRS',
        `MSR 0x${index.toString(16)} could not be written with 0x${value.toString(16)} (KVM_SET_MSRS processed ${n} of 1)`,
        { index, value },
      );
  }

  /**
   * KVM_GET_XSAVE: the 4096-byte `struct kvm_xsave` in the standard (non-compacted) format. The
   * kernel copies at most those 4096 bytes (arch/x86/kvm/x86.c: kvm_vcpu_ioctl_x86_get_xsave() →
   * kvm_vcpu_ioctl_x86_get_xsave2() with sizeof(region)); a vCPU whose XSAVE state is larger
   * (AMX tiles: KVM_CAP_XSAVE2 above 4096) needs KVM_GET_XSAVE2, which the contract does not carry.
   */
  getXsave(): Uint8Array {
    this.gate('KVM_GET_XSAVE');
    const buf = new Uint8Array(SIZE.kvm_xsave);
    ioctlBuf(this.fd, IOCTL.KVM_GET_XSAVE, buf, 'KVM_GET_XSAVE');
    return buf;
  }

  /** KVM_SET_XSAVE from a 4096-byte area (the kernel checks XSTATE_BV, XCOMP_BV and MXCSR: EINVAL). */
  setXsave(area: Uint8Array): void {
    this.stateWrites++;
    const op = 'KVM_SET_XSAVE';
    if (!(area instanceof Uint8Array) || area.length !== XSAVE_LAYOUT.size)
      throw new TypeError(`${op}: area must be a ${XSAVE_LAYOUT.size}-byte Uint8Array (struct kvm_xsave)`);
    this.gate(op);
    // A copy: the kernel reads the struct, and the caller's view may be a subarray at any offset.
    ioctlBuf(this.fd, IOCTL.KVM_SET_XSAVE, area.slice(), op, 'the XSAVE area was refused');
  }

  /** KVM_GET_XCRS: `struct kvm_xcrs` decoded (the kernel reports XCR0 alone). */
  getXcrs(): XcrEntry[] {
    this.gate('KVM_GET_XCRS');
    const buf = new Uint8Array(SIZE.kvm_xcrs);
    ioctlBuf(this.fd, IOCTL.KVM_GET_XCRS, buf, 'KVM_GET_XCRS');
    const v = new DataView(buf.buffer);
    const n = Math.min(v.getUint32(XCRS.nr_xcrs, true), MAX_XCRS);
    const out: XcrEntry[] = [];
    for (let i = 0; i < n; i++) {
      const at = XCRS.xcrs + i * SIZE.kvm_xcr;
      out.push({
        xcr: v.getUint32(at + XCRS.xcr_xcr, true),
        value: v.getBigUint64(at + XCRS.xcr_value, true),
      });
    }
    return out;
  }

  /**
   * KVM_SET_XCRS: `nr_xcrs` is the array's length, so more than KVM_MAX_XCRS (16) entries get the
   * kernel's own EINVAL (arch/x86/kvm/x86.c: kvm_vcpu_ioctl_x86_set_xcrs()); each XCR0 entry goes
   * through __kvm_set_xcr() (EINVAL for x87 clear, AVX without SSE, unsupported bits).
   */
  setXcrs(xcrs: readonly XcrEntry[]): void {
    this.stateWrites++;
    const op = 'KVM_SET_XCRS';
    if (!Array.isArray(xcrs)) throw new TypeError(`${op}: xcrs must be an array`);
    xcrs.forEach((x, i) => {
      if (typeof x !== 'object' || x === null) throw new TypeError(`${op}: xcrs[${i}] must be an object`);
      checkU32(`xcrs[${i}].xcr`, x.xcr, op);
      if (typeof x.value !== 'bigint' || x.value < 0n || x.value >= 1n << 64n)
        throw new TypeError(`${op}: xcrs[${i}].value ${String(x.value)} must be a u64 bigint`);
    });
    this.gate(op);
    const buf = new Uint8Array(SIZE.kvm_xcrs);
    const v = new DataView(buf.buffer);
    v.setUint32(XCRS.nr_xcrs, xcrs.length, true);
    xcrs.slice(0, MAX_XCRS).forEach((x, i) => {
      const at = XCRS.xcrs + i * SIZE.kvm_xcr;
      v.setUint32(at + XCRS.xcr_xcr, x.xcr, true);
      v.setBigUint64(at + XCRS.xcr_value, x.value, true);
    });
    ioctlBuf(
      this.fd,
      IOCTL.KVM_SET_XCRS,
      buf,
      op,
      xcrs.map((x) => `XCR${x.xcr} = 0x${x.value.toString(16)}`).join(', ') || 'no XCRs',
    );
  }

  getStatsFd(): number {
    const op = 'KVM_GET_STATS_FD';
    this.gate(op);
    // virt/kvm/kvm_main.c: kvm_vcpu_ioctl_get_stats_fd(): "kvm-vcpu-stats", holding a VM reference.
    const fd = ioctlInt(this.fd, IOCTL.KVM_GET_STATS_FD, 0, op, `on vCPU ${this.id}`);
    this.vm.kvm.adoptFd(fd, 'stats');
    return fd;
  }

  memEncryptOp(cmd: TdxCommand | undefined): void {
    this.gate('KVM_MEMORY_ENCRYPT_OP');
    encryptOpVcpu(this.fd, cmd);
  }

  setEntry(program: GuestProgram): void {
    if (typeof program !== 'function') throw new TypeError('setEntry: program must be a function');
    this.entry = program;
    entryHook()?.setEntry?.(this, program);
  }

  /** close() of the vCPU fd (through Kvm.closeFd); kvm_run is swapped for anonymous memory (unmapped at GC). */
  releaseFd(): void {
    this.gate('close');
    this.fdOpen = false;
    detachFileMapping(this.runBytes.buffer as ArrayBuffer);
    sysClose(this.fd);
    this.vm.dropSlotsIfDead();
  }
}

/** One synchronous KVM_RUN of `vcpu` under the watchdog; returns kvm_run.exit_reason. */
export function runOnce(vcpu: LinuxVcpuCore, opts?: LinuxRunOptions): number {
  vcpu.gate('KVM_RUN');
  const v = vcpu.runView;
  completeExit(vcpu.takePending(), v, vcpu.runBytes);
  const immediate = opts?.immediateExit === true;
  const timeoutMs = opts?.timeoutMs ?? vcpu.vm.runTimeoutMs;
  // One watchdog period for the whole run, retries after stray signals included (a thread that
  // keeps receiving signals must still time out).
  const seq = beginRun(vcpu.runAddr, timeoutMs);
  let r: number;
  let err: ReturnType<typeof lastErrno> | undefined;
  for (;;) {
    v.setUint8(RUN.immediate_exit, immediate || processExiting() ? 1 : 0);
    r = ioctlIntRaw(vcpu.fd, IOCTL.KVM_RUN, 0);
    err = r < 0 ? lastErrno() : undefined;
    // A stray signal (or a late kick meant for an earlier run) while the guest ran: run on — unless
    // the process is exiting, whose kick must end the run.
    if (err?.code === 'EINTR' && !immediate && !wasKicked(seq) && !processExiting()) continue;
    break;
  }
  const fired = endRun(seq);
  v.setUint8(RUN.immediate_exit, 0);
  if (!err) return v.getUint32(RUN.exit_reason, true);
  if (err.code === 'EINTR') {
    if (fired) {
      vcpu.setExitForHost({ reason: 'intr', budgetExhausted: true });
      throw new KvmError(
        'EINTR',
        'KVM_RUN',
        `watchdog: vCPU ${vcpu.id} of VM fd ${vcpu.vm.fd} was still in KVM_RUN after its ${timeoutMs} ms deadline (a guest that never exits: an endless loop, or VMCALL on a host that does not complete it); the run was interrupted`,
        { vcpu: vcpu.id, vmFd: vcpu.vm.fd, timeoutMs, watchdog: true },
      );
    }
    if (!immediate && processExiting())
      throw new KvmError(
        'EINTR',
        'KVM_RUN',
        `vCPU ${vcpu.id}: the process is exiting; the run was interrupted`,
        {
          vcpu: vcpu.id,
        },
      );
    throw new KvmError(
      'EINTR',
      'KVM_RUN',
      'immediate_exit was set: KVM_RUN returned before entering the guest',
      {
        vcpu: vcpu.id,
      },
    );
  }
  if (err.code === 'EFAULT' && v.getUint32(RUN.exit_reason, true) === EXIT_REASON.MEMORY_FAULT)
    return EXIT_REASON.MEMORY_FAULT;
  throw new KvmError(err.code, 'KVM_RUN', `KVM_RUN on vCPU ${vcpu.id} failed`, {
    vcpu: vcpu.id,
    errno: err.errno,
  });
}

function checkU32(name: string, v: number, op: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff)
    throw new TypeError(`${op}: ${name} ${v} must be a u32`);
}

function msrBuf(index: number, value: bigint): Uint8Array {
  // struct kvm_msrs { __u32 nmsrs; __u32 pad; struct kvm_msr_entry entries[]; }
  // struct kvm_msr_entry { __u32 index; __u32 reserved; __u64 data; }
  const buf = new Uint8Array(SIZE.kvm_msrs + SIZE.kvm_msr_entry);
  const v = new DataView(buf.buffer);
  v.setUint32(0, 1, true);
  v.setUint32(8, index, true);
  v.setBigUint64(16, value, true);
  return buf;
}

/** `struct kvm_cpuid2` with `entries` (each `struct kvm_cpuid_entry2`, 40 bytes). */
export function encodeCpuid(entries: readonly CpuidEntry[]): Uint8Array {
  const buf = new Uint8Array(SIZE.kvm_cpuid2 + entries.length * SIZE.kvm_cpuid_entry2);
  const v = new DataView(buf.buffer);
  v.setUint32(0, entries.length, true);
  entries.forEach((e, i) => {
    const o = SIZE.kvm_cpuid2 + i * SIZE.kvm_cpuid_entry2;
    v.setUint32(o, e.function >>> 0, true);
    v.setUint32(o + 4, e.index >>> 0, true);
    v.setUint32(o + 8, e.flags >>> 0, true);
    v.setUint32(o + 12, e.eax >>> 0, true);
    v.setUint32(o + 16, e.ebx >>> 0, true);
    v.setUint32(o + 20, e.ecx >>> 0, true);
    v.setUint32(o + 24, e.edx >>> 0, true);
  });
  return buf;
}

/** Reads a `struct kvm_cpuid2` list with ioctl `req`, growing the buffer on E2BIG. */
export function getCpuidList(fd: number, req: number, op: string): CpuidEntry[] {
  for (let nent = 256; ; nent *= 2) {
    const buf = new Uint8Array(SIZE.kvm_cpuid2 + nent * SIZE.kvm_cpuid_entry2);
    const v = new DataView(buf.buffer);
    v.setUint32(0, nent, true);
    if (ioctlBufRaw(fd, req, buf) < 0) {
      const e = lastErrno();
      if (e.code === 'E2BIG' && nent < 1 << 16) continue;
      throw new KvmError(e.code, op, `${op} failed`, { fd, nent });
    }
    const n = v.getUint32(0, true);
    const out: CpuidEntry[] = [];
    for (let i = 0; i < n; i++) {
      const o = SIZE.kvm_cpuid2 + i * SIZE.kvm_cpuid_entry2;
      out.push({
        function: v.getUint32(o, true),
        index: v.getUint32(o + 4, true),
        flags: v.getUint32(o + 8, true),
        eax: v.getUint32(o + 12, true),
        ebx: v.getUint32(o + 16, true),
        ecx: v.getUint32(o + 20, true),
        edx: v.getUint32(o + 24, true),
      });
    }
    return out;
  }
}

/** Address of a typed array (re-exported for the agent's mailbox pointers). */
export { addressOf };
