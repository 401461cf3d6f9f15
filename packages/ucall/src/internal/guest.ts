// The guest half: written only against the Guest interface. It finds the pool and the transport
// only through its own image globals (g.global + g.readU64), never through host state.

import {
  encodeGhcbMsr,
  encodeIoioExitInfo,
  encodeTdxIoRequest,
  GHCB_DEFAULT_USAGE,
  GHCB_EXIT_RESULT,
  GHCB_FIELD,
  GHCB_LAYOUT,
  GHCB_MSR_CODE,
  GHCB_MSR_INFO_MASK,
  GHCB_PROTOCOL_VERSION,
  ghcbValidBit,
  hex,
  SEV_MSR,
  SVM_EXIT,
  TDCALL_LEAF,
  TDVMCALL_STATUS,
  tdvmcallStatusName,
} from '@kvmtest/coco';
import type { Gpa, Gva } from '@kvmtest/guest-memory';
import { argTypeError, type Guest } from '@kvmtest/kvm';
import {
  UCALL,
  UCALL_BUFFER_LEN,
  UCALL_FAILED_GPA,
  UCALL_FLAG,
  UCALL_GLOBAL,
  UCALL_MAX_ARGS,
  UCALL_OVERFLOW_ASSERT,
  UCALL_PIO_PORT,
  UCALL_POOL_SLOT_ALIGN,
  UCALL_SLOT_LAYOUT,
  UCALL_TRANSPORT_CODE,
} from './constants.js';
import { UcallError } from './errors.js';
import { formatGuestBounded } from './format.js';
import { type AssertWhere, checkArg, checkCmd, encodeSlot, utf8 } from './slot.js';

const PAGE = 4096n;
const SLOT_GPA_FIELD = BigInt(UCALL_SLOT_LAYOUT.gpa);
const U32_MAX = 0xffff_ffffn;
const GHCB_MSR = SEV_MSR.MSR_AMD64_SEV_ES_GHCB;
// sw_exit_info_1 of `out dx, eax` in 64-bit mode, as Linux's #VC handler builds it (vc_ioio_exitinfo).
const IOIO_OUT_32 = encodeIoioExitInfo({
  direction: 'out',
  size: 4,
  port: UCALL_PIO_PORT,
  string: false,
  rep: false,
  addressSize: 64,
});
// Valid bitmap of an IOIO OUT request: rax, sw_exit_code, sw_exit_info_1, sw_exit_info_2 (arch/x86/kvm/svm/sev.c: sev_es_validate_vmgexit()).
const IOIO_VALID = (() => {
  const b = new Uint8Array(GHCB_LAYOUT.VALID_BITMAP_SIZE);
  for (const f of ['rax', 'swExitCode', 'swExitInfo1', 'swExitInfo2'] as const) {
    const bit = ghcbValidBit(f);
    b[bit >> 3]! |= 1 << (bit & 7);
  }
  return b;
})();
// GVA offsets of the GHCB fields sendGhcb writes, as bigints once.
const GHCB_AT = {
  valid: BigInt(GHCB_LAYOUT.VALID_BITMAP_OFFSET),
  rax: BigInt(GHCB_FIELD.rax.offset),
  swExitCode: BigInt(GHCB_FIELD.swExitCode.offset),
  swExitInfo1: BigInt(GHCB_FIELD.swExitInfo1.offset),
  swExitInfo2: BigInt(GHCB_FIELD.swExitInfo2.offset),
  version: BigInt(GHCB_LAYOUT.PROTOCOL_VERSION_OFFSET),
  usage: BigInt(GHCB_LAYOUT.USAGE_OFFSET),
};
const SVM_EXIT_IOIO = BigInt(SVM_EXIT.IOIO);
const GHCB_RESULT_OK = BigInt(GHCB_EXIT_RESULT.OK);
const VP_VMCALL = BigInt(TDCALL_LEAF.VP_VMCALL);
// R10–R15 exposed to the VMM (TDVMCALL RCX bitmap).
const TDVMCALL_EXPOSE_R10_R15 = 0xfc00n;

/** The guest half is called with the guest of the running vCPU: anything else is a TypeError. */
function checkGuest(g: Guest, op: string): void {
  if (
    typeof g !== 'object' ||
    g === null ||
    typeof g.global !== 'function' ||
    typeof g.readU64 !== 'function'
  )
    throw argTypeError(op, 'g', 'the Guest of a running vCPU', g);
}

