// The simulated guest CPU, part 1: its state, run bookkeeping and exceptions (see guest.ts for the
// whole picture).

import {
  type ExceptionFrame,
  type ExceptionHandler,
  type Exit,
  GuestException,
  INTERNAL_ERROR,
  type Regs,
  VECTOR,
} from '@kvmtest/kvm';
import type { PagingParams } from '@kvmtest/guest-memory';
import type { ArchCpu, ArchException, InterceptEvent } from './arch/ops.js';
import type { VcpuCore } from './core.js';
import { drawQuantum, simYield } from './sched.js';

import {
  U64,
  TWO53,
  GuestUnwind,
  SKIP,
  RETRY,
  type TlbEntry,
  hex,
  budgetDetail,
  describeValue,
} from './guest-util.js';

/**
 * Runs after which a guest that keeps exiting yields anyway (see enterRun). A yield is a trip
 * through the event loop, which costs far more than an exit (tens of µs after a long stretch of
 * microtasks): at 1024 it was ~40 ns of a ~330 ns exit round trip; 8192 runs are still only a few
 * milliseconds of exits between two chances for a timer to fire.
 */
const RUNS_PER_YIELD = 8192;

/**
 * The state of one simulated vCPU's guest CPU, its run bookkeeping (operation counts, budget,
 * yields, poisoning) and exception delivery. The memory, control-state, exit and
 * confidential-computing layers extend it (guest-mem.ts, guest-control.ts, guest-exits.ts, guest.ts).
 */
export abstract class GuestCpu implements ArchCpu {
  /** Guest operations executed in the current run. */
  ops = 0;
  budget: number;
  /** Runs entered since the guest last yielded. */
  protected runs = 0;
  /** The current quantum of operations (drawn by the scheduler at each yield). */
  protected quantum: number;
  /** `ops` at which the next async operation yields (0: yield at the next one — a kick). */
  yieldAt: number;
  /** The async operation in progress or last started (for timeout reports). */
  lastOp = '';
  /** Translation throws AccessExit instead of ending the program (inside readAsync / writeAsync). */
  protected exitMode = false;
  protected handler: ExceptionHandler | undefined;
  protected readonly tlb = new Map<number, TlbEntry>();
  /** Page offset of the GVA the last `entry` call split (saves a second bigint operation). */
  protected off = 0;
  protected last: TlbEntry | undefined;
  /**
   * The entry used before `last` (another page): with `last`, a two-entry front for the TLB map, so a
   * guest alternating between two pages (its globals and a shared buffer) never looks up the map.
   * Both are always entries of `tlb` (flush and the capacity clear drop them; a refill of the same
   * page replaces `last`), so the page-table marking over `tlb` reaches them too.
   */
  protected prev: TlbEntry | undefined;
  protected gen = -1;
  protected readonly ptPages = new Set<bigint>();
  protected walked: bigint[] = [];
  protected poisoned: GuestUnwind | undefined;
  /** Why the guest was poisoned, until `poisoned` is made from it (see poison). */
  protected poisonWhy: string | undefined;
  protected params4: PagingParams;
  protected params5: PagingParams;
  protected readonly reader = { readU64: (gpa: bigint) => this.readPte(gpa) };

  protected vm: VcpuCore['vm'];
  /** True while PVALIDATE translates its operand (MemAccess.pvalidate). */
  protected pvalidating = false;

  constructor(public vcpu: VcpuCore) {
    this.vm = vcpu.vm;
    this.budget = vcpu.vm.kvm.config.runBudget;
    this.quantum = drawQuantum(vcpu.vm.kvm.config.yieldQuantum);
    this.yieldAt = this.quantum;
    const physBits = vcpu.vm.kvm.config.maxPhysAddr;
    const tag = vcpu.vm.ops.tagBit?.(vcpu.vm);
    this.params4 = tag === undefined ? { levels: 4, physBits } : { levels: 4, physBits, tagBit: tag };
    this.params5 = tag === undefined ? { levels: 5, physBits } : { levels: 5, physBits, tagBit: tag };
  }

