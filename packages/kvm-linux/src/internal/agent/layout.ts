// Where the guest agent lives and how the host talks to it: the reserved memslot, GPA, GVA and
// port, the agent region's page map, the mailbox offsets and the operation codes. The numbers here
// and in agent.S must agree (the agent tests run every operation on the real vCPU).

/** Memslot id of the agent's memory (high, so tests' own slots never meet it). */
export const AGENT_SLOT = 32000;
/** Guest-physical base of the agent slot: 56 GiB, below the 36-bit minimum MAXPHYADDR of x86-64. */
export const AGENT_GPA = 0xe_0000_0000n;
/** Pages of the agent slot (1 MiB). */
export const AGENT_PAGES = 256;
/** Size of the agent slot in bytes. */
export const AGENT_BYTES = AGENT_PAGES * 4096;
/** The guest PML4 entry the agent takes over (the top 512 GiB of the address space). */
export const AGENT_PML4_INDEX = 511;
/** Guest-virtual base of the agent region: PML4[511], PDPT[0], PD[0]. */
export const AGENT_GVA = 0xffff_ff80_0000_0000n;
/** The I/O port the agent signals completion on (an OUT of one byte). */
export const AGENT_PORT = 0x7ff0;

/** Page indexes inside the agent slot. */
export const AGENT_PAGE = {
  /** PDPT the guest's PML4[511] points at. */
  pdpt: 0,
  pd: 1,
  /** PT mapping the slot's 256 pages (entries 0–255) and the MMIO window (entry 256). */
  pt: 2,
  gdt: 3,
  idt: 4,
  tss: 5,
  /** A PML4 whose entry 511 is the agent's, loaded as CR3 for a vCPU that has no paging of its own. */
  pml4: 6,
  /** Code: up to 32 KiB (pages 8–15). */
  code: 8,
  /** First per-vCPU page: vCPU slot k uses stack, mailbox and data pages 16 + 3k, +1, +2. */
  vcpus: 16,
} as const;

/** PT entry of the MMIO window: one page through which mmioRead / mmioWrite reach any GPA. */
export const MMIO_WINDOW_PTE = 256;
/** GVA of the MMIO window. */
export const MMIO_WINDOW_GVA = AGENT_GVA + BigInt(MMIO_WINDOW_PTE) * 4096n;
/** vCPUs the agent slot has pages for. */
export const AGENT_MAX_VCPUS = Math.floor((AGENT_PAGES - AGENT_PAGE.vcpus) / 3);

/** GDT selectors the agent runs with. */
export const AGENT_SELECTOR = { code: 0x08, data: 0x10, tss: 0x18 } as const;

/** Mailbox byte offsets (little-endian u64 each). */
export const MAILBOX = {
  /** The GVA of the operation's code (from the operation table): the agent dispatches with `jmp [mailbox]`. */
  op: 0x00,
  a0: 0x08,
  a1: 0x10,
  a2: 0x18,
  a3: 0x20,
  a4: 0x28,
  /** Where the copy ladders continue (readBytes / writeBytes: op_nop, which signals). */
  cont: 0x38,
  r0: 0x40,
  r1: 0x48,
  r2: 0x50,
  r3: 0x58,
  /** 0 done (the host writes it with each operation), 1 exception (the agent's exception path). */
  status: 0x60,
  vector: 0x68,
  errorCode: 0x70,
  cr2: 0x78,
  rip: 0x80,
} as const;

/** The slot send's mailbox fields beyond A0–A4 (see op_slotsend in agent.S). */
export const SLOT_SEND = {
  poolGlobal: 0x08,
  pool: 0x10,
  countGlobal: 0x18,
  count: 0x20,
  bit: 0x28,
  port: 0x30,
  slot: 0x88,
  ladder: 0x90,
  length: 0x98,
  value: 0xa0,
  selectorGlobal: 0xa8,
  selector: 0xb0,
  /** Holds 0xffffffff: the largest value the 4-byte OUT carries. */
  valueMax: 0xb8,
} as const;

/** R0's low byte after a slot send that signalled (0: it completed without an exit). */
export const SLOT_SEND_STATUS = { sent: 0, declined: 1, taken: 2, filled: 3 } as const;

/** Mailbox status values. */
export const STATUS = { done: 0, exception: 1 } as const;

/** Operation codes (the order of the agent's operation table). */
export const OP = {
  nop: 0,
  read8: 1,
  read16: 2,
  read32: 3,
  read64: 4,
  write8: 5,
  write16: 6,
  write32: 7,
  write64: 8,
  bts: 9,
  btr: 10,
  readBytes: 11,
  writeBytes: 12,
  cpuid: 13,
  rdmsr: 14,
  wrmsr: 15,
  readCr: 16,
  writeCr: 17,
  in8: 18,
  in16: 19,
  in32: 20,
  out8: 21,
  out16: 22,
  out32: 23,
  hlt: 24,
  ud2: 25,
  vmcall: 26,
  lidt: 27,
  mmioRead8: 28,
  mmioRead16: 29,
  mmioRead32: 30,
  mmioRead64: 31,
  mmioWrite8: 32,
  mmioWrite16: 33,
  mmioWrite32: 34,
  mmioWrite64: 35,
  pvalidate: 36,
  vmgexit: 37,
  tdcall: 38,
  xgetbv: 39,
  xsetbv: 40,
  xsave: 41,
  xrstor: 42,
  slotSend: 43,
  /** Not an operation: the second half of slotSend, where the copy ladder continues. */
  slotSendTail: 44,
} as const;

/** Vectors for which the CPU pushes an error code (the others get a dummy 0 from the stub). */
export const VECTORS_WITH_ERROR_CODE: ReadonlySet<number> = new Set([8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);

/** Byte offsets inside the agent code's header (u32 each; offsets are from the header). */
export const CODE_HEADER = {
  entry: 0,
  stubs: 4,
  stride: 8,
  magic: 12,
  ops: 16,
  opCount: 20,
  qwordLadder: 24,
  byteLadder: 28,
} as const;
/** Bytes of code per pair of the qword and byte copy ladders. */
export const LADDER_PAIR = { qword: 14, byte: 6 } as const;
/** Pairs in the qword ladder (one page of qwords) and the byte ladder. */
export const LADDER_PAIRS = { qword: 512, byte: 7 } as const;
/** The header's magic ("tnga" little-endian). */
export const CODE_MAGIC = 0x61676e74;