function u64(g: Guest, name: string): bigint {
  return g.readU64(g.global(name));
}

/** This vCPU's GHCB page (ghcb transport) as its guest finds it through the ucall globals, or undefined. */
export function guestGhcb(g: Guest): { gva: Gva; gpa: Gpa } | undefined {
  checkGuest(g, 'guestGhcb');
  const count = u64(g, UCALL_GLOBAL.ghcbCount);
  if (BigInt(g.vcpuId) >= count) return undefined;
  const off = BigInt(g.vcpuId) * PAGE;
  return { gva: u64(g, UCALL_GLOBAL.ghcbGva) + off, gpa: u64(g, UCALL_GLOBAL.ghcbGpa) + off };
}

// SNP: a GHCB GPA must be registered before use (GHCB MSR REG_GPA_REQ; arch/x86/kvm/svm/sev.c: sev_handle_vmgexit() refuses an unregistered one). Once per vCPU.
async function registerGhcb(g: Guest, gpa: bigint): Promise<void> {
  const bits = g.global(UCALL_GLOBAL.ghcbRegistered);
  const byte = bits + BigInt(g.vcpuId >> 3);
  const mask = 1 << (g.vcpuId & 7);
  if ((g.readU8(byte) & mask) !== 0) return;
  const gfn = gpa >> 12n;
  g.wrmsr(GHCB_MSR, encodeGhcbMsr({ kind: 'reg-gpa-req', gfn }));
  await g.vmgexit();
  const resp = g.rdmsr(GHCB_MSR);
  if ((resp & GHCB_MSR_INFO_MASK) !== BigInt(GHCB_MSR_CODE.REG_GPA_RESP) || resp >> 12n !== gfn)
    throw new UcallError(
      'GHCB_ERROR',
      `vCPU ${g.vcpuId}: registering GHCB GPA ${hex(gpa)} got GHCB MSR ${hex(resp)}, not REG_GPA_RESP for GFN ${hex(gfn)}`,
      { vcpuId: g.vcpuId, gpa, response: resp },
    );
  g.writeU8(byte, g.readU8(byte) | mask);
}

// The port request of an SEV-ES/SNP guest: IOIO through the GHCB, then VMGEXIT (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit(), `SVM_EXIT_IOIO`).
async function sendGhcb(g: Guest, value: bigint): Promise<void> {
  const page = guestGhcb(g);
  if (page === undefined)
    throw new UcallError(
      'NO_GHCB',
      `vCPU ${g.vcpuId} has no GHCB page for ucall (only vCPUs 0–${u64(g, UCALL_GLOBAL.ghcbCount) - 1n} do: pass nrVcpus to ucallInit)`,
      { vcpuId: g.vcpuId },
    );
  const { gva, gpa } = page;
  if ((u64(g, UCALL_GLOBAL.flags) & UCALL_FLAG.REGISTER_GHCB) !== 0n) await registerGhcb(g, gpa);
  g.writeBytes(gva + GHCB_AT.valid, IOIO_VALID);
  g.writeU64(gva + GHCB_AT.rax, value);
  g.writeU64(gva + GHCB_AT.swExitCode, SVM_EXIT_IOIO);
  g.writeU64(gva + GHCB_AT.swExitInfo1, IOIO_OUT_32);
  g.writeU64(gva + GHCB_AT.swExitInfo2, 0n);
  g.writeU16(gva + GHCB_AT.version, GHCB_PROTOCOL_VERSION.MAX);
  g.writeU32(gva + GHCB_AT.usage, GHCB_DEFAULT_USAGE);
  g.wrmsr(GHCB_MSR, gpa);
  await g.vmgexit();
  const info1 = g.readU64(gva + GHCB_AT.swExitInfo1);
  if ((info1 & 0xffff_ffffn) !== GHCB_RESULT_OK) {
    const info2 = g.readU64(gva + GHCB_AT.swExitInfo2);
    throw new UcallError(
      'GHCB_ERROR',
      `vCPU ${g.vcpuId}: the hypervisor answered the ucall GHCB IOIO request with sw_exit_info_1 ${hex(info1)}, sw_exit_info_2 ${hex(info2)}`,
      { vcpuId: g.vcpuId, info1, info2 },
    );
  }
}