  /**
   * Moves this guest (and so the program holding it) to another vCPU: an encryption-context move
   * hands the guest's point of execution to the destination (see SimVcpu.adoptGuest). Every cached
   * translation is dropped; the destination VM's memslots and keys answer from now on.
   */
  rebind(vcpu: VcpuCore): void {
    this.vcpu = vcpu;
    this.vm = vcpu.vm;
    const physBits = vcpu.vm.kvm.config.maxPhysAddr;
    const tag = vcpu.vm.ops.tagBit?.(vcpu.vm);
    this.params4 = tag === undefined ? { levels: 4, physBits } : { levels: 4, physBits, tagBit: tag };
    this.params5 = tag === undefined ? { levels: 5, physBits } : { levels: 5, physBits, tagBit: tag };
    this.tlb.clear();
    this.last = undefined;
    this.prev = undefined;
    this.ptPages.clear();
    this.gen = -1;
  }

  get vcpuId(): number {
    return this.vcpu.id;
  }

  get regs(): Regs {
    return this.vcpu.regs;
  }

  // ---- run bookkeeping ----------------------------------------------------------------------

  enterRun(): void {
    // VM entry keeps the guest's TLB, as hardware with tagged TLBs (ASID/VPID) does: translations
    // are dropped by KVM_SET_SREGS, by the guest's CR3 load, EFER write or CR0/CR4 paging-bit
    // change, by memslot or attribute changes (memGeneration) and by guest writes to pages it
    // walked as page tables.
    // Like the real thing, a host that rewrites a live PTE behind the guest's back must reload CR3.
    // A guest yields after a quantum of operations inside one run, or at the first async operation
    // of every RUNS_PER_YIELD-th run since its last yield: a run that ended at an exit gave the host
    // its turn, so a guest that exits often yields rarely — just enough for timers (case timeouts)
    // to fire when a guest and its host exchange exits forever.
    this.ops = 0;
    this.yieldAt = ++this.runs >= RUNS_PER_YIELD ? 0 : this.quantum;
  }

  flush(): void {
    if (this.last !== undefined || this.tlb.size > 0) {
      this.tlb.clear();
      this.last = undefined;
      this.prev = undefined;
      this.ptPages.clear();
    }
    this.gen = this.vm.memGeneration;
  }

  poison(u: GuestUnwind | string): void {
    // A string is made into the GuestUnwind when a guest operation first needs it: a destroyed VM's
    // vCPUs mostly never act again, and an Error (its stack trace) costs more than the rest of close.
    if (typeof u === 'string') {
      this.poisoned = undefined;
      this.poisonWhy = u;
    } else this.poisoned = u;
  }

  /** The error a guest operation throws when its vCPU is not in a run. */
  outsideRun(): GuestUnwind {
    if (this.poisoned === undefined && this.poisonWhy !== undefined)
      this.poisoned = new GuestUnwind(this.poisonWhy);
    return this.poisoned ?? new GuestUnwind(`vCPU ${this.vcpu.id}'s guest acted outside KVM_RUN`);
  }

  /** Splits `gva` into its page number (returned) and page offset (`this.off`), checking it is a u64. */
  protected split(gva: bigint, op: string): number {
    if (typeof gva !== 'bigint') throw new TypeError(`${op}: gva must be a bigint, got ${typeof gva}`);
    const n = Number(gva);
    if (n >= 0 && n < TWO53) {
      const vpn = Math.floor(n / 4096);
      this.off = n - vpn * 4096;
      return vpn;
    }
    if (gva < 0n || gva > U64) throw new RangeError(`${op}: gva ${gva} is not a u64`);
    this.off = Number(gva & 0xfffn);
    return Number(gva >> 12n);
  }

  /** Counts one guest operation; a sync operation past the budget unwinds the program. */
  protected tick(op: string): void {
    if (++this.ops > this.budget || this.vcpu.state !== 'running') this.tickSlow(op);
  }

