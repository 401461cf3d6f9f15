// The guest CPU: the `Guest` a vCPU's program runs against. Every memory access translates its GVA
// through the guest's own page tables (CR3, CR4.LA57) with guest-memory's `walk` over this CPU's
// physical view, then asks the arch how the GPA is served (shared / private / encrypted / fault).
// A small TLB keeps recent translations; it survives KVM_RUN entry (see enterRun) and is flushed
// by control-register and EFER changes, whenever the VM's memslots or attributes change, and when
// the guest writes a page it walked as a page table.
//
// Synchronous accessors never exit: they cannot suspend the program, so an access that needs the
// host (an MMIO read or write, a memory-fault exit) cannot be resumed from them:
//   * an MMIO access through a sync accessor (no memslot behind the GPA, or a write to a READONLY
//     slot) ends the program with internal-error (GUEST_CRASH) naming `readAsync` / `writeAsync`;
//   * a memory-fault from a sync accessor is returned as the `memory-fault` exit, and the program is
//     unwound: later runs report internal-error saying it cannot resume and naming the async form.
//   * a budget running out inside a sync operation unwinds the same way (`intr`, budgetExhausted,
//     then internal-error on later runs); inside an async operation the run ends with `intr` and
//     the next run continues where it stopped.
// The async accessors (`readAsync`, `writeAsync`, `mmioRead`, `mmioWrite`) take such exits as an
// instruction does: an `mmio` exit completed by the host's data, or a `memory-fault` exit after
// which the access is retried (the kernel re-executes the faulting instruction).
//
// Every async operation is also where a running guest gives the event loop back: after a quantum
// of operations drawn by the scheduler (sched.ts) it waits for a macrotask, so host tasks run
// meanwhile; a kick (SimVcpu.kick) takes effect there, ending the run with EINTR.

import {
  CR,
  type CpuidEntry,
  type ExceptionFrame,
  type ExceptionHandler,
  type Exit,
  findCpuid,
  type Guest,
  GuestException,
  type HypercallExit,
  INTERNAL_ERROR,
  type IoSize,
  KVM_HC,
  MEM_FLAG,
  type ReadableCr,
  type Regs,
  type TdcallRegs,
  VECTOR,
  type WritableCr,
} from '@kvmtest/kvm';
import type { AccessSize } from '@kvmtest/kvm';
import { walk, type PagingParams } from '@kvmtest/guest-memory';
import type { AccessDecision, ArchCpu, ArchException, InterceptEvent, PageCipher } from './arch/ops.js';
import type { Memslot } from './memory.js';
import { drawQuantum, simYield } from './sched.js';
import type { SimVcpu } from './vcpu.js';
import { loadComponents, saveComponents, XSAVE_AREA_BYTES, xcrProblem, xsaveAreaProblem } from './xsave.js';

const U64 = (1n << 64n) - 1n;
/** MSR_EFER. */
const MSR_EFER = 0xc000_0080;
/** CR0 bits software may set (kvm x86.h CR0_RESERVED_BITS is the complement); others are ignored on write. */
const CR0_DEFINED =
  CR.CR0_PE |
  CR.CR0_MP |
  CR.CR0_EM |
  CR.CR0_TS |
  CR.CR0_ET |
  CR.CR0_NE |
  CR.CR0_WP |
  CR.CR0_AM |
  CR.CR0_NW |
  CR.CR0_CD |
  CR.CR0_PG;
/**
 * CR4 bits that exist (VME … SMXE, FSGSBASE, PCIDE, OSXSAVE, KL, SMEP, SMAP, PKE, CET, PKS, LAM_SUP);
 * any other bit is reserved and a write setting it is #GP (kvm_is_valid_cr4 / __cr4_reserved_bits).
 */
const CR4_DEFINED =
  0x7fffn | (1n << 16n) | (1n << 17n) | (1n << 18n) | (1n << 19n) | (0xfn << 20n) | (1n << 24n) | (1n << 28n);
/** Bits of CR0 and CR4 whose change drops cached translations (kvm_post_set_cr0 / kvm_post_set_cr4). */
const CR0_MMU_BITS = CR.CR0_PG | CR.CR0_WP | CR.CR0_PE;
const CR4_MMU_BITS =
  CR.CR4_PAE | CR.CR4_PSE | CR.CR4_PGE | CR.CR4_LA57 | CR.CR4_PCIDE | (1n << 20n) | (1n << 21n);
const TWO53 = 2 ** 53;
const SHARED: AccessDecision = Object.freeze({ kind: 'shared' });
const TLB_CAPACITY = 256;
/** KVM_ENOSYS / KVM_EINVAL / KVM_EOPNOTSUPP (include/uapi/linux/kvm_para.h), returned negated in RAX. */
const KVM_ENOSYS = 1000n;
const KVM_EINVAL = 22n;
const KVM_EOPNOTSUPP = 95n;

/**
 * Unwinds a guest program that can no longer run (budget spent in a sync operation, a sync
 * memory-fault, a stuck or destroyed vCPU). Every later guest operation throws it again.
 */
export class GuestUnwind extends Error {
  override readonly name = 'GuestUnwind';
}

/** Signals from an exception handler that the faulting operation is abandoned / re-executed. */
class SkipSignal {}
class RetrySignal {}
const SKIP = new SkipSignal();
const RETRY = new RetrySignal();

/** Thrown by translation inside an async access: the access needs an exit (MMIO or a memory fault). */
class AccessExit {
  constructor(
    readonly gpa: bigint,
    /** The memory-fault exit, or undefined for MMIO. */
    readonly fault: Exit | undefined,
  ) {}
}

/** A PageCipher that also reads / writes an aligned-or-not u64 inside one page (SEV's SevPageCipher). */
interface U64Cipher extends PageCipher {
  readU64(host: Uint8Array, hostOffset: number, pageOffset: number): bigint;
  writeU64(host: Uint8Array, hostOffset: number, pageOffset: number, value: bigint): void;
}

function u64CipherOf(c: PageCipher | undefined): U64Cipher | undefined {
  return c !== undefined &&
    typeof (c as Partial<U64Cipher>).readU64 === 'function' &&
    typeof (c as Partial<U64Cipher>).writeU64 === 'function'
    ? (c as U64Cipher)
    : undefined;
}

interface TlbEntry {
  vpn: number;
  /** Plain memory: a view over the backing (undefined when a cipher is in the way). */
  view: DataView | undefined;
  bytes: Uint8Array;
  /** Byte offset of the 4 KiB page inside `bytes`. */
  base: number;
  writeOk: boolean;
  gpaPage: bigint;
  ptPage: boolean;
  cipher: PageCipher | undefined;
  /** `cipher` when it has its own u64 accessors (the u64 fast path of an encrypted page). */
  u64: U64Cipher | undefined;
}

/** How one GPA page is served, after the arch's classification. */
type PageAccess =
  | {
      kind: 'ram';
      bytes: Uint8Array;
      base: number;
      cipher: PageCipher | undefined;
      readonlySlot: boolean;
    }
  | { kind: 'mmio'; readonlySlot: boolean }
  | { kind: 'fault'; exit: Exit }
  | { kind: 'exception'; e: ArchException };

const views = new WeakMap<ArrayBufferLike, DataView>();
function viewOf(bytes: Uint8Array): DataView {
  // One DataView per ArrayBuffer; offsets below add the Uint8Array's byteOffset.
  let v = views.get(bytes.buffer);
  if (v === undefined) {
    v = new DataView(bytes.buffer);
    views.set(bytes.buffer, v);
  }
  return v;
}

const hex = (v: bigint | number) => `0x${v.toString(16)}`;

