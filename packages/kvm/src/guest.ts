// The guest's side of one vCPU: what guest programs and guest runtimes are written against.
// A backend implements it for the vCPU it runs; memory accesses go through the guest's own page
// tables, instructions that trap do so with the architecture's exceptions.

import type { CpuidEntry, Regs } from './regs.js';
import type { Gpa, Gva } from '@kvmtest/guest-memory';

/** x86 exception vectors the framework names. */
export const VECTOR = {
  DE: 0,
  DB: 1,
  BP: 3,
  UD: 6,
  DF: 8,
  GP: 13,
  PF: 14,
  MC: 18,
  VE: 20,
  CP: 21,
  VC: 29,
} as const;

/** Mnemonic of a vector (`#PF`), or its number. */
export function vectorName(vector: number): string {
  const hit = Object.entries(VECTOR).find(([, v]) => v === vector);
  return hit ? `#${hit[0]}` : `vector ${vector}`;
}

/** #PF error-code bits (P, W/R, U/S, RSVD, I/D). */
export const PF_ERROR = {
  PRESENT: 1,
  WRITE: 2,
  USER: 4,
  RSVD: 8,
  FETCH: 16,
} as const;

/** What the CPU pushes for an exception, plus a readable account of the faulting operation. */
export interface ExceptionFrame {
  readonly vector: number;
  readonly errorCode: number | undefined;
  /** Faulting linear address for #PF (CR2). */
  readonly cr2?: Gva;
  /** The operation that faulted, e.g. `readU64(0xdead000)`. */
  readonly operation: string;
  /** Why it faulted, e.g. `PTE not present at level 1`. */
  readonly detail: string;
}

/**
 * How an exception handler resumes the guest: `retry` re-executes the faulting operation (the
 * handler fixed its cause), `skip` abandons it (a read then yields 0, as with the selftests'
 * exception fix-up).
 */
export type ExceptionResume = 'retry' | 'skip';

/**
 * The guest's exception entry (its IDT, reduced to one dispatcher). It runs synchronously inside the
 * faulting operation; throwing from it makes the operation throw GuestException. Having none (an
 * empty IDT) is a triple fault: the run ends with a `shutdown` exit and the program cannot go on.
 */
export type ExceptionHandler = (frame: ExceptionFrame) => ExceptionResume;

/** An architectural exception no handler resolved; thrown out of the faulting guest operation. */
export class GuestException extends Error {
  override readonly name = 'GuestException';
  readonly frame: ExceptionFrame;
  constructor(frame: ExceptionFrame) {
    const ec = frame.errorCode === undefined ? '' : ` error code 0x${frame.errorCode.toString(16)}`;
    const cr2 = frame.cr2 === undefined ? '' : ` at 0x${frame.cr2.toString(16)}`;
    super(`${vectorName(frame.vector)}${ec}${cr2} in ${frame.operation}: ${frame.detail}`);
    this.frame = frame;
  }
}

/** Registers a TDCALL passes and returns (RAX = leaf, RCX = exposed-register bitmap, R10–R15 arguments). */
export interface TdcallRegs {
  rax?: bigint;
  rcx?: bigint;
  rdx?: bigint;
  r8?: bigint;
  r9?: bigint;
  r10?: bigint;
  r11?: bigint;
  r12?: bigint;
  r13?: bigint;
  r14?: bigint;
  r15?: bigint;
}

/** Port-I/O access widths. */
export type IoSize = 1 | 2 | 4;

/** Control registers a guest reads with MOV from CR (CR2 holds the last #PF's linear address). */
export type ReadableCr = 0 | 2 | 3 | 4;

/** Control registers a guest writes with MOV to CR (EFER is written with `wrmsr(0xC0000080, …)`). */
export type WritableCr = 0 | 3 | 4;

/** Widths of a memory access that may exit (readAsync / writeAsync), in bytes. */
export type AccessSize = 1 | 2 | 4 | 8;

