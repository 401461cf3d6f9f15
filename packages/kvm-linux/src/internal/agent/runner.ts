// Running a TypeScript guest program on a real vCPU through the guest agent.
//
// The program runs on the host against AgentGuest. Every Guest operation is posted into the
// vCPU's mailbox and the vCPU is run synchronously (one KVM_RUN) until the agent signals on its
// port; the agent executed the operation as the real instruction, through the guest's own page
// tables, CPUID, MSRs, control registers and ports. An exception in the operation comes back
// through the agent's IDT with vector, error code, CR2 and RIP, and is delivered to the program's
// exception handler exactly as the simulator delivers it (retry re-executes the operation, skip
// abandons it; a handler that throws makes the operation throw GuestException). With no handler
// installed there is no exception entry: the agent keeps an empty IDT loaded, and an exception
// triple-faults in the instruction itself (the kernel's SHUTDOWN exit), as the simulator's
// triple fault does.
//
// Any other exit (I/O on another port, MMIO, HLT, SHUTDOWN, SYSTEM_EVENT, MEMORY_FAULT,
// INTERNAL_ERROR, the watchdog's timeout) is the guest's own: an operation that awaits (out, in,
// mmio*, hypercall, hlt, vmgexit, tdcall) hands it to the pending `run()` and continues at the next
// `run()`, which resumes KVM_RUN where the kernel stopped. A synchronous operation (a memory
// access, CPUID, …) cannot wait for the host: such an exit ends the run with that exit and unwinds
// the program (later runs report internal-error, or the same SHUTDOWN), as on the simulator.
//
// A program that returns halts the vCPU for real (the agent executes HLT, each later run again).
// A program that throws GuestException (an exception nobody handled) triple-faults for real: the
// agent loads an empty IDT and executes UD2, and the run ends with the kernel's SHUTDOWN exit.
//
// VMCALL never completes on PVM hosts (the instruction is retried forever): a hypercall ends in
// the watchdog's timeout exit, as any guest stuck in an instruction does.

import { hex } from '@kvmtest/coco';
import {
  type CpuidEntry,
  type SlotSend,
  type SlotSendResult,
  type ExceptionFrame,
  type AccessSize,
  type ExceptionHandler,
  type Exit,
  EXIT_REASON,
  type Guest,
  GuestException,
  type GuestProgram,
  INTERNAL_ERROR,
  type InternalErrorExit,
  type IoSize,
  type ReadableCr,
  type Regs,
  type TdcallRegs,
  VECTOR,
  vectorName,
  type WritableCr,
} from '@kvmtest/kvm';
import { RUN } from '../uapi.js';
import type { AgentVcpuHost } from './host.js';
import { AGENT_CODE } from './agent-bytes.js';
import { type SlotCode, SlotCodeBuffer } from './slot-code.js';
import {
  AGENT_GVA,
  AGENT_PORT,
  CODE_HEADER,
  LADDER_PAIR,
  LADDER_PAIRS,
  MAILBOX,
  MMIO_WINDOW_GVA,
  MMIO_WINDOW_PTE,
  OP,
  SLOT_SEND,
  SLOT_SEND_STATUS,
  STATUS,
  VECTORS_WITH_ERROR_CODE,
} from './layout.js';
import {
  AGENT_IDT_GATES,
  type AgentVcpuPages,
  type AgentVm,
  agentPageGva,
  agentVmOf,
  installRootEntry,
  installVcpu,
} from './setup.js';
import { AGENT_PAGE } from './layout.js';

const U64 = (1n << 64n) - 1n;
const PAGE = 4096;
const KVM_EXIT_IO_OUT = 1;
const CR4_LA57 = 1n << 12n;

/** Unwinds a guest program that can no longer run; every later guest operation throws it again. */
export class AgentUnwind extends Error {
  override readonly name = 'AgentUnwind';
}

/** Signals from deliver() that the handler abandoned the operation. */
type Resume = 'retry' | 'skip';

type RunState = 'idle' | 'running' | 'at-exit' | 'ended';

/** How a program ended, for the runs after it. */
type Ending = { kind: 'halt' } | { kind: 'replay'; exit: Exit } | { kind: 'error'; error: unknown };

/** Drives one vCPU's guest program through the agent; kvm-linux's Vcpu delegates setEntry/run to it. */
export class AgentRunner {
  private program: GuestProgram | undefined;
  private state: RunState = 'idle';
  private ending: Ending | undefined;
  private agent: AgentVm | undefined;
  private pages: AgentVcpuPages | undefined;
  private mb: DataView | undefined;
  private opGva: readonly bigint[] = [];
  /** The exit of the last run (what the caller of run() saw). */
  exit: Exit | undefined;
  readonly guest: AgentGuest;
  private runResolve: ((e: Exit) => void) | undefined;
  private runReject: ((e: unknown) => void) | undefined;
  private current: Promise<Exit> | undefined;
  private resumeFn: (() => void) | undefined;
  private poisoned: AgentUnwind | undefined;
  private runSeq = 0;
  /** When the run in flight started (performance.now()). */
  private runStart = 0;
  /** Operations executed by the agent (for tests and benches). */
  ops = 0;
  /**
   * A slot send's OUT exit was resumed: the agent's LOCK BTR of the slot's bit runs at the start of
   * the next KVM_RUN, before the next operation (see op_slotsend in agent.S).
   */
  private releasePending = false;
  /** GVA of that LOCK BTR (an exit there is the release's own). */
  private releaseRip = 0n;
  /** The code of the slot send in flight when it was emitted (in the mailbox page), and its GVA. */
  private slotCode: SlotCode | undefined;
  private slotCodeGva = 0n;
  /** Where slot sends are emitted: the mailbox page from SLOT_CODE_OFFSET (the mailbox uses its start). */
  private slotCodeBuffer: SlotCodeBuffer | undefined;
  /** Delivers an exception the pending release raised as the program's clearBit would take it. */
  onReleaseFault: ((frame: ExceptionFrame) => void) | undefined;

  constructor(readonly host: AgentVcpuHost) {
    this.guest = new AgentGuest(this);
  }

  /** True once a program was set. */
  get hasProgram(): boolean {
    return this.program !== undefined;
  }

  /** vcpu_arch_set_entry_point: the program this vCPU runs from its next (first) run. */
  setEntry(program: GuestProgram): void {
    if (typeof program !== 'function')
      throw new TypeError('setEntry: program must be a function (g) => Promise<void>');
    if (this.state !== 'idle')
      throw new Error(`setEntry: vCPU ${this.host.id} has already started its guest program`);
    this.program = program;
  }

  /** Ends the program for good (the vCPU or its VM is being closed): later guest operations throw. */
  dispose(): void {
    this.poison(`vCPU ${this.host.id} was destroyed`);
  }

  // ---- KVM_RUN ------------------------------------------------------------------------------