  protected tickSlow(op: string): void {
    if (this.vcpu.state !== 'running') throw this.outsideRun();
    this.unwind({ reason: 'intr', budgetExhausted: true }, budgetDetail(this, op));
  }

  /**
   * Counts one async guest operation `op`: true when the caller must first `await this.budgetPause()`
   * — the guest's quantum is over (it yields to the event loop), it was kicked, or the budget is
   * spent (the run ends with `intr`; the next run continues).
   */
  protected tickAsync(op: string): boolean {
    if (this.vcpu.state !== 'running') this.notRunning(op);
    this.lastOp = op;
    return ++this.ops > this.budget || this.ops >= this.yieldAt;
  }

  /** An async operation while the vCPU is not in a run: a second exit in flight, or a guest outside KVM_RUN. */
  protected notRunning(op: string): never {
    if (this.vcpu.state === 'at-exit') {
      const detail =
        `guest program of vCPU ${this.vcpu.id} started ${op} while ${this.lastOp} was still waiting for the host ` +
        '(two exits in flight from one vCPU): a vCPU executes one instruction at a time, so await each guest ' +
        'operation before starting the next (no Promise.all over operations of one vCPU)';
      const u = new GuestUnwind(detail);
      this.poisoned = u;
      this.vcpu.failAtExit(detail);
      throw u;
    }
    throw this.outsideRun();
  }

  /** The slow path of tickAsync: yield to the scheduler, then a kick's EINTR, then the budget's `intr`. */
  protected async budgetPause(): Promise<void> {
    if (this.ops >= this.yieldAt) {
      const v = this.vcpu;
      v.yielding = true;
      try {
        await simYield();
      } finally {
        v.yielding = false;
      }
      this.runs = 0;
      this.quantum = drawQuantum(this.vm.kvm.config.yieldQuantum);
      this.yieldAt = this.ops + this.quantum;
      if (this.poisoned !== undefined || this.poisonWhy !== undefined || this.vcpu.state !== 'running')
        throw this.outsideRun();
    }
    if (this.vcpu.kicked) {
      this.vcpu.kicked = false;
      // A signal while in the guest: KVM_RUN returns -EINTR with exit_reason KVM_EXIT_INTR
      // (arch/x86/kvm/x86.c: vcpu_run() -> kvm_vcpu_exit_request() / signal_pending()).
      await this.vcpu.exitToHost({ reason: 'intr' }, undefined, 'EINTR');
    }
    if (this.ops > this.budget) await this.vcpu.exitToHost({ reason: 'intr', budgetExhausted: true });
  }

  /** Ends the program now with `exit`; later runs say why it cannot resume. */
  protected unwind(exit: Exit, why: string): never {
    const u = new GuestUnwind(why);
    this.poisoned = u;
    this.vcpu.end(exit, {
      reason: 'internal-error',
      suberror: INTERNAL_ERROR.GUEST_CRASH,
      detail: `the guest program of vCPU ${this.vcpu.id} cannot resume: ${why}`,
    });
    throw u;
  }

  /** Ends the program with an internal-error naming a guest mistake. */
  protected crash(detail: string): never {
    const exit: Exit = { reason: 'internal-error', suberror: INTERNAL_ERROR.GUEST_CRASH, detail };
    const u = new GuestUnwind(detail);
    this.poisoned = u;
    this.vcpu.end(exit, exit);
    throw u;
  }

  // ---- exceptions ---------------------------------------------------------------------------

  setExceptionHandler(handler: ExceptionHandler | undefined): void {
    if (handler !== undefined && typeof handler !== 'function')
      throw new TypeError('setExceptionHandler: handler must be a function or undefined');
    this.handler = handler;
  }