/** The Guest of one simulated vCPU. */
export class SimGuest implements Guest, ArchCpu {
  /** Guest operations executed in the current run. */
  ops = 0;
  budget: number;
  /** Operations of earlier runs (so the yield point counts across exits). */
  private carry = 0;
  /** `ops + carry` at which the next async operation yields (0: yield at the next one — a kick). */
  yieldAt: number;
  /** The async operation in progress or last started (for timeout reports). */
  lastOp = '';
  /** Translation throws AccessExit instead of ending the program (inside readAsync / writeAsync). */
  private exitMode = false;
  private handler: ExceptionHandler | undefined;
  private readonly tlb = new Map<number, TlbEntry>();
  /** Page offset of the GVA the last `entry` call split (saves a second bigint operation). */
  private off = 0;
  private last: TlbEntry | undefined;
  /**
   * The entry used before `last` (another page): with `last`, a two-entry front for the TLB map, so a
   * guest alternating between two pages (its globals and a shared buffer) never looks up the map.
   * Both are always entries of `tlb` (flush and the capacity clear drop them; a refill of the same
   * page replaces `last`), so the page-table marking over `tlb` reaches them too.
   */
  private prev: TlbEntry | undefined;
  private gen = -1;
  private readonly ptPages = new Set<bigint>();
  private walked: bigint[] = [];
  private poisoned: GuestUnwind | undefined;
  /** Why the guest was poisoned, until `poisoned` is made from it (see poison). */
  private poisonWhy: string | undefined;
  private params4: PagingParams;
  private params5: PagingParams;
  private readonly reader = { readU64: (gpa: bigint) => this.readPte(gpa) };

  private vm: SimVcpu['vm'];
  /** True while PVALIDATE translates its operand (MemAccess.pvalidate). */
  private pvalidating = false;