  /** KVM_RUN for a vCPU with a guest program: resolves with the guest's next exit. */
  run(): Promise<Exit> {
    if (this.current !== undefined) {
      // vcpu->mutex serialises KVM_RUN: a concurrent caller waits for the run in progress.
      return this.current.then(
        () => this.run(),
        () => this.run(),
      );
    }
    if (this.state === 'ended') {
      try {
        return Promise.resolve(this.setExit(this.afterEnd()));
      } catch (e) {
        const end = this.ending;
        return Promise.reject(end?.kind === 'error' ? end.error : e);
      }
    }
    if (this.program === undefined) {
      const e: InternalErrorExit = {
        reason: 'internal-error',
        suberror: INTERNAL_ERROR.EMULATION,
        detail: `vCPU ${this.host.id} has no guest program: call vcpu.setEntry(program) before the first run`,
      };
      return Promise.resolve(this.setExit(e));
    }
    if (this.state === 'idle') {
      try {
        this.install();
      } catch (e) {
        return Promise.reject(e);
      }
    }
    const p = new Promise<Exit>((res, rej) => {
      this.runResolve = res;
      this.runReject = rej;
    });
    this.current = p;
    const wasIdle = this.state === 'idle';
    this.state = 'running';
    const seq = ++this.runSeq;
    this.runStart = performance.now();
    // A program that awaits anything but its own Guest operations never reaches an exit: once every
    // microtask has drained (setImmediate), a run still in flight is stuck.
    setImmediate(() => {
      if (this.runSeq === seq && this.state === 'running') this.stuck();
    });
    if (wasIdle) this.start();
    else {
      const r = this.resumeFn!;
      this.resumeFn = undefined;
      r();
    }
    return p;
  }

  private setExit(e: Exit): Exit {
    this.exit = e;
    return e;
  }

  private install(): void {
    this.agent = agentVmOf(this.host.vm);
    this.pages = installVcpu(this.host, this.agent);
    this.opGva = this.agent.opGva;

    this.mb = new DataView(this.agent.bytes.buffer, this.agent.bytes.byteOffset + this.pages.mailbox, PAGE);
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
    this.ending = { kind: 'halt' };
    this.state = 'ended';
    this.finish(() => this.afterEnd());
  }

  private programFailed(e: unknown): void {
    if (this.state !== 'running' || e instanceof AgentUnwind) return;
    if (this.flushRelease()) return;
    if (e instanceof GuestException) {
      // No handler resolved an architectural exception: the CPU would find no usable IDT entry and
      // triple-fault. Do exactly that: an empty IDT, then UD2 → #UD → #GP → #DF → SHUTDOWN.
      this.state = 'ended';
      this.finish(() => {
        const exit = this.tripleFault(`unhandled ${e.message}`);
        this.ending = { kind: 'replay', exit };
        return exit;
      });
      return;
    }
    const err = e instanceof Error ? e : new Error(String(e));
    const exit: Exit = {
      reason: 'internal-error',
      suberror: INTERNAL_ERROR.GUEST_CRASH,
      detail: `guest program of vCPU ${this.host.id} threw ${err.name}: ${err.message}\n${err.stack ?? ''}`,
    };
    this.ending = { kind: 'replay', exit };
    this.state = 'ended';
    this.finishRun(exit);
  }

  /** Loads an empty IDT and executes UD2; returns the exit the kernel gave (SHUTDOWN on a real CPU). */
  private tripleFault(detail: string): Exit {
    this.post(OP.lidt);
    this.mb!.setUint16(MAILBOX.a0, 0, true);
    this.mb!.setBigUint64(MAILBOX.a0 + 2, 0n, true);
    let e = this.kvmRun();
    if (e === undefined) {
      this.post(OP.ud2);
      e = this.kvmRun();
    }
    if (e === undefined) e = this.host.decodeExit();
    return e.reason === 'shutdown' ? { reason: 'shutdown', detail } : e;
  }

  /** The exit of a run after the program ended: a real HLT each time, or the recorded exit. */
  private afterEnd(): Exit {
    const end = this.ending!;
    if (end.kind === 'replay') return end.exit;
    if (end.kind === 'error') throw end.error;
    for (;;) {
      this.post(OP.hlt);
      const e = this.kvmRun();
      if (e !== undefined) return e;
      // The agent completed the previous HLT (this run resumed it): halt again.
    }
  }

  /** Ends the run in flight with the exit `make` computes (a KvmError from it rejects the run). */
  private finish(make: () => Exit): void {
    let exit: Exit;
    try {
      exit = make();
    } catch (e) {
      if (this.ending === undefined || this.ending.kind === 'halt') this.ending = { kind: 'error', error: e };
      this.current = undefined;
      const rej = this.runReject;
      this.runResolve = undefined;
      this.runReject = undefined;
      const end = this.ending;
      rej?.(end.kind === 'error' ? end.error : e);
      return;
    }
    this.finishRun(exit);
  }

  private finishRun(exit: Exit): void {
    this.current = undefined;
    this.exit = exit;
    const res = this.runResolve;
    this.runResolve = undefined;
    this.runReject = undefined;
    res?.(exit);
  }

  private stuck(): void {
    if (this.flushRelease()) return;
    const detail =
      `guest program of vCPU ${this.host.id} awaited something that is not a guest exit (a timer, host I/O or a ` +
      'host promise): a guest may only await its own Guest operations (out, in, mmio*, hypercall, hlt, …)';
    const e: InternalErrorExit = { reason: 'internal-error', suberror: INTERNAL_ERROR.GUEST_CRASH, detail };
    this.poison(detail);
    this.ending = { kind: 'replay', exit: e };
    this.state = 'ended';
    this.finishRun(e);
  }

  /**
   * Runs a pending slot release before the run ends without another operation (the program threw
   * or is stuck), as the one-operation path would have freed the bit before that point; true when
   * that run itself ended the run in flight (an exit in the release unwinds the program).
   */
  private flushRelease(): boolean {
    if (!this.releasePending) return false;
    this.post(OP.nop);
    try {
      const e = this.kvmRun();
      if (e !== undefined) this.unwind(e, `clearBit ended in a ${e.reason} exit`);
    } catch (u) {
      if (u instanceof AgentUnwind) return true;
      throw u;
    }
    return false;
  }

  private poison(why: string): void {
    this.poisoned ??= new AgentUnwind(why);
    this.resumeFn = undefined;
  }

  /**
   * A synchronous operation met an exit it cannot wait for: the run ends with that exit, the
   * program is unwound, and later runs replay SHUTDOWN or report that the program cannot resume.
   */
  private unwind(exit: Exit, why: string): never {
    const u = new AgentUnwind(why);
    this.poisoned = u;
    this.ending = {
      kind: 'replay',
      exit:
        exit.reason === 'shutdown'
          ? exit
          : {
              reason: 'internal-error',
              suberror: INTERNAL_ERROR.GUEST_CRASH,
              detail: `the guest program of vCPU ${this.host.id} cannot resume: ${why}`,
            },
    };
    this.state = 'ended';
    this.finishRun(exit);
    throw u;
  }