  /**
   * Delivers an exception to the guest's handler; throws GuestException when the handler does not
   * resolve it. With no handler (no exception entry: an empty IDT) the CPU cannot deliver it: a
   * triple fault, which ends the run with KVM_EXIT_SHUTDOWN on every VM type (svm.c:
   * shutdown_interception(), vmx.c: handle_triple_fault(), tdx.c: tdx_handle_triple_fault()).
   */
  protected deliver(frame: ExceptionFrame): 'retry' | 'skip' {
    if (frame.vector === VECTOR.PF && frame.cr2 !== undefined) this.vcpu.sregs.cr2 = frame.cr2;
    const h = this.handler;
    if (h === undefined) {
      const detail = `triple fault: ${new GuestException(frame).message} with no exception entry (setExceptionHandler)`;
      const exit: Exit = { reason: 'shutdown', detail };
      const u = new GuestUnwind(detail);
      this.poisoned = u;
      this.vcpu.end(exit, exit);
      throw u;
    }
    let r: unknown;
    try {
      r = h(frame);
    } catch (e) {
      if (e instanceof GuestUnwind) throw e;
      throw new GuestException({
        ...frame,
        detail: `${frame.detail}; the exception handler threw ${e instanceof Error ? e.message : String(e)}`,
      });
    }
    if (r !== 'retry' && r !== 'skip')
      throw new GuestException({
        ...frame,
        detail: `${frame.detail}; the handler returned ${describeValue(r)}`,
      });
    return r;
  }

  raise(e: ArchException): never {
    const a = this.deliver({ vector: e.vector, errorCode: e.errorCode, operation: 'arch', detail: e.detail });
    throw a === 'skip' ? SKIP : RETRY;
  }

  /** Runs an async operation with the arch's exceptions resolved by the handler (retry / skip). */
  protected async guarded<T>(skipValue: T, fn: () => Promise<T>): Promise<T> {
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        if (e === SKIP) return skipValue;
        if (e === RETRY) {
          this.tick('retry');
          continue;
        }
        throw e;
      }
    }
  }

  /**
   * Asks the arch whether a protected guest traps on `event` (#VC / #VE); delivers it if so. The
   * frame's operation is `operation`, or `operation(0x<arg>)` / `operation(0x<arg>, 0x<arg2>)` when
   * arguments are given — built only when it traps.
   */
  protected intercepted(
    event: InterceptEvent,
    operation: string,
    arg?: number | bigint,
    arg2?: bigint,
  ): 'skip' | 'retry' | undefined {
    // Small enough to inline into every guest operation; the delivery is out of line.
    const ops = this.vcpu.vm.ops;
    if (ops.intercept === undefined) return undefined;
    const e = ops.intercept(this, event);
    return e === undefined ? undefined : this.deliverIntercept(e, operation, arg, arg2);
  }

  /** Delivers the exception of an intercepted operation (see intercepted). */
  private deliverIntercept(
    e: ArchException,
    operation: string,
    arg: number | bigint | undefined,
    arg2: bigint | undefined,
  ): 'skip' | 'retry' {
    // The name is built only for an exception, not on every intercepted instruction.
    const name =
      arg === undefined
        ? operation
        : arg2 === undefined
          ? `${operation}(${hex(arg)})`
          : `${operation}(${hex(arg)}, ${hex(arg2)})`;
    return this.deliver({ vector: e.vector, errorCode: e.errorCode, operation: name, detail: e.detail });
  }

  /** Page-table reads of the walker (guest-mem.ts). */
  protected abstract readPte(gpa: bigint): bigint;
  // The rest of ArchCpu, implemented by the later layers: the arch hooks get this object as the CPU.
  abstract readPhys(gpa: bigint, length: number, tagged: boolean): Uint8Array;
  abstract writePhys(gpa: bigint, data: Uint8Array, tagged: boolean): void;
  abstract msr(index: number): bigint | undefined;
  abstract setMsr(index: number, value: bigint): void;
  abstract cpuidTable(leaf: number, subleaf: number): { eax: number; ebx: number; ecx: number; edx: number };
  abstract exitToHost<E extends Exit>(exit: E): Promise<E>;
}