  constructor(public vcpu: SimVcpu) {
    this.vm = vcpu.vm;
    this.budget = vcpu.vm.kvm.config.runBudget;
    this.yieldAt = drawQuantum(vcpu.vm.kvm.config.yieldQuantum);
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
  rebind(vcpu: SimVcpu): void {
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
    this.carry += this.ops;
    this.ops = 0;
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
  private split(gva: bigint, op: string): number {
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
  private tick(op: string): void {
    if (++this.ops > this.budget || this.vcpu.state !== 'running') this.tickSlow(op);
  }

  private tickSlow(op: string): void {
    if (this.vcpu.state !== 'running') throw this.outsideRun();
    this.unwind({ reason: 'intr', budgetExhausted: true }, budgetDetail(this, op));
  }

  /**
   * Counts one async guest operation `op`: true when the caller must first `await this.budgetPause()`
   * — the guest's quantum is over (it yields to the event loop), it was kicked, or the budget is
   * spent (the run ends with `intr`; the next run continues).
   */
  private tickAsync(op: string): boolean {
    if (this.vcpu.state !== 'running') this.notRunning(op);
    this.lastOp = op;
    return ++this.ops > this.budget || this.ops + this.carry >= this.yieldAt;
  }

  /** An async operation while the vCPU is not in a run: a second exit in flight, or a guest outside KVM_RUN. */
  private notRunning(op: string): never {
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
  private async budgetPause(): Promise<void> {
    if (this.ops + this.carry >= this.yieldAt) {
      const v = this.vcpu;
      v.yielding = true;
      try {
        await simYield();
      } finally {
        v.yielding = false;
      }
      this.yieldAt = this.ops + this.carry + drawQuantum(this.vm.kvm.config.yieldQuantum);
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
  private unwind(exit: Exit, why: string): never {
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
  private crash(detail: string): never {
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
  private deliver(frame: ExceptionFrame): 'retry' | 'skip' {
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
  private async guarded<T>(skipValue: T, fn: () => Promise<T>): Promise<T> {
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
  private intercepted(
    event: InterceptEvent,
    operation: string,
    arg?: number | bigint,
    arg2?: bigint,
  ): 'skip' | 'retry' | undefined {
    const f = this.vcpu.vm.ops.intercept;
    if (f === undefined) return undefined;
    const e = f.call(this.vcpu.vm.ops, this, event);
    if (e === undefined) return undefined;
    // The name is built only for an exception, not on every intercepted instruction.
    const name =
      arg === undefined
        ? operation
        : arg2 === undefined
          ? `${operation}(${hex(arg)})`
          : `${operation}(${hex(arg)}, ${hex(arg2)})`;
    return this.deliver({ vector: e.vector, errorCode: e.errorCode, operation: name, detail: e.detail });
  }

  // ---- physical access ----------------------------------------------------------------------

  /** Classifies the page holding `gpa` (the arch decides; the core resolves the backing). */
  private page(gpa: bigint, write: boolean, tagged: boolean, implicit: boolean): PageAccess {
    const vm = this.vcpu.vm;
    const slot = vm.memslotAt(gpa);
    const ops = vm.ops;
    const d =
      ops.classifyAccess === undefined
        ? SHARED
        : ops.classifyAccess(vm, {
            gpa,
            tagged,
            write,
            implicit,
            slot,
            attributes: vm.attributes.empty ? 0n : vm.memoryAttributes(gpa),
            pvalidate: this.pvalidating,
          });
    const gpaPage = gpa & ~0xfffn;
    switch (d.kind) {
      case 'shared':
      case 'encrypted': {
        if (slot === undefined) return { kind: 'mmio', readonlySlot: false };
        const ro = (slot.flags & MEM_FLAG.READONLY) !== 0;
        if (write && ro) return { kind: 'mmio', readonlySlot: true };
        // A slot without host memory (userspace_addr 0): the host side of the fault fails (-EFAULT).
        if (slot.userspace.length === 0)
          return {
            kind: 'fault',
            exit: { reason: 'memory-fault', gpa: gpaPage, size: 4096n, private: false },
          };
        return {
          kind: 'ram',
          bytes: slot.userspace,
          base: Number(gpaPage - slot.gpa),
          cipher: d.kind === 'encrypted' ? d.cipher : undefined,
          readonlySlot: ro,
        };
      }
      case 'private':
        return this.privatePage(slot, gpaPage);
      case 'memory-fault':
        return {
          kind: 'fault',
          exit: { reason: 'memory-fault', gpa: gpaPage, size: 4096n, private: d.private },
        };
      case 'exception':
        return { kind: 'exception', e: d };
    }
  }

  /** kvm_mmu_faultin_pfn_private: no slot, a slot without guest_memfd, or a released gmem -> memory fault. */
  private privatePage(slot: Memslot | undefined, gpaPage: bigint): PageAccess {
    const g = slot?.gmem;
    if (slot === undefined || g === undefined)
      return { kind: 'fault', exit: { reason: 'memory-fault', gpa: gpaPage, size: 4096n, private: true } };
    const index = Number((gpaPage - slot.gpa + slot.gmemOffset) >> 12n);
    return { kind: 'ram', bytes: g.page(index, true)!, base: 0, cipher: undefined, readonlySlot: false };
  }

  /** Page-table reads of the walker (implicit supervisor reads). */
  private readPte(gpa: bigint): bigint {
    this.walked.push(gpa & ~0xfffn);
    const p = this.page(gpa, false, false, true);
    if (p.kind === 'ram') {
      const off = Number(gpa & 0xfffn);
      if (p.cipher === undefined)
        return viewOf(p.bytes).getBigUint64(p.bytes.byteOffset + p.base + off, true);
      const out = new Uint8Array(8);
      p.cipher.decrypt(p.bytes, p.base, off, out, 8);
      return new DataView(out.buffer).getBigUint64(0, true);
    }
    if (p.kind === 'fault') {
      if (this.exitMode) throw new AccessExit(gpa, p.exit);
      this.unwind(p.exit, `a page-table read at GPA ${hex(gpa)} needed a memory-fault exit`);
    }
    if (p.kind === 'mmio')
      this.crash(`the page walk read a page-table entry at GPA ${hex(gpa)}, which no memslot backs`);
    return this.crash(`the page walk read GPA ${hex(gpa)}: ${p.kind === 'exception' ? p.e.detail : ''}`);
  }

  // ---- translation --------------------------------------------------------------------------

  /** The TLB entry for `gva`, filling it on a miss; undefined when the handler skipped the access. */
  private entry(gva: bigint, write: boolean, op: string): TlbEntry | undefined {
    const vpn = this.split(gva, op);
    if (this.gen !== this.vm.memGeneration) this.flush();
    let e = this.last;
    if (e === undefined || e.vpn !== vpn) {
      const p = this.prev;
      if (p !== undefined && p.vpn === vpn) {
        this.prev = e;
        e = p;
      } else {
        e = this.tlb.get(vpn);
        if (e === undefined) return this.fill(gva, vpn, write, op);
        if (this.last !== undefined) this.prev = this.last;
      }
      this.last = e;
    }
    if (write && !e.writeOk) return this.fill(gva, vpn, true, op);
    return e;
  }

  private fill(gva: bigint, vpn: number, write: boolean, op: string): TlbEntry | undefined {
    // An exception handler may access guest memory (testkit's dispatcher reads its handler table),
    // which splits other GVAs: the caller's page offset is restored for the retried access.
    const off = this.off;
    for (;;) {
      const r = this.translate(gva, vpn, write, op);
      if (!('vector' in r)) {
        this.off = off;
        return r;
      }
      if (this.deliver(r) === 'skip') return undefined;
      this.tick(op);
    }
  }

  private translate(gva: bigint, vpn: number, write: boolean, op: string): TlbEntry | ExceptionFrame {
    const s = this.vcpu.sregs;
    const operation = `${op}(${hex(gva)})`;
    let gpa: bigint;
    let writable = true;
    let tagged = false;
    this.walked = [];
    if ((s.cr0 & CR.CR0_PG) === 0n) {
      // Paging off: linear = physical.
      gpa = gva;
    } else {
      if ((s.cr4 & CR.CR4_PAE) === 0n || (s.efer & CR.EFER_LMA) === 0n)
        this.crash(
          `${operation}: only 64-bit (4- and 5-level) paging is modelled; CR4.PAE and EFER.LMA must be set`,
        );
      const params = (s.cr4 & CR.CR4_LA57) !== 0n ? this.params5 : this.params4;
      const tagMask = params.tagBit === undefined ? 0n : 1n << BigInt(params.tagBit);
      const root = s.cr3 & ~0xfffn & ~tagMask & ((1n << BigInt(params.physBits ?? 52)) - 1n);
      const w = walk(this.reader, root, gva, params, write ? { write: true } : undefined);
      if (!w.ok) {
        const f = w.fault;
        if (f.reason === 'non-canonical')
          return { vector: VECTOR.GP, errorCode: 0, operation, detail: `GVA ${hex(gva)} is not canonical` };
        return {
          vector: VECTOR.PF,
          errorCode: f.errorCode,
          cr2: gva,
          operation,
          detail: `${f.reason === 'protection' ? 'write to a read-only page' : f.reason === 'reserved-bit' ? 'reserved bit set in the entry' : 'entry not present'} at level ${f.level}`,
        };
      }
      gpa = w.gpa;
      writable = w.writable;
      tagged = w.tagged;
    }
    const p = this.page(gpa, write, tagged, false);
    switch (p.kind) {
      case 'mmio':
        if (this.exitMode) throw new AccessExit(gpa, undefined);
        return this.crash(
          p.readonlySlot
            ? `${operation} wrote GPA ${hex(gpa)} in a READONLY memslot: that is an MMIO write, and a synchronous accessor never exits; use g.writeAsync (or g.mmioWrite)`
            : `${operation} reached GPA ${hex(gpa)}, which no memslot backs: that is MMIO, and a synchronous accessor never exits; use g.readAsync / g.writeAsync (or g.mmioRead / g.mmioWrite)`,
        );
      case 'fault':
        if (this.exitMode) throw new AccessExit(gpa, p.exit);
        return this.unwind(
          p.exit,
          `${operation} needed a ${describeFault(p.exit)} exit, which a synchronous accessor cannot resume from (it never exits); use g.readAsync / g.writeAsync where an access may fault`,
        );
      case 'exception':
        return { vector: p.e.vector, errorCode: p.e.errorCode, operation, detail: p.e.detail };
      case 'ram':
        break;
    }
    const gpaPage = gpa & ~0xfffn;
    for (const pt of this.walked) {
      if (this.ptPages.has(pt)) continue;
      this.ptPages.add(pt);
      for (const e of this.tlb.values()) if (e.gpaPage === pt) e.ptPage = true;
    }
    if (this.tlb.size >= TLB_CAPACITY) {
      this.tlb.clear();
      this.last = undefined;
      this.prev = undefined;
    }
    const e: TlbEntry = {
      vpn,
      view: p.cipher === undefined ? viewOf(p.bytes) : undefined,
      bytes: p.bytes,
      base: p.bytes.byteOffset + p.base,
      writeOk: writable && !p.readonlySlot,
      gpaPage,
      ptPage: this.ptPages.has(gpaPage),
      cipher: p.cipher,
      u64: u64CipherOf(p.cipher),
    };
    this.tlb.set(vpn, e);
    // `last` moves to `prev` unless it was this page's entry, which `e` replaces (prev is never this page:
    // it and `last` are different pages, and `last` was checked first).
    if (this.last !== undefined && this.last.vpn !== vpn) this.prev = this.last;
    else if (this.prev?.vpn === vpn) this.prev = undefined;
    this.last = e;
    return e;
  }

  // ---- memory accessors ---------------------------------------------------------------------

  readU64(gva: bigint): bigint {
    this.tick('readU64');
    const e = this.entry(gva, false, 'readU64');
    if (e === undefined) return 0n;
    const off = this.off;
    if (off <= 4088) {
      if (e.view !== undefined) return e.view.getBigUint64(e.base + off, true);
      // The same bytes readSlow would decrypt (one page, offset `off`), without the copy.
      if (e.u64 !== undefined) return e.u64.readU64(e.bytes, e.base - e.bytes.byteOffset, off);
    }
    return le(this.readSlow(gva, 8, 'readU64'));
  }

  readU32(gva: bigint): number {
    this.tick('readU32');
    const e = this.entry(gva, false, 'readU32');
    if (e === undefined) return 0;
    const off = this.off;
    if (off <= 4092 && e.view !== undefined) return e.view.getUint32(e.base + off, true);
    return Number(le(this.readSlow(gva, 4, 'readU32')));
  }

  readU16(gva: bigint): number {
    this.tick('readU16');
    const e = this.entry(gva, false, 'readU16');
    if (e === undefined) return 0;
    const off = this.off;
    if (off <= 4094 && e.view !== undefined) return e.view.getUint16(e.base + off, true);
    return Number(le(this.readSlow(gva, 2, 'readU16')));
  }

  readU8(gva: bigint): number {
    this.tick('readU8');
    const e = this.entry(gva, false, 'readU8');
    if (e === undefined) return 0;
    if (e.view !== undefined) return e.view.getUint8(e.base + this.off);
    return this.readSlow(gva, 1, 'readU8')[0]!;
  }

  writeU64(gva: bigint, v: bigint): void {
    if (typeof v !== 'bigint') throw new TypeError(`writeU64: value must be a bigint, got ${typeof v}`);
    this.tick('writeU64');
    const e = this.entry(gva, true, 'writeU64');
    if (e === undefined) return;
    const off = this.off;
    if (off <= 4088 && e.view !== undefined) {
      e.view.setBigUint64(e.base + off, BigInt.asUintN(64, v), true);
      if (e.ptPage) this.flush();
      return;
    }
    if (off <= 4088 && e.u64 !== undefined) {
      // What writeSlow does for one page: encrypt the 8 LE bytes at `off`, flush if it is a page table.
      e.u64.writeU64(e.bytes, e.base - e.bytes.byteOffset, off, BigInt.asUintN(64, v));
      if (e.ptPage) this.flush();
      return;
    }
    this.writeSlow(gva, leBytes(BigInt.asUintN(64, v), 8), 'writeU64');
  }

  writeU32(gva: bigint, v: number): void {
    this.writeNum('writeU32', gva, v, 4);
  }

  writeU16(gva: bigint, v: number): void {
    this.writeNum('writeU16', gva, v, 2);
  }

  writeU8(gva: bigint, v: number): void {
    this.writeNum('writeU8', gva, v, 1);
  }

  private writeNum(op: string, gva: bigint, v: number, size: 1 | 2 | 4): void {
    if (typeof v !== 'number' || !Number.isInteger(v))
      throw new TypeError(`${op}: value must be an integer, got ${describeValue(v)}`);
    this.tick(op);
    const e = this.entry(gva, true, op);
    if (e === undefined) return;
    const off = this.off;
    if (off <= 4096 - size && e.view !== undefined) {
      const at = e.base + off;
      if (size === 4) e.view.setUint32(at, v >>> 0, true);
      else if (size === 2) e.view.setUint16(at, v & 0xffff, true);
      else e.view.setUint8(at, v & 0xff);
      if (e.ptPage) this.flush();
      return;
    }
    this.writeSlow(gva, leBytes(BigInt(v >>> 0) & ((1n << BigInt(size * 8)) - 1n), size), op);
  }

  readBytes(gva: bigint, length: number): Uint8Array {
    if (typeof length !== 'number' || !Number.isInteger(length) || length < 0)
      throw new TypeError(`readBytes: length must be a non-negative integer, got ${describeValue(length)}`);
    // The copy is allocated before the walk: a guest-chosen length is bounded first.
    if (length > GUEST_MAX_READ)
      throw new RangeError(`readBytes: length ${length} is more than ${GUEST_MAX_READ} bytes in one access`);
    this.tick('readBytes');
    return this.readSlow(gva, length, 'readBytes');
  }

  writeBytes(gva: bigint, data: Uint8Array): void {
    if (!(data instanceof Uint8Array)) throw new TypeError('writeBytes: data must be a Uint8Array');
    this.tick('writeBytes');
    const n = typeof gva === 'bigint' ? Number(gva) : -1;
    const off = n % 4096;
    if (n >= 0 && n < TWO53 && data.length > 0 && off + data.length <= 4096) {
      // Inside one page (and gva a u64, so writeSlow's wrap-around is a no-op): writeSlow's single
      // iteration, without the BigInt arithmetic and the subarray.
      const e = this.entry(gva, true, 'writeBytes');
      if (e === undefined) return;
      const start = e.base - e.bytes.byteOffset;
      if (e.cipher !== undefined) e.cipher.encrypt(e.bytes, start, off, data);
      else e.bytes.set(data, start + off);
      if (e.ptPage) this.flush();
      return;
    }
    this.writeSlow(gva, data, 'writeBytes');
  }

  /** Page-by-page read (page crossings, ciphers); a skipped page reads as zeros. */
  private readSlow(gva: bigint, length: number, op: string): Uint8Array {
    if (typeof gva !== 'bigint') throw new TypeError(`${op}: gva must be a bigint, got ${typeof gva}`);
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const at = BigInt.asUintN(64, gva + BigInt(done));
      const off = Number(at & 0xfffn);
      const n = Math.min(length - done, 4096 - off);
      const e = this.entry(at, false, op);
      if (e !== undefined) {
        if (e.cipher !== undefined) {
          const part = new Uint8Array(n);
          e.cipher.decrypt(e.bytes, e.base - e.bytes.byteOffset, off, part, n);
          out.set(part, done);
        } else
          out.set(
            e.bytes.subarray(e.base - e.bytes.byteOffset + off, e.base - e.bytes.byteOffset + off + n),
            done,
          );
      }
      done += n;
    }
    return out;
  }

  private writeSlow(gva: bigint, data: Uint8Array, op: string): void {
    if (typeof gva !== 'bigint') throw new TypeError(`${op}: gva must be a bigint, got ${typeof gva}`);
    let done = 0;
    let flush = false;
    while (done < data.length) {
      const at = BigInt.asUintN(64, gva + BigInt(done));
      const off = Number(at & 0xfffn);
      const n = Math.min(data.length - done, 4096 - off);
      const e = this.entry(at, true, op);
      if (e !== undefined) {
        const part = data.subarray(done, done + n);
        const start = e.base - e.bytes.byteOffset;
        if (e.cipher !== undefined) e.cipher.encrypt(e.bytes, start, off, part);
        else e.bytes.set(part, start + off);
        if (e.ptPage) flush = true;
      }
      done += n;
    }
    if (flush) this.flush();
  }

  readAsync(gva: bigint, size: AccessSize): Promise<bigint> {
    return this.access('readAsync', gva, size, undefined);
  }

  async writeAsync(gva: bigint, size: AccessSize, value: bigint): Promise<void> {
    if (typeof value !== 'bigint')
      throw new TypeError(`writeAsync: value must be a bigint, got ${describeValue(value)}`);
    await this.access('writeAsync', gva, size, BigInt.asUintN(size * 8, value));
  }

  /**
   * A memory access that may exit: MMIO becomes an `mmio` exit (a read returns the host's data),
   * a memory fault a `memory-fault` exit after which the access is retried from its translation.
   */
  private async access(
    op: string,
    gva: bigint,
    size: AccessSize,
    value: bigint | undefined,
  ): Promise<bigint> {
    if (typeof gva !== 'bigint')
      throw new TypeError(`${op}: gva must be a bigint, got ${describeValue(gva)}`);
    if (size !== 1 && size !== 2 && size !== 4 && size !== 8)
      throw new TypeError(`${op}: size must be 1, 2, 4 or 8, got ${describeValue(size)}`);
    const write = value !== undefined;
    for (;;) {
      if (this.tickAsync(op)) await this.budgetPause();
      let pending: AccessExit;
      this.exitMode = true;
      try {
        return this.accessNow(op, gva, size, value);
      } catch (x) {
        if (!(x instanceof AccessExit)) throw x;
        pending = x;
      } finally {
        this.exitMode = false;
      }
      if (pending.fault !== undefined) {
        // KVM_EXIT_MEMORY_FAULT: the host resolves it (attributes, memslots) and the access is retried.
        await this.vcpu.exitToHost(pending.fault);
        continue;
      }
      const data = write ? leBytes(value, size) : new Uint8Array(size);
      const exit = { reason: 'mmio', gpa: pending.gpa, isWrite: write, len: size, data } as const;
      const got = (await this.vcpu.exitToHost(exit, (e) => {
        const d = (e as { data?: unknown }).data;
        const out = new Uint8Array(size);
        if (d instanceof Uint8Array) out.set(d.subarray(0, size));
        return out;
      })) as Uint8Array;
      return write ? 0n : le(got);
    }
  }

  /** One attempt of `access` with translation in exit mode; AccessExit when it needs the host. */
  private accessNow(op: string, gva: bigint, size: AccessSize, value: bigint | undefined): bigint {
    const write = value !== undefined;
    const e = this.entry(gva, write, op);
    if (e === undefined) return 0n;
    const off = this.off;
    if (off <= 4096 - size && e.view !== undefined) {
      const v = e.view;
      const at = e.base + off;
      if (!write) {
        if (size === 8) return v.getBigUint64(at, true);
        return BigInt(
          size === 4 ? v.getUint32(at, true) : size === 2 ? v.getUint16(at, true) : v.getUint8(at),
        );
      }
      if (size === 8) v.setBigUint64(at, value, true);
      else if (size === 4) v.setUint32(at, Number(value), true);
      else if (size === 2) v.setUint16(at, Number(value), true);
      else v.setUint8(at, Number(value));
      if (e.ptPage) this.flush();
      return 0n;
    }
    if (!write) return le(this.readSlow(gva, size, op));
    this.writeSlow(gva, leBytes(value, size), op);
    return 0n;
  }

  testAndSetBit(gva: bigint, bit: number): boolean {
    return this.bitOp('testAndSetBit', gva, bit, true);
  }

  clearBit(gva: bigint, bit: number): void {
    this.bitOp('clearBit', gva, bit, false);
  }

  /** LOCK BTS / BTR on the u64 word holding `bit` of the bit array at `gva` (a locked write). */
  private bitOp(op: string, gva: bigint, bit: number, set: boolean): boolean {
    if (typeof bit !== 'number' || !Number.isInteger(bit) || bit < 0)
      throw new TypeError(`${op}: bit must be a non-negative integer, got ${describeValue(bit)}`);
    if (typeof gva !== 'bigint') throw new TypeError(`${op}: gva must be a bigint, got ${typeof gva}`);
    this.tick(op);
    const q = Math.floor(bit / 64);
    // No BigInt arithmetic when the bit is in the first word and gva is already a u64.
    const word = q === 0 && gva >= 0n && gva <= U64 ? gva : BigInt.asUintN(64, gva + BigInt(q) * 8n);
    const r = bit % 64;
    const e = this.entry(word, true, op);
    if (e === undefined) return false;
    const off = this.off;
    if (off <= 4088 && e.view !== undefined) {
      // Plain memory: the read-modify-write of the one byte of the LE u64 word that holds the bit,
      // which is what rewriting the whole word with that bit changed amounts to.
      const at = e.base + off + (r >> 3);
      const m = 1 << (r & 7);
      const oldByte = e.view.getUint8(at);
      e.view.setUint8(at, set ? oldByte | m : oldByte & ~m);
      if (e.ptPage) this.flush();
      return (oldByte & m) !== 0;
    }
    const mask = 1n << BigInt(r);
    const old = le(this.readSlow(word, 8, op));
    this.writeSlow(word, leBytes(set ? old | mask : old & ~mask, 8), op);
    return (old & mask) !== 0n;
  }

  global(name: string): bigint {
    if (typeof name !== 'string')
      throw new TypeError(`global: name must be a string, got ${describeValue(name)}`);
    const v = this.vcpu.vm.symbols.get(name);
    if (v === undefined)
      throw new RangeError(
        `global ${JSON.stringify(name)} is not in this VM's symbol table (${this.vcpu.vm.symbols.size} symbols; the host sets them with vm.setGuestSymbols)`,
      );
    return v;
  }

  // ---- CPUID and MSRs -----------------------------------------------------------------------

  /** ArchCpu: the vCPU's CPUID table as KVM answers an emulated CPUID (no interception, no budget). */
  cpuidTable(leaf: number, subleaf: number): { eax: number; ebx: number; ecx: number; edx: number } {
    const e = findCpuid(this.vcpu.cpuid, leaf >>> 0, subleaf >>> 0);
    return e === undefined ? { eax: 0, ebx: 0, ecx: 0, edx: 0 } : e;
  }

  cpuid(leaf: number, subleaf = 0): CpuidEntry {
    if (typeof leaf !== 'number' || !Number.isInteger(leaf))
      throw new TypeError(`cpuid: leaf must be an integer, got ${describeValue(leaf)}`);
    if (typeof subleaf !== 'number' || !Number.isInteger(subleaf))
      throw new TypeError(`cpuid: subleaf must be an integer, got ${describeValue(subleaf)}`);
    for (;;) {
      this.tick('cpuid');
      const a = this.intercepted({ kind: 'cpuid', leaf, subleaf }, 'cpuid', leaf);
      if (a === 'retry') continue;
      if (a === 'skip')
        return { function: leaf >>> 0, index: subleaf >>> 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 };
      const e = findCpuid(this.vcpu.cpuid, leaf >>> 0, subleaf >>> 0);
      // A leaf missing from the table reads as zeros (kvm_cpuid with no entry).
      return e === undefined
        ? { function: leaf >>> 0, index: subleaf >>> 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 }
        : { ...e };
    }
  }

  rdmsr(msr: number): bigint {
    if (typeof msr !== 'number' || !Number.isInteger(msr))
      throw new TypeError(`rdmsr: msr must be an integer, got ${describeValue(msr)}`);
    for (;;) {
      this.tick('rdmsr');
      const a = this.intercepted({ kind: 'rdmsr', msr }, 'rdmsr', msr);
      if (a === 'retry') continue;
      if (a === 'skip') return 0n;
      const v = this.vcpu.vm.ops.readMsr?.(this.vcpu, msr) ?? this.vcpu.msr(msr);
      if (v !== undefined) return v;
      const op = `rdmsr(${hex(msr)})`;
      if (
        this.deliver({ vector: VECTOR.GP, errorCode: 0, operation: op, detail: 'MSR not implemented' }) ===
        'skip'
      )
        return 0n;
    }
  }

  wrmsr(msr: number, value: bigint): void {
    if (typeof msr !== 'number' || !Number.isInteger(msr))
      throw new TypeError(`wrmsr: msr must be an integer, got ${describeValue(msr)}`);
    if (typeof value !== 'bigint') throw new TypeError(`wrmsr: value must be a bigint, got ${typeof value}`);
    // The operation's name is built only for an exception (a trap or a #GP), not on every write.
    for (;;) {
      this.tick('wrmsr');
      const a = this.intercepted({ kind: 'wrmsr', msr }, 'wrmsr', msr, value);
      if (a === 'retry') continue;
      if (a === 'skip') return;
      let v = BigInt.asUintN(64, value);
      if (this.vcpu.vm.ops.writeMsr?.(this.vcpu, msr, v)) return;
      let why: string | undefined;
      if (msr === MSR_EFER) {
        const e = this.eferWrite(v);
        if ('why' in e) why = e.why;
        else v = e.value;
      }
      if (why === undefined && this.vcpu.writeMsr(msr, v)) return;
      why ??= this.vcpu.msr(msr) === undefined ? 'MSR not implemented' : 'value not valid for this MSR';
      if (
        this.deliver({
          vector: VECTOR.GP,
          errorCode: 0,
          operation: `wrmsr(${hex(msr)}, ${hex(value)})`,
          detail: why,
        }) === 'skip'
      )
        return;
    }
  }

  // ---- control registers ---------------------------------------------------------------------

  readCr(n: ReadableCr): bigint {
    if (n !== 0 && n !== 2 && n !== 3 && n !== 4)
      throw new TypeError(`readCr: control register must be 0, 2, 3 or 4, got ${describeValue(n)}`);
    this.tick('readCr');
    const s = this.vcpu.sregs;
    return n === 0 ? s.cr0 : n === 2 ? s.cr2 : n === 3 ? s.cr3 : s.cr4;
  }

  writeCr(n: WritableCr, value: bigint): void {
    if (n !== 0 && n !== 3 && n !== 4)
      throw new TypeError(`writeCr: control register must be 0, 3 or 4, got ${describeValue(n)}`);
    if (typeof value !== 'bigint')
      throw new TypeError(`writeCr: value must be a bigint, got ${typeof value}`);
    const op = `writeCr(${n}, ${hex(BigInt.asUintN(64, value))})`;
    for (;;) {
      this.tick('writeCr');
      const v = BigInt.asUintN(64, value);
      const why = n === 0 ? this.setCr0(v) : n === 3 ? this.setCr3(v) : this.setCr4(v);
      if (why === undefined) return;
      // MOV to CR with an invalid value: #GP(0), nothing changed (SDM vol. 2 "MOV—Move to/from Control Registers").
      if (this.deliver({ vector: VECTOR.GP, errorCode: 0, operation: op, detail: why }) === 'skip') return;
    }
  }

  // ---- XSAVE ---------------------------------------------------------------------------------

  /** The #UD of an XSAVE-family instruction with CR4.OSXSAVE clear (SDM: XGETBV, XSETBV, XSAVE, XRSTOR). */
  private osxsaveOff(op: string): 'skip' | 'retry' | undefined {
    if ((this.vcpu.sregs.cr4 & CR.CR4_OSXSAVE) !== 0n) return undefined;
    return this.deliver({
      vector: VECTOR.UD,
      errorCode: undefined,
      operation: op,
      detail: 'CR4.OSXSAVE is clear',
    });
  }

  xgetbv(index: number): bigint {
    if (!Number.isInteger(index) || index < 0 || index > 0xffff_ffff)
      throw new TypeError(`xgetbv: index must be a u32, got ${String(index)}`);
    const op = `xgetbv(${index})`;
    for (;;) {
      this.tick('xgetbv');
      const ud = this.osxsaveOff(op);
      if (ud === 'skip') return 0n;
      if (ud === 'retry') continue;
      // XCR1 (XINUSE) needs CPUID.(0xD,1).EAX.XGETBV_EC1, not modelled: only XCR0 reads.
      if (index === 0) return this.vcpu.xcr0;
      const detail = `XCR${index} does not exist`;
      if (this.deliver({ vector: VECTOR.GP, errorCode: 0, operation: op, detail }) === 'skip') return 0n;
    }
  }

  xsetbv(index: number, value: bigint): void {
    if (!Number.isInteger(index) || index < 0 || index > 0xffff_ffff)
      throw new TypeError(`xsetbv: index must be a u32, got ${String(index)}`);
    if (typeof value !== 'bigint') throw new TypeError(`xsetbv: value must be a bigint, got ${typeof value}`);
    const op = `xsetbv(${index}, ${hex(BigInt.asUintN(64, value))})`;
    for (;;) {
      this.tick('xsetbv');
      const ud = this.osxsaveOff(op);
      if (ud === 'skip') return;
      if (ud === 'retry') continue;
      const vc = this.intercepted({ kind: 'xsetbv' }, 'xsetbv', index, value);
      if (vc === 'skip') return;
      if (vc === 'retry') continue;
      // arch/x86/kvm/x86.c: kvm_emulate_xsetbv() -> __kvm_set_xcr(); a failure is #GP(0).
      const why = xcrProblem(index, BigInt.asUintN(64, value), this.vcpu.guestSupportedXcr0());
      if (why === undefined) {
        this.vcpu.xcr0 = BigInt.asUintN(64, value);
        return;
      }
      if (this.deliver({ vector: VECTOR.GP, errorCode: 0, operation: op, detail: why }) === 'skip') return;
    }
  }

  xsave(gva: bigint, rfbm: bigint): void {
    const op = `xsave(${hex(gva)}, ${hex(rfbm)})`;
    for (;;) {
      this.tick('xsave');
      const ud = this.osxsaveOff(op);
      if (ud === 'skip') return;
      if (ud === 'retry') continue;
      if ((gva & 63n) !== 0n) {
        const detail = 'the XSAVE area is not 64-byte aligned';
        if (this.deliver({ vector: VECTOR.GP, errorCode: 0, operation: op, detail }) === 'skip') return;
        continue;
      }
      // Read first: XSAVE leaves the bytes of components outside RFBM (and reserved bytes) as they were.
      const area = this.readBytes(gva, XSAVE_AREA_BYTES);
      saveComponents(this.vcpu.fpu, area, BigInt.asUintN(64, rfbm) & this.vcpu.xcr0);
      this.writeBytes(gva, area);
      return;
    }
  }

  xrstor(gva: bigint, rfbm: bigint): void {
    const op = `xrstor(${hex(gva)}, ${hex(rfbm)})`;
    for (;;) {
      this.tick('xrstor');
      const ud = this.osxsaveOff(op);
      if (ud === 'skip') return;
      if (ud === 'retry') continue;
      const area = (gva & 63n) === 0n ? this.readBytes(gva, XSAVE_AREA_BYTES) : undefined;
      const why =
        area === undefined ? 'the XSAVE area is not 64-byte aligned' : xsaveAreaProblem(area, this.vcpu.xcr0);
      if (why === undefined) {
        loadComponents(this.vcpu.fpu, area!, BigInt.asUintN(64, rfbm) & this.vcpu.xcr0);
        return;
      }
      if (this.deliver({ vector: VECTOR.GP, errorCode: 0, operation: op, detail: why }) === 'skip') return;
    }
  }

  /** kvm_set_cr0 as the guest's MOV to CR0 meets it; returns the #GP reason, or undefined after the write. */
  private setCr0(value: bigint): string | undefined {
    const s = this.vcpu.sregs;
    if (value >> 32n !== 0n) return `CR0 bits 63:32 are reserved (${hex(value)})`;
    // Reserved bits in 31:0 are ignored on write; ET is hardwired to 1 on every CPU since the 486DX.
    const cr0 = (value & CR0_DEFINED) | CR.CR0_ET;
    if ((cr0 & CR.CR0_NW) !== 0n && (cr0 & CR.CR0_CD) === 0n) return 'CR0.NW set with CR0.CD clear';
    if ((cr0 & CR.CR0_PG) !== 0n && (cr0 & CR.CR0_PE) === 0n) return 'CR0.PG set with CR0.PE clear';
    const pagingOn = (s.cr0 & CR.CR0_PG) !== 0n;
    const longMode = (s.efer & CR.EFER_LMA) !== 0n;
    if (!pagingOn && (cr0 & CR.CR0_PG) !== 0n && (s.efer & CR.EFER_LME) !== 0n && (s.cr4 & CR.CR4_PAE) === 0n)
      return 'CR0.PG set with EFER.LME but CR4.PAE clear (long mode needs PAE paging)';
    // The program runs as 64-bit code once long mode is active: it cannot turn paging off under itself.
    if (longMode && (cr0 & CR.CR0_PG) === 0n)
      return 'CR0.PG cleared while executing 64-bit code (IA-32e mode)';
    if ((cr0 & CR.CR0_PG) === 0n && (s.cr4 & CR.CR4_PCIDE) !== 0n) return 'CR0.PG cleared with CR4.PCIDE set';
    const old = s.cr0;
    s.cr0 = cr0;
    // Turning paging on with EFER.LME activates IA-32e mode (EFER.LMA is set by the CPU, not by WRMSR).
    if (!pagingOn && (cr0 & CR.CR0_PG) !== 0n && (s.efer & CR.EFER_LME) !== 0n) s.efer |= CR.EFER_LMA;
    if (((old ^ cr0) & CR0_MMU_BITS) !== 0n) this.flush();
    return undefined;
  }

  /** kvm_set_cr3: bits above MAXPHYADDR are #GP (bit 63 is PCID's no-flush hint); every write flushes the TLB. */
  private setCr3(value: bigint): string | undefined {
    const s = this.vcpu.sregs;
    const pcid = (s.cr4 & CR.CR4_PCIDE) !== 0n;
    const cr3 = pcid ? value & ~(1n << 63n) : value;
    const maxPhys = BigInt(this.vm.kvm.config.maxPhysAddr);
    if ((s.efer & CR.EFER_LMA) !== 0n && cr3 >> maxPhys !== 0n)
      return `CR3 ${hex(value)} has bits at or above MAXPHYADDR (${maxPhys})`;
    s.cr3 = (s.efer & CR.EFER_LMA) !== 0n ? cr3 : cr3 & 0xffff_ffffn;
    // No PCID or global pages are modelled: a CR3 load drops every cached translation.
    this.flush();
    return undefined;
  }

  /** kvm_set_cr4 / kvm_is_valid_cr4; returns the #GP reason, or undefined after the write. */
  private setCr4(value: bigint): string | undefined {
    const s = this.vcpu.sregs;
    const reserved = value & ~CR4_DEFINED;
    if (reserved !== 0n) return `CR4 ${hex(value)} sets reserved bits ${hex(reserved)}`;
    if ((value & CR.CR4_LA57) !== 0n && (this.cpuidRegs(7, 0).ecx & (1 << 16)) === 0)
      return 'CR4.LA57 set but CPUID.(EAX=7,ECX=0):ECX.LA57[bit 16] is 0';
    const longMode = (s.efer & CR.EFER_LMA) !== 0n;
    if (longMode && (value & CR.CR4_PAE) === 0n) return 'CR4.PAE cleared in IA-32e mode';
    if (longMode && ((value ^ s.cr4) & CR.CR4_LA57) !== 0n)
      return 'CR4.LA57 changed in IA-32e mode (5-level paging can only be switched with paging off)';
    if (
      (value & CR.CR4_PCIDE) !== 0n &&
      (s.cr4 & CR.CR4_PCIDE) === 0n &&
      (!longMode || (s.cr3 & 0xfffn) !== 0n)
    )
      return 'CR4.PCIDE set outside IA-32e mode or with CR3[11:0] non-zero';
    const old = s.cr4;
    s.cr4 = value;
    if (((old ^ value) & CR4_MMU_BITS) !== 0n) this.flush();
    return undefined;
  }

  /** CPUID of the vCPU's table, with no interception (for the CPU's own feature checks). */
  private cpuidRegs(leaf: number, subleaf: number): CpuidEntry {
    return (
      findCpuid(this.vcpu.cpuid, leaf, subleaf) ?? {
        function: leaf,
        index: subleaf,
        flags: 0,
        eax: 0,
        ebx: 0,
        ecx: 0,
        edx: 0,
      }
    );
  }

  /**
   * WRMSR(EFER) from the guest (set_efer, not host-initiated): LME cannot change while paging is on,
   * LMA is the CPU's and keeps its value. Returns the value to write, or the #GP reason.
   */
  private eferWrite(value: bigint): { value: bigint } | { why: string } {
    const s = this.vcpu.sregs;
    if ((s.cr0 & CR.CR0_PG) !== 0n && ((s.efer ^ value) & CR.EFER_LME) !== 0n)
      return { why: 'EFER.LME changed while CR0.PG is set' };
    if ((value & CR.EFER_NXE) !== 0n && (this.cpuidRegs(0x8000_0001, 0).edx & (1 << 20)) === 0)
      return { why: 'EFER.NXE set but CPUID.80000001H:EDX.NX[bit 20] is 0' };
    return { value: (value & ~CR.EFER_LMA) | (s.efer & CR.EFER_LMA) };
  }

  msr(index: number): bigint | undefined {
    return this.vcpu.msr(index);
  }

  setMsr(index: number, value: bigint): void {
    this.vcpu.writeMsr(index, value);
  }

  // ---- exits --------------------------------------------------------------------------------

  private readonly pio = new Map<number, Uint8Array>();

  /**
   * The data area of a port-I/O exit. Like the kvm_run PIO page it is reused: an exit's `data` is
   * valid until the next run, as the contract's `vcpu.exit` is.
   */
  private pioData(size: number): Uint8Array {
    let d = this.pio.get(size);
    if (d === undefined) {
      d = new Uint8Array(size);
      this.pio.set(size, d);
    }
    return d;
  }

  exitToHost<E extends Exit>(exit: E): Promise<E> {
    return this.vcpu.exitToHost(exit, (e) => e) as Promise<E>;
  }

  out(port: number, size: IoSize, value: number): Promise<void> {
    // Not async: the common case (budget left, the arch does not trap the OUT) returns the exit's own
    // promise, one promise and one microtask hop fewer per exit. The checks are outLoop's first
    // iteration, in its order; a throw becomes a rejection, as from an async function.
    try {
      checkPort('out', port, size);
      if (typeof value !== 'number' || !Number.isInteger(value))
        throw new TypeError(`out: value must be an integer, got ${describeValue(value)}`);
      // OUT writes AL, AX or EAX: a value that does not fit the access is a caller bug, not a truncation.
      if (value < 0 || value >= IO_LIMIT[size])
        throw new RangeError(
          `out: value ${value} does not fit a ${size}-byte port access (0..0x${(IO_LIMIT[size] - 1).toString(16)})`,
        );
      if (this.tickAsync('out')) return this.outLoop(port, size, value, true);
      const a = this.intercepted({ kind: 'io', port, size, in: false }, 'out', port);
      if (a === 'retry') return this.outLoop(port, size, value, false);
      if (a === 'skip') return Promise.resolve();
      return this.outExit(port, size, value);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** out's general loop; `spent` when the caller's tick of this iteration already ran out of budget. */
  private async outLoop(port: number, size: IoSize, value: number, spent: boolean): Promise<void> {
    for (;;) {
      if (spent || this.tickAsync('out')) await this.budgetPause();
      spent = false;
      const a = this.intercepted({ kind: 'io', port, size, in: false }, 'out', port);
      if (a === 'retry') continue;
      if (a === 'skip') return;
      await this.outExit(port, size, value);
      return;
    }
  }

  /** The OUT exit: the value's `size` LE bytes in the reused PIO data area; resolves on the next run. */
  private outExit(port: number, size: IoSize, value: number): Promise<void> {
    const data = this.pioData(size);
    let v = value >>> 0;
    for (let i = 0; i < size; i++, v >>>= 8) data[i] = v & 0xff;
    return this.vcpu.exitToHost({
      reason: 'io',
      direction: 'out',
      port,
      size,
      count: 1,
      data,
    }) as Promise<void>;
  }

  async in(port: number, size: IoSize): Promise<number> {
    checkPort('in', port, size);
    for (;;) {
      if (this.tickAsync('in')) await this.budgetPause();
      const a = this.intercepted({ kind: 'io', port, size, in: true }, 'in', port);
      if (a === 'retry') continue;
      if (a === 'skip') return 0;
      const data = this.pioData(size).fill(0);
      const exit = { reason: 'io', direction: 'in', port, size, count: 1, data } as const;
      return (await this.vcpu.exitToHost(exit, (e) => {
        const d = (e as { data?: unknown }).data;
        return d instanceof Uint8Array ? Number(le(d.subarray(0, size))) : 0;
      })) as number;
    }
  }

  async mmioWrite(gpa: bigint, size: number, value: bigint): Promise<void> {
    checkMmio('mmioWrite', gpa, size);
    if (typeof value !== 'bigint')
      throw new TypeError(`mmioWrite: value must be a bigint, got ${typeof value}`);
    const data = leBytes(BigInt.asUintN(size * 8, value), size);
    await this.mmio('mmioWrite', gpa, size, data);
  }

  async mmioRead(gpa: bigint, size: number): Promise<bigint> {
    checkMmio('mmioRead', gpa, size);
    return le(await this.mmio('mmioRead', gpa, size, undefined));
  }

  /** A guest-physical access that may exit: MMIO when nothing backs it, memory-fault (then retried). */
  private async mmio(
    op: string,
    gpa: bigint,
    size: number,
    data: Uint8Array | undefined,
  ): Promise<Uint8Array> {
    const write = data !== undefined;
    const operation = `${op}(${hex(gpa)})`;
    for (;;) {
      if (this.tickAsync(op)) await this.budgetPause();
      const a = this.intercepted({ kind: 'mmio', gpa, size, write }, operation);
      if (a === 'retry') continue;
      if (a === 'skip') return new Uint8Array(size);
      const p = this.page(gpa, write, false, false);
      if (p.kind === 'fault') {
        await this.vcpu.exitToHost(p.exit);
        continue;
      }
      if (p.kind === 'exception') {
        if (this.deliver({ ...p.e, operation }) === 'skip') return new Uint8Array(size);
        continue;
      }
      if (p.kind === 'ram' && (gpa & 0xfffn) + BigInt(size) <= 4096n) {
        const off = Number(gpa & 0xfffn);
        const start = p.base + off;
        if (write) {
          if (p.cipher !== undefined) p.cipher.encrypt(p.bytes, p.base, off, data);
          else p.bytes.set(data, start);
          return data;
        }
        const out = new Uint8Array(size);
        if (p.cipher !== undefined) p.cipher.decrypt(p.bytes, p.base, off, out, size);
        else out.set(p.bytes.subarray(start, start + size));
        return out;
      }
      const exit = {
        reason: 'mmio',
        gpa,
        isWrite: write,
        len: size,
        data: write ? data.slice() : new Uint8Array(size),
      } as const;
      return (await this.vcpu.exitToHost(exit, (e) => {
        const d = (e as { data?: unknown }).data;
        const out = new Uint8Array(size);
        if (d instanceof Uint8Array) out.set(d.subarray(0, size));
        return out;
      })) as Uint8Array;
    }
  }

  async hypercall(nr: bigint, args: readonly bigint[] = []): Promise<bigint> {
    if (typeof nr !== 'bigint') throw new TypeError(`hypercall: nr must be a bigint, got ${typeof nr}`);
    if (!Array.isArray(args) || args.length > 4 || args.some((a) => typeof a !== 'bigint'))
      throw new TypeError('hypercall: args must be up to 4 bigints (RBX, RCX, RDX, RSI)');
    return this.guarded(0n, async () => {
      for (;;) {
        if (this.tickAsync('hypercall')) await this.budgetPause();
        const a = this.intercepted({ kind: 'hypercall' }, `hypercall(${nr})`);
        if (a === 'retry') continue;
        if (a === 'skip') return 0n;
        break;
      }
      const r = this.vcpu.regs;
      r.rax = BigInt.asUintN(64, nr);
      [r.rbx, r.rcx, r.rdx, r.rsi] = [0, 1, 2, 3].map((i) => BigInt.asUintN(64, args[i] ?? 0n)) as [
        bigint,
        bigint,
        bigint,
        bigint,
      ];
      const ops = this.vcpu.vm.ops;
      if (ops.hypercall !== undefined) {
        const h = await ops.hypercall(this, r.rax, [r.rbx, r.rcx, r.rdx, r.rsi]);
        if (h.handled) {
          r.rax = BigInt.asUintN(64, h.rax);
          return r.rax;
        }
      }
      r.rax = BigInt.asUintN(64, await this.x86Hypercall(r.rax, r.rbx, r.rcx, r.rdx));
      return r.rax;
    });
  }

  /** x86.c kvm_emulate_hypercall for a 64-bit, CPL0 guest. */
  private async x86Hypercall(nr: bigint, a0: bigint, a1: bigint, a2: bigint): Promise<bigint> {
    switch (nr) {
      case BigInt(KVM_HC.VAPIC_POLL_IRQ):
      case BigInt(KVM_HC.KICK_CPU):
      case BigInt(KVM_HC.SCHED_YIELD):
        return 0n;
      case BigInt(KVM_HC.SEND_IPI):
        // kvm_pv_send_ipi with no in-kernel APIC map (no irqchip is modelled).
        return -KVM_EOPNOTSUPP;
      case BigInt(KVM_HC.MAP_GPA_RANGE): {
        if (!this.vcpu.vm.hypercallExitEnabled(KVM_HC.MAP_GPA_RANGE)) return -KVM_ENOSYS;
        const gfn = a0 >> 12n;
        if ((a0 & 0xfffn) !== 0n || a1 === 0n || BigInt.asUintN(64, gfn + a1) <= gfn) return -KVM_EINVAL;
        const exit: HypercallExit = { reason: 'hypercall', nr, args: [a0, a1, a2], ret: 0n, longmode: true };
        return (await this.vcpu.exitToHost(exit, (e) => {
          const ret = (e as { ret?: unknown }).ret;
          return typeof ret === 'bigint' ? ret : 0n;
        })) as bigint;
      }
      default:
        return -KVM_ENOSYS;
    }
  }

  // vmgexit and tdcall are not async, nor are their steps: guarded's promise and the arch's are passed
  // on as they are (each async layer that returns a promise costs a promise and microtask hops per
  // exit). A step that throws (raise, acting outside a run) throws inside guarded's try, which
  // handles it exactly as the rejection of an async step.

  vmgexit(): Promise<void> {
    return this.guarded(undefined, () => this.vmgexitStep());
  }

  /** One VMGEXIT attempt: the budget pause when the budget ran out, then the arch's handler. */
  private vmgexitStep(): Promise<void> {
    if (this.tickAsync('vmgexit')) return this.budgetPause().then(() => this.vmgexitArch());
    return this.vmgexitArch();
  }

  private vmgexitArch(): Promise<void> {
    const f = this.vcpu.vm.ops.vmgexit;
    if (f === undefined)
      this.raise({
        vector: VECTOR.UD,
        errorCode: undefined,
        detail: 'VMGEXIT outside an SEV-ES/SNP guest',
      });
    return f.call(this.vcpu.vm.ops, this);
  }

  tdcall(leaf: bigint, regs: TdcallRegs): Promise<TdcallRegs> {
    if (typeof leaf !== 'bigint')
      return Promise.reject(new TypeError(`tdcall: leaf must be a bigint, got ${typeof leaf}`));
    if (typeof regs !== 'object' || regs === null)
      return Promise.reject(new TypeError('tdcall: regs must be an object'));
    return this.guarded<TdcallRegs>({}, () => this.tdcallStep(leaf, regs));
  }

  /** One TDCALL attempt: the budget pause when the budget ran out, then the TDX module. */
  private tdcallStep(leaf: bigint, regs: TdcallRegs): Promise<TdcallRegs> {
    if (this.tickAsync('tdcall')) return this.budgetPause().then(() => this.tdcallArch(leaf, regs));
    return this.tdcallArch(leaf, regs);
  }

  private tdcallArch(leaf: bigint, regs: TdcallRegs): Promise<TdcallRegs> {
    const f = this.vcpu.vm.ops.tdcall;
    if (f === undefined)
      this.raise({ vector: VECTOR.UD, errorCode: undefined, detail: 'TDCALL outside a TD' });
    return f.call(this.vcpu.vm.ops, this, leaf, regs);
  }

  pvalidate(gva: bigint, validate: boolean): number {
    if (typeof validate !== 'boolean')
      throw new TypeError(`pvalidate: validate must be a boolean, got ${typeof validate}`);
    for (;;) {
      this.tick('pvalidate');
      const f = this.vcpu.vm.ops.pvalidate;
      const op = `pvalidate(${hex(gva)})`;
      try {
        if (f === undefined)
          this.raise({
            vector: VECTOR.UD,
            errorCode: undefined,
            detail: 'PVALIDATE outside an SEV-SNP guest',
          });
        this.pvalidating = true;
        let e: TlbEntry | undefined;
        try {
          e = this.entry(gva, false, 'pvalidate');
        } finally {
          this.pvalidating = false;
        }
        if (e === undefined) return 0;
        return f.call(this.vcpu.vm.ops, this, e.gpaPage | (gva & 0xfffn), validate);
      } catch (err) {
        if (err === SKIP) return 0;
        if (err === RETRY) continue;
        void op;
        throw err;
      }
    }
  }

  async hlt(): Promise<void> {
    for (;;) {
      if (this.tickAsync('hlt')) await this.budgetPause();
      const a = this.intercepted({ kind: 'hlt' }, 'hlt');
      if (a === 'retry') continue;
      if (a === 'skip') return;
      await this.vcpu.exitToHost({ reason: 'hlt' });
      return;
    }
  }

  ud2(): never {
    for (;;) {
      this.tick('ud2');
      const a = this.deliver({
        vector: VECTOR.UD,
        errorCode: undefined,
        operation: 'ud2',
        detail: 'UD2 executed',
      });
      if (a === 'skip') return undefined as never;
    }
  }

  // ---- ArchCpu physical access --------------------------------------------------------------

  readPhys(gpa: bigint, length: number, tagged: boolean): Uint8Array {
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const at = gpa + BigInt(done);
      const off = Number(at & 0xfffn);
      const n = Math.min(length - done, 4096 - off);
      const p = this.page(at, false, tagged, false);
      if (p.kind !== 'ram') this.physFail(p, at);
      else if (p.cipher !== undefined) {
        const part = new Uint8Array(n);
        p.cipher.decrypt(p.bytes, p.base, off, part, n);
        out.set(part, done);
      } else out.set(p.bytes.subarray(p.base + off, p.base + off + n), done);
      done += n;
    }
    return out;
  }

  writePhys(gpa: bigint, data: Uint8Array, tagged: boolean): void {
    let done = 0;
    while (done < data.length) {
      const at = gpa + BigInt(done);
      const off = Number(at & 0xfffn);
      const n = Math.min(data.length - done, 4096 - off);
      const p = this.page(at, true, tagged, false);
      if (p.kind !== 'ram') this.physFail(p, at);
      else if (p.cipher !== undefined) p.cipher.encrypt(p.bytes, p.base, off, data.subarray(done, done + n));
      else p.bytes.set(data.subarray(done, done + n), p.base + off);
      done += n;
    }
    this.flush();
  }

  private physFail(p: PageAccess, gpa: bigint): never {
    if (p.kind === 'fault')
      this.unwind(p.exit, `a physical access at GPA ${hex(gpa)} needed a memory-fault exit`);
    if (p.kind === 'exception') this.raise(p.e);
    return this.crash(`a physical access by the CPU reached GPA ${hex(gpa)}, which no memslot backs`);
  }
}

function budgetDetail(g: SimGuest, op: string): string {
  return (
    `the run's budget of ${g.budget} guest operations ran out inside the synchronous operation ${op}; a ` +
    'JavaScript guest cannot be suspended there, so the program was unwound (await an async guest operation ' +
    'in long loops, or raise SimConfig.runBudget)'
  );
}

function describeFault(e: Exit): string {
  return e.reason === 'memory-fault'
    ? `memory-fault (${e.private ? 'private' : 'shared'} GPA ${hex(e.gpa)})`
    : e.reason;
}

/** Little-endian value of up to 8 bytes. */
function le(b: Uint8Array): bigint {
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  return v;
}

function leBytes(v: bigint, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = v;
  for (let i = 0; i < n; i++, x >>= 8n) out[i] = Number(x & 0xffn);
  return out;
}

/** Most bytes one readBytes copies (64 MiB): a guest-chosen length is bounded before the allocation. */
const GUEST_MAX_READ = 64 << 20;

/** One past the largest value of a 1-, 2- or 4-byte port access. */
const IO_LIMIT = { 1: 0x100, 2: 0x1_0000, 4: 0x1_0000_0000 } as const;

/** A value for an error message: its type and, for primitives, the value (bigints with their `n`). */
function describeValue(v: unknown): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'bigint') return `bigint ${v}n`;
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (v === null || v === undefined || typeof v !== 'object')
    return `${v === null ? 'null' : typeof v} ${String(v)}`;
  return typeof v;
}

function checkPort(op: string, port: number, size: number): void {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 0xffff)
    throw new TypeError(`${op}: port must be an integer in 0..0xffff, got ${describeValue(port)}`);
  if (size !== 1 && size !== 2 && size !== 4)
    throw new TypeError(`${op}: size must be 1, 2 or 4, got ${describeValue(size)}`);
}

function checkMmio(op: string, gpa: bigint, size: number): void {
  if (typeof gpa !== 'bigint' || gpa < 0n || gpa > U64)
    throw new TypeError(
      `${op}: gpa must be a u64 bigint, got ${typeof gpa === 'bigint' ? String(gpa) : typeof gpa}`,
    );
  if (size !== 1 && size !== 2 && size !== 4 && size !== 8)
    throw new TypeError(`${op}: size must be 1, 2, 4 or 8, got ${String(size)}`);
}