// A TD's port request: TDG.VP.VMCALL<Instruction.IO> (arch/x86/kvm/vmx/tdx.c: tdx_emulate_io()).
async function sendTdvmcall(g: Guest, value: bigint): Promise<void> {
  const req = encodeTdxIoRequest({ port: UCALL_PIO_PORT, size: 4, write: true, value });
  // The request's R10–R15 (all encodeTdxIoRequest sets) listed out: a literal of fixed shape, which the
  // TDX module copies fast, where `{ rcx, ...req }` (spread after a key) makes a slow object.
  const { r10, r11, r12, r13, r14, r15 } = req;
  const r = await g.tdcall(VP_VMCALL, { rcx: TDVMCALL_EXPOSE_R10_R15, r10, r11, r12, r13, r14, r15 });
  const status = r.r10 ?? TDVMCALL_STATUS.SUCCESS;
  if (status !== TDVMCALL_STATUS.SUCCESS)
    throw new UcallError(
      'TDVMCALL_FAILED',
      `vCPU ${g.vcpuId}: TDG.VP.VMCALL<Instruction.IO> for the ucall returned R10 ${hex(status)} (${tdvmcallStatusName(status) ?? 'unknown status'})`,
      { vcpuId: g.vcpuId, r10: status },
    );
}

// Hands `value` (a slot GPA, 0 or the failure value) to the host by this VM's transport. Not async,
// so the transport's own promise is returned as is (no extra promise to adopt it): every caller awaits
// it inside an async function, where a synchronous throw here surfaces exactly as a rejection would.
function send(g: Guest, value: bigint): Promise<void> {
  return sendBy(g, value, u64(g, UCALL_GLOBAL.transport));
}

// send() once the transport global was read (`raw`).
function sendBy(g: Guest, value: bigint, raw: bigint): Promise<void> {
  const transport = Number(raw);
  // Every port request carries 4 bytes: a value that does not fit (a slot whose gpa field was
  // overwritten) is reported here, never cut to its low bits (all ones of 64 bits would arrive as 0).
  if (value > U32_MAX && transport !== UCALL_TRANSPORT_CODE.mmio)
    throw new UcallError(
      'FORGED_GPA',
      `vCPU ${g.vcpuId}: ucall GPA ${hex(value)} does not fit the 4-byte port write (the slot's gpa field was overwritten?)`,
      { vcpuId: g.vcpuId, gpa: value },
    );
  switch (transport) {
    case UCALL_TRANSPORT_CODE.pio:
      return g.out(UCALL_PIO_PORT, 4, Number(value));
    case UCALL_TRANSPORT_CODE.ghcb:
      return sendGhcb(g, value);
    case UCALL_TRANSPORT_CODE.tdvmcall:
      return sendTdvmcall(g, value);
    case UCALL_TRANSPORT_CODE.mmio:
      return g.mmioWrite(u64(g, UCALL_GLOBAL.mmioGpa), 8, value);
    default:
      throw new UcallError(
        'BAD_TRANSPORT',
        `vCPU ${g.vcpuId}: ucall_transport global holds ${transport}, not a transport code`,
        {
          vcpuId: g.vcpuId,
          transport,
        },
      );
  }
}

/** What a guest's last ucall found in the pool globals, for Guest.slotSend to expect (pio only). */
interface PoolSeen {
  readonly pool: bigint;
  /** The count global as read, and as the slot arithmetic uses it. */
  readonly count: bigint;
  readonly n: number;
}
const poolSeen = new WeakMap<Guest, PoolSeen>();
const PIO = BigInt(UCALL_TRANSPORT_CODE.pio);
const U64_MAX = (1n << 64n) - 1n;

/** GVA of slot `bit` of the pool at `pool` with `n` slots. */
function slotGva(pool: bigint, n: number, bit: number): bigint {
  const first = Math.ceil((Math.ceil(n / 64) * 8) / UCALL_POOL_SLOT_ALIGN) * UCALL_POOL_SLOT_ALIGN;
  return pool + BigInt(first + bit * UCALL_SLOT_LAYOUT.size);
}