  /** Hands `exit` to the pending run; resolves when the host runs the vCPU again. */
  private exitToHost(exit: Exit): Promise<void> {
    this.state = 'at-exit';
    const p = new Promise<void>((r) => {
      this.resumeFn = r;
    });
    this.finishRun(exit);
    return p;
  }

  // ---- operations ---------------------------------------------------------------------------

  /** Throws when the program acts outside KVM_RUN (or after it was unwound). */
  check(): DataView {
    if (this.poisoned !== undefined) throw this.poisoned;
    if (this.state !== 'running') throw new AgentUnwind(`vCPU ${this.host.id}'s guest acted outside KVM_RUN`);
    return this.mb!;
  }

  /** Writes an operation (its code's GVA), a zero status and its arguments into the mailbox. */
  post(op: number, a0 = 0n, a1 = 0n, a2 = 0n, a3 = 0n, a4 = 0n): void {
    const mb = this.mb!;
    mb.setBigUint64(MAILBOX.op, this.opGva[op]!, true);
    mb.setUint32(MAILBOX.status, STATUS.done, true);
    mb.setBigUint64(MAILBOX.a0, a0, true);
    mb.setBigUint64(MAILBOX.a1, a1, true);
    mb.setBigUint64(MAILBOX.a2, a2, true);
    if (op === OP.readBytes || op === OP.writeBytes) mb.setBigUint64(MAILBOX.cont, this.opGva[OP.nop]!, true);
    // Only VMCALL reads A3 and A4.
    if (op === OP.vmcall) {
      mb.setBigUint64(MAILBOX.a3, a3, true);
      mb.setBigUint64(MAILBOX.a4, a4, true);
    }
  }

  /**
   * KVM_RUN itself failed (EBADF after close, EIO for a dead VM, …): the run in flight rejects with
   * the kernel's error, as a bare run would, the program is unwound, and later runs reject the same way.
   */
  private fail(error: unknown): never {
    const u = new AgentUnwind(`KVM_RUN failed: ${error instanceof Error ? error.message : String(error)}`);
    this.poisoned = u;
    this.ending = { kind: 'error', error };
    this.state = 'ended';
    this.current = undefined;
    const rej = this.runReject;
    this.runResolve = undefined;
    this.runReject = undefined;
    rej?.(error);
    throw u;
  }

  /** One KVM_RUN: undefined when the agent signalled, else the guest's exit. */
  private kvmRun(): Exit | undefined {
    this.ops++;
    let t: Exit | undefined;
    try {
      t = this.host.runOnce();
    } catch (e) {
      this.fail(e);
    }
    const pending = this.releasePending;
    this.releasePending = false;
    if (t === undefined) {
      const v = this.host.runView;
      if (
        v.getUint32(RUN.exit_reason, true) === EXIT_REASON.IO &&
        v.getUint16(RUN.io_port, true) === AGENT_PORT &&
        v.getUint8(RUN.io_direction) === KVM_EXIT_IO_OUT
      ) {
        const mb = this.mb!;
        if (
          !pending ||
          mb.getUint32(MAILBOX.status, true) !== STATUS.exception ||
          mb.getBigUint64(MAILBOX.rip, true) !== this.releaseRip
        )
          return undefined;
        // The release raised it, before the posted operation began: the release's own fault, then
        // that operation, as posted.
        const saved = this.agent!.bytes.slice(this.pages!.mailbox, this.pages!.mailbox + SLOT_SEND_END);
        this.onReleaseFault?.(this.frame('clearBit'));
        this.agent!.bytes.set(saved, this.pages!.mailbox);
        mb.setUint32(MAILBOX.status, STATUS.done, true);
        return this.kvmRun();
      }
      t = this.host.decodeExit();
    }
    // The release of a slot send met an exit (its bitmap was unmapped while the host had the vCPU):
    // it is the program's clearBit, a synchronous operation, that met it. (An I/O exit is never the
    // release's: the next slot send's own OUT exit leaves RIP at its release.)
    if (
      pending &&
      t.reason !== 'io' &&
      this.state === 'running' &&
      this.host.getRegs().rip === this.releaseRip
    )
      this.unwind(
        t,
        `clearBit (the slot release) ended in a ${t.reason} exit, which a synchronous guest operation cannot wait for`,
      );
    return t;
  }

  /**
   * True when the run in flight has lasted longer than the watchdog's deadline: a program that keeps
   * the vCPU busy with operations (a loop, a handler that always retries) is stopped as one stuck
   * in an instruction is, like the simulator's run budget.
   */
  private overBudget(): boolean {
    return performance.now() - this.runStart > this.host.timeoutMs;
  }

  /** Runs a posted synchronous operation; true when it completed, false on an exception. */
  execSync(name: () => string): boolean {
    if (this.overBudget())
      this.unwind(
        { reason: 'intr', budgetExhausted: true },
        `the run went on past its ${this.host.timeoutMs} ms deadline inside the synchronous operation ${name()}; ` +
          'a JavaScript guest cannot be suspended there, so the program was unwound (await an async guest ' +
          'operation in long loops, or raise the run timeout)',
      );
    const e = this.kvmRun();
    if (e !== undefined)
      this.unwind(
        e,
        `${name()} ended in a ${e.reason} exit, which a synchronous guest operation cannot wait for`,
      );
    return this.mb!.getUint32(MAILBOX.status, true) === STATUS.done;
  }

  /**
   * Runs a posted operation that may exit to the host: true when the agent signalled it done, false
   * on an exception, or the exit that completed it — `own` says which exits are the operation's
   * own instruction (its OUT, IN, HLT or MMIO access), after which the agent goes straight on to
   * the next operation and nothing more is to be run for this one. Any other exit is handed to the
   * host and the operation continues at the next run.
   */
  async execAsync(own?: (e: Exit) => boolean): Promise<boolean | Exit> {
    for (;;) {
      if (this.overBudget()) {
        // Past the deadline at an operation that can wait: the run ends with `intr`, the next resumes.
        await this.exitToHost({ reason: 'intr', budgetExhausted: true });
        if (this.poisoned !== undefined) throw this.poisoned;
      }
      const e = this.kvmRun();
      if (e === undefined) return this.mb!.getUint32(MAILBOX.status, true) === STATUS.done;
      const mine = own?.(e) === true;
      await this.exitToHost(e);
      if (this.poisoned !== undefined) throw this.poisoned;
      if (mine) return e;
    }
  }

