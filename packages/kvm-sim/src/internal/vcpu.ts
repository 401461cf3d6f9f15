// vCPU scope: register state, CPUID, MSRs and KVM_RUN, which drives the vCPU's guest program.
//
// The run loop: a guest program is an async function. Guest operations that exit (out, in, mmio,
// hypercall, hlt, vmgexit, tdcall) hand an Exit to the pending run() and await the next run();
// memory accessors are synchronous. run() resolves when the guest reaches its next exit, so
// several vCPUs interleave only at exits, in microtask order (deterministic). A guest that awaits
// anything else (a timer, host I/O, a host promise) is caught by a macrotask check (setImmediate
// runs only after every microtask drained: a guest that has not exited by then is waiting on
// something that is not a guest exit) and the run ends with internal-error.

import {
  CPUID_FLAG_SIGNIFICANT_INDEX,
  CR,
  type CpuidEntry,
  type Exit,
  GuestException,
  type GuestProgram,
  INTERNAL_ERROR,
  type InternalErrorExit,
  KvmError,
  REG_NAMES,
  type Regs,
  type RunOptions,
  type Sregs,
  type TdxCommand,
  type Vcpu,
  zeroRegs,
} from '@kvmtest/kvm';
import type { ArchVcpu } from './arch/ops.js';
import { checkInt, checkU64 } from './kvm.js';
import { GuestUnwind, SimGuest } from './guest.js';
import type { SimVm } from './vm.js';

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

/** Architectural reset CR0: CD | NW | ET. */
const CR0_RESET = 0x60000010n;

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
  const stuck = listed.filter((v) => v.flightSeq !== 0).sort((a, b) => a.flightSeq - b.flightSeq);
  for (const v of listed) {
    v.flightSeq = 0;
    v.listed = false;
  }
  listed.length = 0;
  for (const v of stuck) v.stuck();
}

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

type RunState = 'idle' | 'running' | 'at-exit' | 'ended';

/** A simulated vCPU (the vCPU fd, `struct kvm_vcpu` and its `kvm_run`). */
export class SimVcpu implements Vcpu, ArchVcpu {
  readonly fd: number;
  arch: unknown = undefined;
  fdOpen = true;
  readonly regs: Regs = zeroRegs();
  readonly sregs: Sregs = { cr0: CR0_RESET, cr2: 0n, cr3: 0n, cr4: 0n, efer: 0n };
  cpuid: CpuidEntry[];
  private readonly msrs = new Map<number, bigint>();
  /** KVM_RUN was entered at least once (kvm_vcpu_has_run). */
  hasRun = false;
  /** Watchdog bookkeeping: the start sequence of the run in flight (0: none), and whether it is listed. */
  flightSeq = 0;
  listed = false;
  exit: Exit | undefined = undefined;
  program: GuestProgram | undefined = undefined;
  readonly guest: SimGuest;