// Takes a free slot (atomic test-and-set, starting at this vCPU's own slot), writes `bytes` into it,
// sends its GPA, and frees it once the host resumed the guest.
//
// Where the Guest offers slotSend (kvm-linux, whose every operation is a vCPU entry), a pio ucall
// after the first is one slotSend of these same steps, expecting the pool globals this guest read
// last time: the backend loads them for real and stops before any store where they differ, and
// this function goes on from wherever slotSend stopped.
async function sendSlot(g: Guest, bytes: Uint8Array): Promise<void> {
  let pool: bigint | undefined;
  let count = 0n;
  let n = 0;
  let from = 0;
  let bit = -1;
  // Steps slotSend already did: 0 none, 1 the bit is ours, 2 and the slot is filled.
  let done = 0;
  const seen = g.slotSend === undefined ? undefined : poolSeen.get(g);
  if (seen !== undefined) {
    const b = g.vcpuId % seen.n;
    const slot = slotGva(seen.pool, seen.n, b);
    if (slot + SLOT_GPA_FIELD + 8n <= U64_MAX) {
      const r = await g.slotSend!({
        poolGlobal: g.global(UCALL_GLOBAL.pool),
        pool: seen.pool,
        countGlobal: g.global(UCALL_GLOBAL.nrSlots),
        count: seen.count,
        bit: b,
        slot,
        data: bytes,
        value: slot + SLOT_GPA_FIELD,
        selectorGlobal: g.global(UCALL_GLOBAL.transport),
        selector: PIO,
        port: UCALL_PIO_PORT,
      });
      if (r === 'sent') return;
      if (r !== 'declined') {
        ({ pool, count, n } = seen);
        if (r === 'occupied') from = 1;
        else {
          bit = b;
          done = r === 'reserved' ? 1 : 2;
        }
      }
    }
  }
  if (pool === undefined) {
    pool = u64(g, UCALL_GLOBAL.pool);
    count = pool === 0n ? 0n : u64(g, UCALL_GLOBAL.nrSlots);
    n = Number(count);
  }
  for (let i = from, start = n > 0 ? g.vcpuId % n : 0; i < n && done === 0; i++) {
    const b = (start + i) % n;
    if (!g.testAndSetBit(pool, b)) {
      bit = b;
      break;
    }
  }
  if (bit < 0) {
    // GUEST_ASSERT cannot work without a slot: tell the host with the failure value, then stop.
    await send(g, UCALL_FAILED_GPA);
    throw new UcallError(
      'NO_FREE_SLOT',
      pool === 0n
        ? `vCPU ${g.vcpuId}: no ucall pool (ucall_pool global is 0)`
        : `vCPU ${g.vcpuId}: all ${n} ucall slots are in use`,
      { vcpuId: g.vcpuId, slots: n },
    );
  }
  const slot = slotGva(pool, n, bit);
  try {
    if (done < 2) g.writeBytes(slot, bytes);
    const value = g.readU64(slot + SLOT_GPA_FIELD);
    const transport = u64(g, UCALL_GLOBAL.transport);
    if (g.slotSend !== undefined) {
      if (transport === PIO) poolSeen.set(g, { pool, count, n });
      else poolSeen.delete(g);
    }
    await sendBy(g, value, transport);
  } finally {
    g.clearBit(pool, bit);
  }
}

/** A plain ucall's slot image (cmd, args, an empty buffer), rebuilt in place for each ucall of one guest. */
interface PlainSlot {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  /** How many leading args may be non-zero (the rest are known zero: no rewrite needed). */
  dirtyArgs: number;
}

// One slot image per guest (vCPU), so plain ucalls allocate nothing; sendSlot copies it into the
// pool's slot before its first await, so the next ucall of the same guest may rebuild it.
const plainSlots = new WeakMap<Guest, PlainSlot>();

function plainSlotOf(g: Guest): PlainSlot {
  let p = plainSlots.get(g);
  if (p === undefined) {
    const bytes = new Uint8Array(UCALL_SLOT_LAYOUT.buffer + 1);
    p = { bytes, view: new DataView(bytes.buffer), dirtyArgs: 0 };
    plainSlots.set(g, p);
  }
  return p;
}

/** Sends `cmd` with up to 7 args (GUEST_SYNC*, GUEST_DONE): fills a slot and exits to the host with its GPA. */
export function ucall(g: Guest, cmd: number, ...args: bigint[]): Promise<void> {
  // Not async: sendSlot's promise is returned as is; a failed check still rejects, as from an async function.
  let slot: PlainSlot;
  try {
    checkGuest(g, 'ucall');
    slot = plainSlotOf(g);
    fillPlain(slot, cmd, args);
  } catch (e) {
    return Promise.reject(e);
  }
  return sendSlot(g, slot.bytes);
}