  /**
   * Runs a posted slot send: its SLOT_SEND_STATUS when the agent signalled, or 'sent' once the host
   * resumed the vCPU after its OUT on `port`. Any other exit met one of its synchronous steps.
   */
  async execSlotSend(port: number, name: () => string): Promise<SlotSendResult> {
    if (this.overBudget())
      this.unwind(
        { reason: 'intr', budgetExhausted: true },
        `the run went on past its ${this.host.timeoutMs} ms deadline inside the synchronous operation ${name()}`,
      );
    const e = this.kvmRun();
    if (e === undefined) {
      const mb = this.mb!;
      if (mb.getUint32(MAILBOX.status, true) === STATUS.exception)
        return this.slotSendFaultedAt(mb.getBigUint64(MAILBOX.rip, true));
      switch (mb.getUint8(MAILBOX.r0)) {
        case SLOT_SEND_STATUS.sent:
          return 'sent';
        case SLOT_SEND_STATUS.taken:
          return 'occupied';
        case SLOT_SEND_STATUS.filled:
          return 'filled';
        default:
          return 'declined';
      }
    }
    if (e.reason !== 'io' || e.direction !== 'out' || e.port !== port)
      this.unwind(
        e,
        `${name()} ended in a ${e.reason} exit, which a synchronous guest operation cannot wait for`,
      );
    const writes = this.host.stateWrites();
    await this.exitToHost(e);
    if (this.poisoned !== undefined) throw this.poisoned;
    this.releasePending = true;
    // The release runs at the start of the next KVM_RUN. Left there, a fault in it would reach the
    // handler after the program went on; it cannot fault unless the host changed the vCPU's state
    // (CR0/CR3/CR4/EFER, MSRs, registers) at the exit, and then it runs now, as the program's
    // clearBit would.
    if (this.onReleaseFault !== undefined && this.host.stateWrites() !== writes) {
      this.post(OP.nop);
      const r = this.kvmRun();
      if (r !== undefined)
        this.unwind(
          r,
          `clearBit ended in a ${r.reason} exit, which a synchronous guest operation cannot wait for`,
        );
    }
    return 'sent';
  }

  /** The step of a slot send whose instruction at `rip` raised an exception, as how far it went. */
  private slotSendFaultedAt(rip: bigint): SlotSendResult {
    const c = this.slotCode;
    if (c !== undefined) {
      const off = rip - this.slotCodeGva;
      return off >= BigInt(c.loads) ? 'filled' : off >= BigInt(c.stores) ? 'reserved' : 'declined';
    }
    const a = this.agent!;
    const op = this.opGva;
    // The stores are the copy ladders' (the byte ladder: 7 pairs and its jump); the loads after
    // them are the tails'.
    if (rip >= a.qwordLadder && rip < a.byteLadder + BigInt(LADDER_PAIRS.byte * LADDER_PAIR.byte + 6))
      return 'reserved';
    if (rip >= op[OP.slotSendTail]! && rip < this.releaseRip) return 'filled';
    return 'declined';
  }

  /**
   * Writes a slot send: as code emitted into the mailbox page where its data is short enough (see
   * slot-code.ts), else as op_slotsend with the mailbox fields and the data in the data page.
   */
  postSlotSend(req: SlotSend): void {
    const mb = this.mb!;
    mb.setUint32(MAILBOX.status, STATUS.done, true);
    mb.setBigUint64(MAILBOX.r0, 0n, true);
    mb.setBigUint64(SLOT_SEND.valueMax, 0xffff_ffffn, true);
    const at = AGENT_GVA + BigInt(this.pages!.mailbox + SLOT_CODE_OFFSET);
    this.slotCodeBuffer ??= new SlotCodeBuffer(
      this.agent!.bytes.subarray(this.pages!.mailbox + SLOT_CODE_OFFSET, this.pages!.mailbox + PAGE),
    );
    const code = this.slotCodeBuffer.write(req);
    this.slotCode = code;
    if (code !== undefined) {
      this.slotCodeGva = at;
      this.releaseRip = at + BigInt(code.release);
      mb.setBigUint64(MAILBOX.op, at, true);
      return;
    }
    this.releaseRip = this.opGva[OP.slotSendTail]! + BigInt(RELEASE_OFFSET);
    this.data().set(req.data);
    mb.setBigUint64(MAILBOX.op, this.opGva[OP.slotSend]!, true);
    mb.setBigUint64(SLOT_SEND.poolGlobal, req.poolGlobal, true);
    mb.setBigUint64(SLOT_SEND.pool, req.pool, true);
    mb.setBigUint64(SLOT_SEND.countGlobal, req.countGlobal, true);
    mb.setBigUint64(SLOT_SEND.count, req.count, true);
    mb.setBigUint64(SLOT_SEND.bit, BigInt(req.bit), true);
    mb.setUint32(SLOT_SEND.port, req.port, true);
    mb.setBigUint64(MAILBOX.cont, this.opGva[OP.slotSendTail]!, true);
    mb.setBigUint64(SLOT_SEND.slot, req.slot, true);
    mb.setBigUint64(SLOT_SEND.ladder, this.ladderEntry(req.data.length), true);
    mb.setBigUint64(SLOT_SEND.length, BigInt(req.data.length), true);
    mb.setBigUint64(SLOT_SEND.value, req.value, true);
    mb.setBigUint64(SLOT_SEND.selectorGlobal, req.selectorGlobal, true);
    mb.setBigUint64(SLOT_SEND.selector, req.selector, true);
  }

  /** The exception the agent recorded, as the frame a handler sees. */
  frame(operation: string): ExceptionFrame {
    const mb = this.mb!;
    const vector = Number(mb.getBigUint64(MAILBOX.vector, true));
    const errorCode = VECTORS_WITH_ERROR_CODE.has(vector)
      ? Number(mb.getBigUint64(MAILBOX.errorCode, true) & 0xffff_ffffn)
      : undefined;
    const rip = mb.getBigUint64(MAILBOX.rip, true);
    const detail = `${describeVector(vector, errorCode)} (raised by the CPU at agent RIP ${hex(rip)})`;
    if (vector === VECTOR.PF)
      return { vector, errorCode, cr2: mb.getBigUint64(MAILBOX.cr2, true), operation, detail };
    return { vector, errorCode, operation, detail };
  }

  /** The agent's data page. */
  data(): Uint8Array {
    const b = this.agent!.bytes;
    return b.subarray(this.pages!.data, this.pages!.data + PAGE);
  }

  /** Loads the agent's IDT (true) or an empty one (false). */
  loadIdt(full: boolean): void {
    this.post(OP.lidt);
    this.mb!.setUint16(MAILBOX.a0, full ? AGENT_IDT_GATES * 16 - 1 : 0, true);
    this.mb!.setBigUint64(MAILBOX.a0 + 2, full ? agentPageGva(AGENT_PAGE.idt) : 0n, true);
    this.execSync(() => 'lidt');
  }

  /** Where readBytes / writeBytes of `n` bytes (1..4096) enter the agent's copy ladders. */
  ladderEntry(n: number): bigint {
    const a = this.agent!;
    return n >= 8
      ? a.qwordLadder + BigInt((LADDER_PAIRS.qword - Math.floor(n / 8)) * LADDER_PAIR.qword)
      : a.byteLadder + BigInt((LADDER_PAIRS.byte - n) * LADDER_PAIR.byte);
  }