/**
 * A ucall-shaped slot send (Guest.slotSend), step by step: load `poolGlobal` (it must hold `pool`),
 * load `countGlobal` (it must hold `count`), LOCK BTS of `bit` in the bitmap at `pool`, store
 * `data` at `slot` (within one page), load the u64 at `value`, load `selectorGlobal` (it must
 * hold `selector`), then, if the value fits 32 bits, a 4-byte OUT of it on `port`; once the host
 * resumes the vCPU, LOCK BTR of the bit (before the guest's next operation: with an exception
 * handler installed, before slotSend resolves).
 */
export interface SlotSend {
  readonly poolGlobal: bigint;
  readonly pool: bigint;
  readonly countGlobal: bigint;
  readonly count: bigint;
  readonly bit: number;
  readonly slot: bigint;
  readonly data: Uint8Array;
  readonly value: bigint;
  readonly selectorGlobal: bigint;
  readonly selector: bigint;
  readonly port: number;
}

/**
 * How far a slot send went, for the caller to go on from there: `sent` (all of it); `declined`
 * (nothing but loads: a global held another value, an exception in the loads or the LOCK BTS, or
 * the backend does not take this one: start over); `occupied` (the bit was already set, nothing
 * stored: try the next bit); `reserved` (the bit is now set, an exception in the store: store,
 * then go on); `filled` (bit set, data stored, nothing sent: the selector held another value, the
 * value does not fit 32 bits, or an exception in the loads after the store: load the value, send
 * it, free the bit). A step that raised an exception raises it again when the caller performs it.
 */
export type SlotSendResult = 'sent' | 'declined' | 'occupied' | 'reserved' | 'filled';

/**
 * One vCPU as its guest sees it. Addresses are guest-virtual (through the page tables in CR3)
 * unless named `gpa`. Anything that may exit to the host returns a promise the guest awaits.
 *
 * The synchronous memory accessors (readU8 … writeBytes, the bit operations) never exit: an access
 * that would need the host — MMIO (no memslot behind the GPA, a write to a READONLY slot) or a
 * memory fault (a private/shared mismatch, a slot without backing) — cannot be suspended in a
 * synchronous call, so it ends the guest program with an error that names the async form.
 * `readAsync` / `writeAsync` are the same accesses as an instruction the vCPU may exit on: MMIO
 * becomes an `mmio` exit (a read returns the data the host left in the exit), a memory fault a
 * `memory-fault` exit after which the access is retried at the next run, as the kernel resumes the
 * vCPU at the faulting instruction.
 */
export interface Guest {
  readonly vcpuId: number;
  /** The live general-purpose register file (the guest's own registers). */
  readonly regs: Regs;

  readU8(gva: Gva): number;
  readU16(gva: Gva): number;
  readU32(gva: Gva): number;
  readU64(gva: Gva): bigint;
  writeU8(gva: Gva, v: number): void;
  writeU16(gva: Gva, v: number): void;
  writeU32(gva: Gva, v: number): void;
  writeU64(gva: Gva, v: bigint): void;
  readBytes(gva: Gva, length: number): Uint8Array;
  writeBytes(gva: Gva, data: Uint8Array): void;
  /**
   * A load that may exit (a MOV the vCPU can exit on): resolves with the value, after any MMIO or
   * memory-fault exit it took. Little-endian, `size` bytes.
   */
  readAsync(gva: Gva, size: AccessSize): Promise<bigint>;
  /** A store that may exit: MMIO becomes an `mmio` write exit; a memory fault exits and the store is retried. */
  writeAsync(gva: Gva, size: AccessSize, value: bigint): Promise<void>;
  /** Atomic bit test-and-set (LOCK BTS) on the bit array at `gva`; returns the old bit. */
  testAndSetBit(gva: Gva, bit: number): boolean;
  /** Atomic bit clear (LOCK BTR). */
  clearBit(gva: Gva, bit: number): void;

  /** GVA of a global in this VM's copy of the guest image. */
  global(name: string): Gva;