  state: RunState = 'idle';
  /** The exit later runs replay once the program can no longer run. */
  private endExit: Exit | undefined;
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
    readonly vm: SimVm,
    readonly id: number,
  ) {
    this.cpuid = vm.kvm.cpuid.map((e) => ({ ...e }));
    this.msrs.set(MSR.TSC, 0n);
    // xAPIC enabled at the default base; BSP flag for vCPU 0.
    this.msrs.set(MSR.APIC_BASE, 0xfee00000n | 0x800n | (id === 0 ? 0x100n : 0n));
    for (const m of [MSR.SYSENTER_CS, MSR.SYSENTER_ESP, MSR.SYSENTER_EIP]) this.msrs.set(m, 0n);
    this.msrs.set(MSR.MISC_ENABLE, 1n);
    this.msrs.set(MSR.PAT, 0x0007040600070406n);
    for (const m of [
      MSR.STAR,
      MSR.LSTAR,
      MSR.CSTAR,
      MSR.SFMASK,
      MSR.FS_BASE,
      MSR.GS_BASE,
      MSR.KERNEL_GS_BASE,
    ])
      this.msrs.set(m, 0n);
    this.msrs.set(MSR.TSC_AUX, 0n);
    this.guest = new SimGuest(this);
    this.fd = vm.kvm.allocFd({ kind: 'vcpu', vcpu: this });
  }

  /** The fd check (EBADF) and the dead-VM gate (EIO, spec §2). */
  gate(op: string): void {
    if (!this.fdOpen) throw new KvmError('EBADF', op, `vCPU descriptor ${this.fd} is closed`);
    if (this.vm.dead) throw new KvmError('EIO', op, 'the VM is dead (kvm->vm_dead), spec §2');
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
    return { ...this.sregs };
  }

  setSregs(sregs: Sregs): void {
    const op = 'KVM_SET_SREGS';
    if (typeof sregs !== 'object' || sregs === null) throw new TypeError(`${op}: sregs must be an object`);
    for (const n of ['cr0', 'cr2', 'cr3', 'cr4', 'efer'] as const) checkU64(`sregs.${n}`, sregs[n], op);
    this.protectedGate(op);
    // x86.c kvm_is_valid_sregs: long mode with paging needs PAE and LMA; LMA without both is invalid.
    const { cr0, cr3, cr4, efer } = sregs;
    if ((efer & ~EFER_VALID) !== 0n)
      throw new KvmError('EINVAL', op, `EFER 0x${efer.toString(16)} has reserved bits`);
    if ((efer & CR.EFER_LME) !== 0n && (cr0 & CR.CR0_PG) !== 0n) {
      if ((cr4 & CR.CR4_PAE) === 0n) throw new KvmError('EINVAL', op, 'long mode with paging needs CR4.PAE');
      if ((efer & CR.EFER_LMA) === 0n)
        throw new KvmError('EINVAL', op, 'long mode with paging needs EFER.LMA');
      if (cr3 >> BigInt(this.vm.kvm.config.maxPhysAddr) !== 0n)
        throw new KvmError('EINVAL', op, `CR3 0x${cr3.toString(16)} has bits above MAXPHYADDR`);
    } else if ((efer & CR.EFER_LMA) !== 0n)
      throw new KvmError('EINVAL', op, 'EFER.LMA needs EFER.LME and CR0.PG');
    Object.assign(this.sregs, { cr0, cr2: sregs.cr2, cr3, cr4, efer });
    this.guest.flush();
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
  }

  getCpuid(): CpuidEntry[] {
    this.gate('KVM_GET_CPUID2');
    return this.cpuid.map((e) => ({ ...e }));
  }

  /** The MSR file as the CPU sees it; undefined for an MSR the simulator does not model. */
  msr(index: number): bigint | undefined {
    if (index === MSR.EFER) return this.sregs.efer;
    return this.msrs.get(index);
  }

  /** Writes the MSR file; false when the MSR is not modelled or the value is invalid for it. */
  writeMsr(index: number, value: bigint): boolean {
    if (index === MSR.EFER) {
      if ((value & ~EFER_VALID) !== 0n) return false;
      this.sregs.efer = value;
      this.guest.flush();
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

  memEncryptOp(cmd: TdxCommand | undefined): void {
    const op = 'KVM_MEMORY_ENCRYPT_OP';
    if (cmd !== undefined && (typeof cmd !== 'object' || cmd === null))
      throw new TypeError(`${op}: cmd must be a command object or undefined (NULL)`);
    this.gate(op);
    const f = this.vm.ops.vcpuMemEncryptOp;
    // spec §2: SVM has no vCPU mem_enc op -> ENOTTY.
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
    if (this.completion !== undefined && this.exit !== undefined) {
      this.resumeValue = this.completion(this.exit);
      this.completion = undefined;
    }
    if (opts?.immediateExit) {
      const e: Exit = { reason: 'intr' };
      this.exit = e;
      return Promise.resolve(e);
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
    this.state = 'ended';
    this.endExit = later;
    this.resumeFn = undefined;
    this.completion = undefined;
    this.finishRun(exit);
  }

  private finishRun(exit: Exit): void {
    this.flightSeq = 0;
    this.current = undefined;
    this.exit = exit;
    const res = this.runResolve;
    const rej = this.runReject;
    this.runResolve = undefined;
    this.runReject = undefined;
    if (this.vm.dead && rej !== undefined) {
      // spec §2: a vCPU in KVM_RUN that sees KVM_REQ_VM_DEAD returns EIO.
      rej(new KvmError('EIO', 'KVM_RUN', 'the VM died while the vCPU was running'));
      return;
    }
    res?.(exit);
  }

  /**
   * A guest operation exits: `exit` goes to the pending run; the returned promise resolves with
   * what `complete` derives from the exit the host edited, when the next run starts.
   */
  exitToHost(exit: Exit, complete?: (e: Exit) => unknown): Promise<unknown> {
    if (this.state !== 'running') return Promise.reject(this.guest.outsideRun());
    this.state = 'at-exit';
    this.completion = complete;
    const p = new Promise<unknown>(this.captureResume);
    this.finishRun(exit);
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
    this.flightSeq = 0;
    this.program = undefined;
    this.resumeFn = undefined;
    this.completion = undefined;
    this.guest.poison(`vCPU ${this.id} was destroyed`);
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