  /** Points the MMIO window at `gpa`'s page; returns the GVA that reaches `gpa`. */
  mmioWindow(gpa: bigint): bigint {
    this.agent!.setPte(MMIO_WINDOW_PTE, gpa & ~0xfffn);
    return MMIO_WINDOW_GVA + (gpa & 0xfffn);
  }

  /** Before a CR3 load: maps the agent in the new root too, when memory backs it. */
  prepareCr3(value: bigint): void {
    const raw = this.host.getSregsRaw();
    const cr4 = new DataView(raw.buffer, raw.byteOffset).getBigUint64(248, true);
    try {
      installRootEntry(this.host, value, (cr4 & CR4_LA57) !== 0n);
    } catch {
      // An unbacked or conflicting root: the CPU meets it as it is (the agent's next fetch faults).
    }
  }
}

function describeVector(vector: number, errorCode: number | undefined): string {
  if (vector === VECTOR.PF && errorCode !== undefined) {
    const parts = [
      errorCode & 8
        ? 'reserved bit set in an entry'
        : errorCode & 1
          ? 'protection violation'
          : 'entry not present',
      errorCode & 16 ? 'instruction fetch' : errorCode & 2 ? 'write' : 'read',
    ];
    return `page fault: ${parts.join(', ')}`;
  }
  switch (vector) {
    case VECTOR.GP:
      return 'general-protection fault';
    case VECTOR.UD:
      return 'invalid opcode';
    case VECTOR.DE:
      return 'divide error';
    default:
      return `exception ${vectorName(vector)}`;
  }
}

/** The Guest of one vCPU run through the agent. */
export class AgentGuest implements Guest {
  private handler: ExceptionHandler | undefined;
  /** The agent's IDT is loaded at the first run; with no handler the next operation swaps in the empty one. */
  private idtEmpty = false;
  /** No exception entry (no handler): exceptions triple-fault in the instruction. */
  private wantEmpty = true;

  constructor(private readonly r: AgentRunner) {
    // XGETBV / XSAVE / XRSTOR only where this host's KVM executes them (KVM's CPUID offers XSAVE
    // and a probe ran them; PVM's instruction emulator has none of them: see xprobe.ts).
    const x = r.host.xsaveSupport();
    if (x.xgetbv) this.xgetbv = (index) => this.execXgetbv(index);
    if (x.xsave) this.xsave = (gva, rfbm) => this.xstate(OP.xsave, 'xsave', gva, rfbm);
    if (x.xrstor) this.xrstor = (gva, rfbm) => this.xstate(OP.xrstor, 'xrstor', gva, rfbm);
  }

  get vcpuId(): number {
    return this.r.host.id;
  }

  /** A snapshot of the vCPU's general-purpose registers (KVM_GET_REGS; they are the agent's). */
  get regs(): Regs {
    return this.r.host.getRegs();
  }

  setExceptionHandler(handler: ExceptionHandler | undefined): void {
    if (handler !== undefined && typeof handler !== 'function')
      throw new TypeError('setExceptionHandler: handler must be a function or undefined');
    this.handler = handler;
    this.wantEmpty = handler === undefined;
  }

  /** Checks the program may act, and loads the IDT its exception entry asks for. */
  private ready(): void {
    this.r.check();
    if (this.wantEmpty !== this.idtEmpty) {
      this.r.loadIdt(!this.wantEmpty);
      this.idtEmpty = this.wantEmpty;
    }
  }

  private deliver(frame: ExceptionFrame): Resume {
    const h = this.handler;
    // Only reachable with the agent's IDT loaded, i.e. with a handler; kept for safety.
    if (h === undefined) throw new GuestException(frame);
    let res: unknown;
    try {
      res = h(frame);
    } catch (e) {
      if (e instanceof AgentUnwind) throw e;
      throw new GuestException({
        ...frame,
        detail: `${frame.detail}; the exception handler threw ${e instanceof Error ? e.message : String(e)}`,
      });
    }
    if (res !== 'retry' && res !== 'skip')
      throw new GuestException({ ...frame, detail: `${frame.detail}; the handler returned ${String(res)}` });
    return res;
  }

  /** Runs a synchronous operation with exceptions resolved by the handler; false when skipped. */
  private sync(op: number, name: () => string, a0 = 0n, a1 = 0n, a2 = 0n): boolean {
    for (;;) {
      this.ready();
      this.r.post(op, a0, a1, a2);
      if (this.r.execSync(name)) return true;
      if (this.deliver(this.r.frame(name())) === 'skip') return false;
    }
  }

  /**
   * Runs an operation that may exit: the exit that completed it (see execAsync), true when the agent
   * signalled it done, false when the handler skipped it.
   */
  private async async(
    op: number,
    name: () => string,
    own: ((e: Exit) => boolean) | undefined,
    a0 = 0n,
    a1 = 0n,
    a2 = 0n,
    a3 = 0n,
    a4 = 0n,
  ): Promise<boolean | Exit> {
    for (;;) {
      this.ready();
      this.r.post(op, a0, a1, a2, a3, a4);
      const r = await this.r.execAsync(own);
      if (r !== false) return r;
      if (this.deliver(this.r.frame(name())) === 'skip') return false;
    }
  }

  private r0(): bigint {
    return this.r.check().getBigUint64(MAILBOX.r0, true);
  }

  // ---- memory -------------------------------------------------------------------------------

  private read(op: number, what: string, gva: bigint): bigint {
    checkGva(what, gva);
    return this.sync(op, () => `${what}(${hex(gva)})`, gva) ? this.r0() : 0n;
  }

  readU8(gva: bigint): number {
    return Number(this.read(OP.read8, 'readU8', gva));
  }
  readU16(gva: bigint): number {
    return Number(this.read(OP.read16, 'readU16', gva));
  }
  readU32(gva: bigint): number {
    return Number(this.read(OP.read32, 'readU32', gva));
  }
  readU64(gva: bigint): bigint {
    return this.read(OP.read64, 'readU64', gva);
  }

  /**
   * A load that may exit: the agent executes the MOV as an operation that may leave KVM_RUN, so an
   * MMIO access ends the run with the real `mmio` exit (the value is the data the host left in it)
   * and a memory fault with the real `memory-fault` exit, after which the next run re-executes the
   * instruction, as KVM resumes the vCPU.
   */
  async readAsync(gva: bigint, size: AccessSize): Promise<bigint> {
    checkGva('readAsync', gva);
    if (size !== 1 && size !== 2 && size !== 4 && size !== 8)
      throw new TypeError(
        `readAsync: size must be 1, 2, 4 or 8, got ${typeof size === 'number' ? size : typeof size}`,
      );
    const op = ASYNC_READ[size]!;
    // Every exit (MMIO, a memory fault) goes to the host; the next KVM_RUN completes the MOV (a
    // read with the data the host left in kvm_run) and the agent reports the loaded value in R0.
    if (!(await this.async(op, () => `readAsync(${hex(gva)})`, undefined, gva))) return 0n;
    return BigInt.asUintN(size * 8, this.r0());
  }