  cpuid(leaf: number, subleaf?: number): CpuidEntry;
  rdmsr(msr: number): bigint;
  wrmsr(msr: number, value: bigint): void;

  /**
   * MOV from CR0, CR2, CR3 or CR4: the guest's own control state. Optional so that Guest
   * implementations written before it stay valid; every kvmtest backend provides it.
   */
  readCr?(n: ReadableCr): bigint;
  /**
   * MOV to CR0, CR3 or CR4 with the architecture's checks: an invalid value (a reserved bit,
   * CR0.PG without CR0.PE, CR0.NW without CR0.CD, paging with EFER.LME but not CR4.PAE, clearing
   * CR4.PAE or changing CR4.LA57 in long mode, CR3 above MAXPHYADDR) raises #GP(0) and changes
   * nothing. Setting CR0.PG with EFER.LME activates long mode (EFER.LMA); a CR3 write, and any
   * change of the paging bits, flushes the TLB. This is how a guest whose registers the host
   * cannot set (a TD) turns paging on itself. Optional like readCr.
   */
  writeCr?(n: WritableCr, value: bigint): void;

  /** XGETBV: XCR `index` (0: XCR0); #UD unless CR4.OSXSAVE. Optional like readCr. */
  xgetbv?(index: number): bigint;
  /** XSETBV: writes XCR `index`; #UD unless CR4.OSXSAVE, #GP(0) for an invalid value. Optional like readCr. */
  xsetbv?(index: number, value: bigint): void;
  /**
   * XSAVE to the 64-byte-aligned area at `gva`: the state components in `rfbm` & XCR0 in standard
   * format (XSAVE_LAYOUT) and their XSTATE_BV bits. #UD unless CR4.OSXSAVE. Optional like readCr.
   */
  xsave?(gva: Gva, rfbm: bigint): void;
  /** XRSTOR from the area at `gva`: loads the components in `rfbm` & XCR0 (init state where XSTATE_BV is clear). */
  xrstor?(gva: Gva, rfbm: bigint): void;

  out(port: number, size: IoSize, value: number): Promise<void>;
  in(port: number, size: IoSize): Promise<number>;
  /** A write to guest-physical MMIO (no memslot behind `gpa`). */
  mmioWrite(gpa: Gpa, size: number, value: bigint): Promise<void>;
  mmioRead(gpa: Gpa, size: number): Promise<bigint>;
  /** VMMCALL/VMCALL: RAX = nr, RBX, RCX, RDX, RSI = args; returns RAX. */
  hypercall(nr: bigint, args?: readonly bigint[]): Promise<bigint>;
  /** SEV-ES/SNP: exit through the GHCB whose GPA is in MSR 0xC0010130. */
  vmgexit(): Promise<void>;
  /** TDX: TDCALL with RAX = leaf; returns the registers the TDX module/VMM gave back. */
  tdcall(leaf: bigint, regs: TdcallRegs): Promise<TdcallRegs>;
  /** SNP: PVALIDATE the 4 KiB page at `gva` (validate or rescind); returns the instruction's status code. */
  pvalidate(gva: Gva, validate: boolean): number;
  hlt(): Promise<void>;
  /** Raises an invalid-opcode exception (UD2). */
  ud2(): never;
  /**
   * The steps of SlotSend as one operation, for a backend where each guest operation costs a vCPU
   * entry (kvm-linux's agent); the same instructions in the same order as the single operations
   * would execute. Optional: a caller without it performs the steps itself.
   */
  slotSend?(req: SlotSend): Promise<SlotSendResult>;

  /**
   * Installs (or removes) the guest's exception entry — LIDT, in effect. With none, an exception
   * triple-faults: the vCPU's run resolves with a `shutdown` exit, on every VM type.
   */
  setExceptionHandler(handler: ExceptionHandler | undefined): void;
}

/** A guest program: the code a vCPU runs. It ends by returning (the vCPU then halts) or by exiting for good. */
export type GuestProgram = (g: Guest) => Promise<void>;