// Writes cmd and args into `p` (validated: RangeError / TypeError as checkCmd and checkArg say).
function fillPlain(p: PlainSlot, cmd: number, args: readonly bigint[]): void {
  if (args.length > UCALL_MAX_ARGS)
    throw new RangeError(`a ucall carries at most ${UCALL_MAX_ARGS} args, got ${args.length}`);
  // A u32 cmd (every UCALL command) is its two LE halves without a BigInt; checkCmd decides the rest.
  if (typeof cmd === 'number' && cmd >= 0 && cmd <= 0xffff_ffff && Number.isInteger(cmd)) {
    p.view.setUint32(UCALL_SLOT_LAYOUT.cmd, cmd, true);
    p.view.setUint32(UCALL_SLOT_LAYOUT.cmd + 4, 0, true);
  } else p.view.setBigUint64(UCALL_SLOT_LAYOUT.cmd, checkCmd(cmd), true);
  // Args past the given ones must read 0: only those an earlier, longer call may have written are
  // cleared (`dirtyArgs` is raised first, so an arg that throws half-way leaves it conservative).
  const dirty = p.dirtyArgs;
  p.dirtyArgs = Math.max(dirty, args.length);
  for (let i = 0; i < args.length; i++)
    p.view.setBigUint64(UCALL_SLOT_LAYOUT.args + 8 * i, checkArg(args[i]!, i), true);
  if (dirty > args.length)
    p.bytes.fill(0, UCALL_SLOT_LAYOUT.args + 8 * args.length, UCALL_SLOT_LAYOUT.args + 8 * dirty);
  p.dirtyArgs = args.length;
}

/**
 * Sends `cmd` with a printf-formatted message in the buffer (GUEST_PRINTF, GUEST_FAIL-style ABORT).
 * A message longer than 1023 UTF-8 bytes (the buffer with its NUL) is sent as ABORT instead, with
 * UCALL_OVERFLOW_ASSERT's expression and file — as selftests' guest_vsnprintf asserts (guest_print_test).
 */
export async function ucallFmt(g: Guest, cmd: number, fmt: string, ...values: unknown[]): Promise<void> {
  checkGuest(g, 'ucallFmt');
  checkCmd(cmd);
  // A UTF-16 code unit is at most 3 UTF-8 bytes and at least 1, so formatting stops at FORMAT_LIMIT code
  // units: past that the message cannot fit, and a huge width or precision costs no more than that.
  const { text, overflow } = formatGuestBounded(fmt, values, FORMAT_LIMIT);
  const size = overflow ? undefined : utf8(text).length;
  if (size === undefined || size + 1 > UCALL_BUFFER_LEN)
    return sendSlot(
      g,
      encodeSlot({
        cmd: UCALL.ABORT,
        message: `formatted message of ${size === undefined ? `more than ${FORMAT_LIMIT} characters` : `${size} bytes`} does not fit the ${UCALL_BUFFER_LEN}-byte ucall buffer with its NUL: ${text}`,
        where: UCALL_OVERFLOW_ASSERT,
      }),
    );
  return sendSlot(g, encodeSlot({ cmd, message: text }));
}

/** Characters ucallFmt/ucallAssert format at most (4 buffers: any more cannot fit one). */
const FORMAT_LIMIT = 4 * UCALL_BUFFER_LEN;

/**
 * Sends `cmd` (normally ABORT) for a failed guest assertion (ucall_assert): the formatted message,
 * file, line and expression, laid out as UCALL_ASSERT_ARGS says; the message is cut first to fit.
 * `where.extra` (at most two values, `undefined` = absent) rides in `args[4]`/`args[5]`, and the host
 * reads it back as `Ucall.extra`.
 */
export async function ucallAssert(
  g: Guest,
  cmd: number,
  where: AssertWhere,
  fmt: string,
  ...values: unknown[]
): Promise<void> {
  checkGuest(g, 'ucallAssert');
  checkCmd(cmd);
  // The message is cut to fit the buffer anyway: formatting stops once no more of it could fit.
  const { text } = formatGuestBounded(fmt, values, FORMAT_LIMIT);
  return sendSlot(g, encodeSlot({ cmd, message: text, where }));
}

/** A bare ucall exit with GPA 0 and no slot (GUEST_UCALL_NONE); the host decodes it as UCALL.NONE. */
export async function ucallNone(g: Guest): Promise<void> {
  checkGuest(g, 'ucallNone');
  return send(g, 0n);
}