  /** A store that may exit (see readAsync): MMIO is an `mmio` write exit, a memory fault is retried. */
  async writeAsync(gva: bigint, size: AccessSize, value: bigint): Promise<void> {
    checkGva('writeAsync', gva);
    if (size !== 1 && size !== 2 && size !== 4 && size !== 8)
      throw new TypeError(
        `writeAsync: size must be 1, 2, 4 or 8, got ${typeof size === 'number' ? size : typeof size}`,
      );
    const op = ASYNC_WRITE[size]!;
    if (typeof value !== 'bigint')
      throw new TypeError(`writeAsync: value must be a bigint, got ${typeof value}`);
    await this.async(op, () => `writeAsync(${hex(gva)})`, undefined, gva, BigInt.asUintN(size * 8, value));
  }

  private write(op: number, what: string, gva: bigint, v: bigint): void {
    checkGva(what, gva);
    this.sync(op, () => `${what}(${hex(gva)})`, gva, v);
  }

  writeU8(gva: bigint, v: number): void {
    this.write(OP.write8, 'writeU8', gva, BigInt(checkNum('writeU8', v) & 0xff));
  }
  writeU16(gva: bigint, v: number): void {
    this.write(OP.write16, 'writeU16', gva, BigInt(checkNum('writeU16', v) & 0xffff));
  }
  writeU32(gva: bigint, v: number): void {
    this.write(OP.write32, 'writeU32', gva, BigInt(checkNum('writeU32', v) >>> 0));
  }
  writeU64(gva: bigint, v: bigint): void {
    if (typeof v !== 'bigint') throw new TypeError(`writeU64: value must be a bigint, got ${typeof v}`);
    this.write(OP.write64, 'writeU64', gva, BigInt.asUintN(64, v));
  }

  readBytes(gva: bigint, length: number): Uint8Array {
    if (typeof length !== 'number' || !Number.isInteger(length) || length < 0)
      throw new TypeError(`readBytes: length must be a non-negative integer, got ${String(length)}`);
    checkGva('readBytes', gva);
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      // Page by page, as the simulator: a skipped page reads as zeros.
      const at = BigInt.asUintN(64, gva + BigInt(done));
      const n = Math.min(length - done, PAGE - Number(at & 0xfffn));
      if (this.sync(OP.readBytes, () => `readBytes(${hex(at)})`, at, this.r.ladderEntry(n), BigInt(n)))
        out.set(this.r.data().subarray(0, n), done);
      done += n;
    }
    return out;
  }

  writeBytes(gva: bigint, data: Uint8Array): void {
    if (!(data instanceof Uint8Array)) throw new TypeError('writeBytes: data must be a Uint8Array');
    checkGva('writeBytes', gva);
    let done = 0;
    while (done < data.length) {
      const at = BigInt.asUintN(64, gva + BigInt(done));
      const n = Math.min(data.length - done, PAGE - Number(at & 0xfffn));
      this.r.check();
      this.r.data().set(data.subarray(done, done + n));
      this.sync(OP.writeBytes, () => `writeBytes(${hex(at)})`, at, this.r.ladderEntry(n), BigInt(n));
      done += n;
    }
  }

  private bitOp(op: number, what: string, gva: bigint, bit: number): boolean {
    if (typeof bit !== 'number' || !Number.isInteger(bit) || bit < 0)
      throw new TypeError(`${what}: bit must be a non-negative integer, got ${String(bit)}`);
    checkGva(what, gva);
    // The u64 word holding the bit, then LOCK BTS/BTR on it (as the simulator addresses it).
    const word = BigInt.asUintN(64, gva + BigInt(Math.floor(bit / 64)) * 8n);
    // The agent stores the old bit with SETC into R0's low byte.
    return this.sync(op, () => `${what}(${hex(word)})`, word, BigInt(bit % 64))
      ? this.r.check().getUint8(MAILBOX.r0) !== 0
      : false;
  }

  testAndSetBit(gva: bigint, bit: number): boolean {
    return this.bitOp(OP.bts, 'testAndSetBit', gva, bit);
  }

  clearBit(gva: bigint, bit: number): void {
    this.bitOp(OP.btr, 'clearBit', gva, bit);
  }

  global(name: string): bigint {
    if (typeof name !== 'string') throw new TypeError('global: name must be a string');
    const symbols = this.r.host.guestSymbols();
    const v = symbols.get(name);
    if (v === undefined)
      throw new Error(
        `global ${JSON.stringify(name)} is not in this VM's symbol table (${symbols.size} symbols; the host sets them with vm.setGuestSymbols)`,
      );
    return v;
  }

  // ---- CPUID, MSRs, control registers ---------------------------------------------------------

  cpuid(leaf: number, subleaf = 0): CpuidEntry {
    if (typeof leaf !== 'number' || !Number.isInteger(leaf))
      throw new TypeError(`cpuid: leaf must be an integer, got ${String(leaf)}`);
    if (typeof subleaf !== 'number' || !Number.isInteger(subleaf))
      throw new TypeError(`cpuid: subleaf must be an integer, got ${String(subleaf)}`);
    const entry = { function: leaf >>> 0, index: subleaf >>> 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 };
    if (!this.sync(OP.cpuid, () => `cpuid(${hex(leaf >>> 0)})`, BigInt(leaf >>> 0), BigInt(subleaf >>> 0)))
      return entry;
    const mb = this.r.check();
    entry.eax = mb.getUint32(MAILBOX.r0, true);
    entry.ebx = mb.getUint32(MAILBOX.r1, true);
    entry.ecx = mb.getUint32(MAILBOX.r2, true);
    entry.edx = mb.getUint32(MAILBOX.r3, true);
    return entry;
  }

  rdmsr(msr: number): bigint {
    checkMsr('rdmsr', msr);
    return this.sync(OP.rdmsr, () => `rdmsr(${hex(msr >>> 0)})`, BigInt(msr >>> 0)) ? this.r0() : 0n;
  }

  wrmsr(msr: number, value: bigint): void {
    checkMsr('wrmsr', msr);
    if (typeof value !== 'bigint') throw new TypeError(`wrmsr: value must be a bigint, got ${typeof value}`);
    const v = BigInt.asUintN(64, value);
    this.sync(OP.wrmsr, () => `wrmsr(${hex(msr >>> 0)}, ${hex(v)})`, BigInt(msr >>> 0), v);
  }

  readCr(n: ReadableCr): bigint {
    if (n !== 0 && n !== 2 && n !== 3 && n !== 4)
      throw new TypeError(`readCr: control register must be 0, 2, 3 or 4, got ${String(n)}`);
    return this.sync(OP.readCr, () => `readCr(${n})`, BigInt(n)) ? this.r0() : 0n;
  }

  writeCr(n: WritableCr, value: bigint): void {
    if (n !== 0 && n !== 3 && n !== 4)
      throw new TypeError(`writeCr: control register must be 0, 3 or 4, got ${String(n)}`);
    if (typeof value !== 'bigint')
      throw new TypeError(`writeCr: value must be a bigint, got ${typeof value}`);
    const v = BigInt.asUintN(64, value);
    if (n === 3) {
      this.r.check();
      this.r.prepareCr3(v);
    }
    this.sync(OP.writeCr, () => `writeCr(${n}, ${hex(v)})`, BigInt(n), v);
  }

  // ---- XSAVE --------------------------------------------------------------------------------
  // The real instructions: #UD without CR4.OSXSAVE (the guest's own CR4: testkit vCPUs have it and
  // XCR0 set, as vcpu_init_sregs / vcpu_init_xcrs do), #GP for an invalid XCR value or an area that
  // is not 64-byte aligned, #PF through the guest's page tables — each delivered like any exception.

  /** XGETBV (where this host's KVM executes it: see xprobe.ts). */
  xgetbv?: (index: number) => bigint;
  /** XSAVE64 (where this host's KVM executes it). */
  xsave?: (gva: bigint, rfbm: bigint) => void;
  /** XRSTOR64 (where this host's KVM executes it). */
  xrstor?: (gva: bigint, rfbm: bigint) => void;

  private execXgetbv(index: number): bigint {
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index > 0xffff_ffff)
      throw new TypeError(`xgetbv: index must be a u32, got ${String(index)}`);
    return this.sync(OP.xgetbv, () => `xgetbv(${index})`, BigInt(index)) ? this.r0() : 0n;
  }

  /** XSETBV: KVM intercepts it on every host (kvm_emulate_xsetbv(); PVM's emulator: em_xsetbv). */
  xsetbv(index: number, value: bigint): void {
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index > 0xffff_ffff)
      throw new TypeError(`xsetbv: index must be a u32, got ${String(index)}`);
    if (typeof value !== 'bigint') throw new TypeError(`xsetbv: value must be a bigint, got ${typeof value}`);
    const v = BigInt.asUintN(64, value);
    this.sync(OP.xsetbv, () => `xsetbv(${index}, ${hex(v)})`, BigInt(index), v);
  }

  private xstate(op: number, what: string, gva: bigint, rfbm: bigint): void {
    checkGva(what, gva);
    if (typeof rfbm !== 'bigint') throw new TypeError(`${what}: rfbm must be a bigint, got ${typeof rfbm}`);
    const m = BigInt.asUintN(64, rfbm);
    this.sync(op, () => `${what}(${hex(gva)}, ${hex(m)})`, gva, m);
  }

  // ---- exits --------------------------------------------------------------------------------

  async out(port: number, size: IoSize, value: number): Promise<void> {
    checkPort('out', port, size);
    if (typeof value !== 'number' || !Number.isInteger(value))
      throw new TypeError(`out: value must be an integer, got ${String(value)}`);
    const own = (e: Exit) => e.reason === 'io' && e.direction === 'out' && e.port === port;
    const op = size === 1 ? OP.out8 : size === 2 ? OP.out16 : OP.out32;
    await this.async(op, () => `out(${hex(port)})`, own, BigInt(port), BigInt(value >>> 0));
  }

  async in(port: number, size: IoSize): Promise<number> {
    checkPort('in', port, size);
    const own = (e: Exit) => e.reason === 'io' && e.direction === 'in' && e.port === port;
    const op = size === 1 ? OP.in8 : size === 2 ? OP.in16 : OP.in32;
    const r = await this.async(op, () => `in(${hex(port)})`, own, BigInt(port));
    if (r === false) return 0;
    // The value IN loads is the data the host handed back in the exit (or, without an exit, R0).
    const v = r === true ? Number(this.r0() & 0xffff_ffffn) : Number(le(exitData(r), size));
    return size === 4 ? v >>> 0 : v & (size === 2 ? 0xffff : 0xff);
  }

  async mmioWrite(gpa: bigint, size: number, value: bigint): Promise<void> {
    checkMmio('mmioWrite', gpa, size);
    if (typeof value !== 'bigint')
      throw new TypeError(`mmioWrite: value must be a bigint, got ${typeof value}`);
    this.ready();
    const gva = this.r.mmioWindow(gpa);
    const own = (e: Exit) => e.reason === 'mmio' && e.isWrite && e.gpa === gpa;
    await this.async(
      MMIO_WRITE[size]!,
      () => `mmioWrite(${hex(gpa)})`,
      own,
      gva,
      BigInt.asUintN(size * 8, value),
    );
  }

  async mmioRead(gpa: bigint, size: number): Promise<bigint> {
    checkMmio('mmioRead', gpa, size);
    this.ready();
    const gva = this.r.mmioWindow(gpa);
    const own = (e: Exit) => e.reason === 'mmio' && !e.isWrite && e.gpa === gpa;
    const r = await this.async(MMIO_READ[size]!, () => `mmioRead(${hex(gpa)})`, own, gva);
    if (r === false) return 0n;
    return BigInt.asUintN(size * 8, r === true ? this.r0() : le(exitData(r), size));
  }

  async hypercall(nr: bigint, args: readonly bigint[] = []): Promise<bigint> {
    if (typeof nr !== 'bigint') throw new TypeError(`hypercall: nr must be a bigint, got ${typeof nr}`);
    if (!Array.isArray(args) || args.length > 4 || args.some((a) => typeof a !== 'bigint'))
      throw new TypeError('hypercall: args must be up to 4 bigints (RBX, RCX, RDX, RSI)');
    const a = [0, 1, 2, 3].map((i) => BigInt.asUintN(64, args[i] ?? 0n)) as [bigint, bigint, bigint, bigint];
    if (!(await this.async(OP.vmcall, () => `hypercall(${nr})`, undefined, BigInt.asUintN(64, nr), ...a)))
      return 0n;
    return this.r0();
  }

  async vmgexit(): Promise<void> {
    await this.async(OP.vmgexit, () => 'vmgexit', undefined);
  }

  async tdcall(leaf: bigint, regs: TdcallRegs): Promise<TdcallRegs> {
    if (typeof leaf !== 'bigint') throw new TypeError(`tdcall: leaf must be a bigint, got ${typeof leaf}`);
    if (typeof regs !== 'object' || regs === null) throw new TypeError('tdcall: regs must be an object');
    if (!(await this.async(OP.tdcall, () => `tdcall(${leaf})`, undefined, BigInt.asUintN(64, leaf))))
      return {};
    return { rax: this.r0() };
  }

  pvalidate(gva: bigint, validate: boolean): number {
    if (typeof validate !== 'boolean')
      throw new TypeError(`pvalidate: validate must be a boolean, got ${typeof validate}`);
    checkGva('pvalidate', gva);
    if (!this.sync(OP.pvalidate, () => `pvalidate(${hex(gva)})`, gva, validate ? 1n : 0n)) return 0;
    return Number(this.r0() & 0xffff_ffffn);
  }

  async hlt(): Promise<void> {
    await this.async(
      OP.hlt,
      () => 'hlt',
      (e) => e.reason === 'hlt',
    );
  }

  ud2(): never {
    this.sync(OP.ud2, () => 'ud2');
    // Only a handler's skip gets here (UD2 always faults).
    return undefined as never;
  }

  /**
   * The slot send as one agent operation: one KVM_RUN to its OUT exit instead of seven. The agent
   * releases the bit when the host resumes the vCPU, at the start of the next operation's run; an
   * exception there reaches the handler as the program's clearBit's (see execSlotSend).
   */
  async slotSend(req: SlotSend): Promise<SlotSendResult> {
    if (typeof req !== 'object' || req === null) throw new TypeError('slotSend: req must be an object');
    for (const k of ['poolGlobal', 'countGlobal', 'slot', 'value', 'selectorGlobal'] as const)
      checkGva(`slotSend ${k}`, req[k]);
    for (const k of ['pool', 'count', 'selector'] as const)
      if (typeof req[k] !== 'bigint' || req[k] < 0n || req[k] > U64)
        throw new TypeError(`slotSend: ${k} must be a u64 bigint, got ${String(req[k])}`);
    if (typeof req.bit !== 'number' || !Number.isInteger(req.bit) || req.bit < 0 || req.bit > 0x7fff_ffff)
      throw new TypeError(`slotSend: bit must be an integer in 0..0x7fffffff, got ${String(req.bit)}`);
    if (!(req.data instanceof Uint8Array)) throw new TypeError('slotSend: data must be a Uint8Array');
    checkPort('slotSend', req.port, 4);
    const n = req.data.length;
    // One ladder copies within one page, as writeBytes does page by page.
    if (n === 0 || Number(req.slot & 0xfffn) + n > PAGE) return 'declined';
    this.ready();
    this.r.postSlotSend(req);
    const word = BigInt.asUintN(64, req.pool + BigInt(Math.floor(req.bit / 64)) * 8n);
    // Only with a handler can the release raise an exception the program sees (without one it
    // triple-faults in the LOCK BTR): then it is the program's clearBit's, retried or skipped.
    this.r.onReleaseFault =
      this.handler === undefined
        ? undefined
        : (frame) => {
            const what = `clearBit(${hex(word)})`;
            if (this.deliver({ ...frame, operation: what }) === 'retry') this.clearBit(req.pool, req.bit);
          };
    return this.r.execSlotSend(req.port, () => `slotSend(${hex(req.slot)})`);
  }
}

/** Offset in the mailbox page of the emitted slot-send code (past every mailbox field). */
const SLOT_CODE_OFFSET = 0x800;

/** Bytes of the mailbox a slot send uses (saved around a release's fault). */
const SLOT_SEND_END = SLOT_SEND.valueMax + 8;

/** Offset of the slot release (LOCK BTR) in op_slotsend_tail: the one `f0 4d 0f b3 08` after it. */
const RELEASE_OFFSET = (() => {
  const code = new DataView(AGENT_CODE.buffer, AGENT_CODE.byteOffset);
  const ops = code.getUint32(CODE_HEADER.ops, true);
  const tail = code.getUint32(ops + 4 * OP.slotSendTail, true);
  const btr = [0xf0, 0x4d, 0x0f, 0xb3, 0x08];
  for (let i = tail; i < AGENT_CODE.length - btr.length; i++)
    if (btr.every((b, k) => AGENT_CODE[i + k] === b)) return i - tail;
  throw new Error('agent code: op_slotsend_tail has no LOCK BTR');
})();

/** The MMIO window operations by access size. */
/** The plain load / store operations readAsync / writeAsync run as instructions that may exit. */
const ASYNC_READ: Record<number, number | undefined> = {
  1: OP.read8,
  2: OP.read16,
  4: OP.read32,
  8: OP.read64,
};
const ASYNC_WRITE: Record<number, number | undefined> = {
  1: OP.write8,
  2: OP.write16,
  4: OP.write32,
  8: OP.write64,
};

const MMIO_READ: Record<number, number> = {
  1: OP.mmioRead8,
  2: OP.mmioRead16,
  4: OP.mmioRead32,
  8: OP.mmioRead64,
};
const MMIO_WRITE: Record<number, number> = {
  1: OP.mmioWrite8,
  2: OP.mmioWrite16,
  4: OP.mmioWrite32,
  8: OP.mmioWrite64,
};

/** The data of an io or mmio exit (what the host wrote into it for an IN or an MMIO read). */
function exitData(e: Exit): Uint8Array {
  return e.reason === 'io' || e.reason === 'mmio' ? e.data : new Uint8Array(0);
}

/** The little-endian value of the first `size` bytes of `b`. */
function le(b: Uint8Array, size: number): bigint {
  let v = 0n;
  for (let i = Math.min(size, b.length) - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  return v;
}

function checkGva(op: string, gva: bigint): void {
  if (typeof gva !== 'bigint') throw new TypeError(`${op}: gva must be a bigint, got ${typeof gva}`);
  if (gva < 0n || gva > U64) throw new RangeError(`${op}: gva ${gva} is not a u64`);
}

function checkNum(op: string, v: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v))
    throw new TypeError(`${op}: value must be an integer, got ${String(v)}`);
  return v;
}

function checkMsr(op: string, msr: number): void {
  if (typeof msr !== 'number' || !Number.isInteger(msr))
    throw new TypeError(`${op}: msr must be an integer, got ${String(msr)}`);
}

function checkPort(op: string, port: number, size: number): void {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 0xffff)
    throw new TypeError(`${op}: port must be an integer in 0..0xffff, got ${String(port)}`);
  if (size !== 1 && size !== 2 && size !== 4)
    throw new TypeError(`${op}: size must be 1, 2 or 4, got ${String(size)}`);
  if (port === AGENT_PORT)
    throw new RangeError(`${op}: port ${hex(AGENT_PORT)} is reserved for kvm-linux's guest agent`);
}

function checkMmio(op: string, gpa: bigint, size: number): void {
  if (typeof gpa !== 'bigint' || gpa < 0n || gpa > U64)
    throw new TypeError(
      `${op}: gpa must be a u64 bigint, got ${typeof gpa === 'bigint' ? String(gpa) : typeof gpa}`,
    );
  if (size !== 1 && size !== 2 && size !== 4 && size !== 8)
    throw new TypeError(`${op}: size must be 1, 2, 4 or 8, got ${String(size)}`);
}
