// Machine code for one slot send (Guest.slotSend), written by the host into the vCPU's mailbox page
// (past the mailbox fields) and entered like an operation: the same loads, LOCK BTS, stores, load, OUT and LOCK BTR as
// op_slotsend in agent.S, with the addresses and the slot's bytes as immediates. On PVM every guest
// instruction costs about a microsecond or more; the ladder copies a qword with a load and a store
// and reaches each address through the mailbox, where this code stores an immediate straight to
// its address (65 bytes of a plain ucall: 9 stores instead of 19 instructions).
//
// Registers: RBX = mailbox, EDX = agent port, R12 = op_nop on entry (as for every operation); RDI =
// the slot where its address needs 64 bits.
// R0's low byte and the bail-outs are op_slotsend's (SLOT_SEND_STATUS); +0xb8 holds 0xffffffff.

import type { SlotSend } from '@kvmtest/kvm';
import { SLOT_SEND, SLOT_SEND_STATUS } from './layout.js';

/** Where in the emitted code each step starts, for mapping a faulting RIP to how far it went. */
export interface SlotCode {
  /** Bytes of code emitted. */
  readonly length: number;
  /** Offset of the first store (before: loads and the LOCK BTS). */
  readonly stores: number;
  /** Offset of the first load after the stores. */
  readonly loads: number;
  /** Offset of the LOCK BTR that releases the bit once the host resumes the vCPU. */
  readonly release: number;
}

/** Largest slot the emitted code stores (bigger ones go through op_slotsend's copy ladder). */
export const SLOT_CODE_MAX_DATA = 256;
/** Room the emitted code needs at most (SLOT_CODE_MAX_DATA bytes of data, every qword 64-bit). */
export const SLOT_CODE_MAX_BYTES = 1024;

const I32_MIN = -(1n << 31n);
const I32_MAX = (1n << 31n) - 1n;
const U64 = (1n << 64n) - 1n;

/** `v` (a u64) as the sign-extended 32-bit immediate or displacement it equals, or undefined. */
function s32(v: bigint): number | undefined {
  const s = BigInt.asIntN(64, v);
  return s >= I32_MIN && s <= I32_MAX ? Number(s) : undefined;
}

class Emitter {
  at = 0;
  private readonly view: DataView;
  constructor(private readonly out: Uint8Array) {
    this.view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  }
  b(...bytes: number[]): void {
    for (const x of bytes) this.out[this.at++] = x & 0xff;
  }
  i32(v: number): void {
    this.view.setInt32(this.at, v | 0, true);
    this.at += 4;
  }
  i64(v: bigint): void {
    this.view.setBigUint64(this.at, BigInt.asUintN(64, v), true);
    this.at += 8;
  }
  /** A rel32 jump/branch placeholder; returns where to patch. */
  rel32(): number {
    const p = this.at;
    this.i32(0);
    return p;
  }
  patch(p: number, target: number): void {
    const rel = target - (p + 4);
    this.out[p] = rel & 0xff;
    this.out[p + 1] = (rel >> 8) & 0xff;
    this.out[p + 2] = (rel >> 16) & 0xff;
    this.out[p + 3] = (rel >> 24) & 0xff;
  }
  /**
   * A ModRM (with `reg`) addressing the u64 at absolute GVA `gva`: [disp32] where it fits the
   * sign-extended displacement, else through RSI (loaded first with `mov rsi, imm64`).
   * `prefix` are the instruction's bytes before the ModRM (emitted after any RSI load).
   */
  mem(prefix: number[], reg: number, gva: bigint): void {
    const d = s32(gva);
    if (d !== undefined) {
      this.b(...prefix, (reg << 3) | 4, 0x25); // ModRM mod=00 rm=100 (SIB), SIB base=101 no index: [disp32]
      this.i32(d);
    } else {
      this.b(0x48, 0xbe); // mov rsi, imm64
      this.i64(gva);
      this.b(...prefix, (reg << 3) | 6); // [rsi]
    }
  }
  /** `cmp qword ptr [gva], value` (through RCX when value is no imm32: RAX may hold the value to send). */
  cmpMem(gva: bigint, value: bigint): void {
    const imm = s32(value);
    if (imm !== undefined) {
      this.mem([0x48, 0x81], 7, gva); // cmp r/m64, imm32 (/7)
      this.i32(imm);
    } else {
      this.b(0x48, 0xb9); // mov rcx, imm64
      this.i64(value);
      this.mem([0x48, 0x39], 1, gva); // cmp r/m64, rcx
    }
  }
  /** `jne rel32` to a placeholder. */
  jne(): number {
    this.b(0x0f, 0x85);
    return this.rel32();
  }
  /** Bail out: R0's low byte = status, signal, next operation. */
  bail(status: number): void {
    this.b(0xc6, 0x43, 0x40, status); // mov byte ptr [rbx + 0x40], status
    this.b(0xee, 0xff, 0x23); // out dx, al; jmp qword ptr [rbx]
  }
}

/**
 * Emits the slot send `req` into `out` (SLOT_CODE_MAX_BYTES suffice) as the code of one agent
 * operation (position independent). Undefined when `req` is not one it emits (its data too long).
 * `record` gets the offset of each stored value's immediate (see SlotCodeBuffer).
 */
export function emitSlotCode(req: SlotSend, out: Uint8Array, record?: number[]): SlotCode | undefined {
  const n = req.data.length;
  if (n === 0 || n > SLOT_CODE_MAX_DATA) return undefined;
  const e = new Emitter(out);
  // signal_unless_exit: op_nop (the agent keeps it in R12) signals if the OUT below does not exit.
  e.b(0x4c, 0x89, 0x23); // mov [rbx], r12
  e.cmpMem(req.poolGlobal, req.pool);
  const declined1 = e.jne();
  e.cmpMem(req.countGlobal, req.count);
  const declined2 = e.jne();
  // LOCK BTS of the bit in the u64 that holds it (the address testAndSetBit computes).
  const word = BigInt.asUintN(64, req.pool + BigInt(Math.floor(req.bit / 64)) * 8n);
  const bit = req.bit % 64;
  e.mem([0xf0, 0x48, 0x0f, 0xba], 5, word); // lock bts r/m64, imm8 (/5)
  e.b(bit);
  e.b(0x0f, 0x82); // jc rel32
  const occupied = e.rel32();
  const stores = e.at;
  // The slot's stores address it as [disp32] where the slot lies in the sign-extended 32-bit
  // range, else relative to RDI.
  const abs = s32(req.slot);
  const absEnd = s32(req.slot + BigInt(n));
  const base = abs !== undefined && absEnd !== undefined ? abs : undefined;
  if (base === undefined) {
    e.b(0x48, 0xbf); // mov rdi, imm64 (the slot)
    e.i64(req.slot);
  }
  /** ModRM (+SIB) and disp32 of the slot's byte `off`, with `reg` in ModRM.reg. */
  const slotAt = (reg: number, off: number) => {
    if (base !== undefined) {
      e.b((reg << 3) | 4, 0x25); // [disp32]
      e.i32(base + off);
    } else {
      e.b(0x80 | (reg << 3) | 7); // [rdi + disp32]
      e.i32(off);
    }
  };
  // The copy ladder's stores (writeBytes): for n >= 8 the qwords at 8k, k descending from n/8 - 1,
  // then the qword at n - 8; for n < 8 the bytes from n - 1 down to 0. Within one page.
  const d = req.data;
  const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
  const q = (off: number) => {
    const lo = dv.getInt32(off, true);
    const hi = dv.getInt32(off + 4, true);
    if (hi === lo >> 31) {
      e.b(0x48, 0xc7); // mov qword ptr [slot + off], imm32 (sign-extended)
      slotAt(0, off);
      record?.push(e.at);
      e.i32(lo);
    } else {
      e.b(0x48, 0xb8); // mov rax, imm64
      record?.push(-1 - e.at);
      e.i32(lo);
      e.i32(hi);
      e.b(0x48, 0x89); // mov [slot + off], rax
      slotAt(0, off);
    }
  };
  if (n >= 8) {
    for (let k = Math.floor(n / 8) - 1; k >= 0; k--) q(8 * k);
    q(n - 8);
  } else
    for (let i = n - 1; i >= 0; i--) {
      e.b(0xc6); // mov byte ptr [slot + i], imm8
      slotAt(0, i);
      record?.push(e.at);
      e.b(d[i]!);
    }
  const loads = e.at;
  // The value: mov rax, [value] (relative to the slot where it can be).
  const rel = base === undefined ? s32(BigInt.asUintN(64, req.value - req.slot)) : undefined;
  if (rel !== undefined) {
    e.b(0x48, 0x8b, 0x87); // mov rax, [rdi + disp32]
    e.i32(rel);
  } else e.mem([0x48, 0x8b], 0, req.value);
  e.cmpMem(req.selectorGlobal, req.selector);
  const filled1 = e.jne();
  e.b(0x48, 0x3b, 0x83); // cmp rax, [rbx + valueMax]
  e.i32(SLOT_SEND.valueMax);
  e.b(0x0f, 0x87); // ja rel32
  const filled2 = e.rel32();
  e.b(0xba); // mov edx, port
  e.i32(req.port);
  e.b(0xef); // out dx, eax
  const release = e.at;
  e.mem([0xf0, 0x48, 0x0f, 0xba], 6, word); // lock btr r/m64, imm8 (/6)
  e.b(bit);
  e.b(0xba); // mov edx, agent port: the next operation
  e.i32(0x7ff0);
  e.b(0xff, 0x23); // jmp qword ptr [rbx]
  const dec = e.at;
  e.bail(SLOT_SEND_STATUS.declined);
  e.patch(declined1, dec);
  e.patch(declined2, dec);
  const occ = e.at;
  e.bail(SLOT_SEND_STATUS.taken);
  e.patch(occupied, occ);
  const fil = e.at;
  e.bail(SLOT_SEND_STATUS.filled);
  e.patch(filled1, fil);
  e.patch(filled2, fil);
  if (e.at > out.length || req.slot > U64) return undefined;
  return { length: e.at, stores, loads, release };
}

/**
 * Slot sends emitted into one buffer: a send that differs from the last one only in the values it
 * stores (the next ucall of the same vCPU) rewrites just their immediates.
 */
export class SlotCodeBuffer {
  private last: SlotSend | undefined;
  private length = 0;
  private code: SlotCode | undefined;
  /** Per store, in emission order: the immediate's offset (imm32 / imm8), or -1 - offset (imm64). */
  private stores: number[] = [];
  private readonly view: DataView;

  constructor(private readonly out: Uint8Array) {
    this.view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  }

  /** Writes `req` as code (see emitSlotCode). */
  write(req: SlotSend): SlotCode | undefined {
    if (this.code !== undefined && this.sameSteps(req) && this.patch(req.data)) return this.code;
    this.stores = [];
    this.code = emitSlotCode(req, this.out, this.stores);
    this.last = this.code === undefined ? undefined : { ...req, data: new Uint8Array(0) };
    this.length = req.data.length;
    return this.code;
  }

  private sameSteps(r: SlotSend): boolean {
    const l = this.last!;
    return (
      r.slot === l.slot &&
      r.bit === l.bit &&
      r.pool === l.pool &&
      r.poolGlobal === l.poolGlobal &&
      r.count === l.count &&
      r.countGlobal === l.countGlobal &&
      r.value === l.value &&
      r.selector === l.selector &&
      r.selectorGlobal === l.selectorGlobal &&
      r.port === l.port &&
      r.data.length === this.length
    );
  }

  /** Rewrites the stored values for `d`; false (nothing written) when one needs the other form. */
  private patch(d: Uint8Array): boolean {
    const n = d.length;
    const st = this.stores;
    const v = this.view;
    if (n < 8) {
      for (let k = 0; k < n; k++) this.out[st[k]!] = d[n - 1 - k]!;
      return true;
    }
    const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
    const qwords = Math.floor(n / 8);
    // Check every form first, so that a mismatch leaves the code as it was.
    for (let k = 0; k <= qwords; k++) {
      const off = k < qwords ? 8 * (qwords - 1 - k) : n - 8;
      const lo = dv.getInt32(off, true);
      if ((dv.getInt32(off + 4, true) === lo >> 31) !== st[k]! >= 0) return false;
    }
    for (let k = 0; k <= qwords; k++) {
      const off = k < qwords ? 8 * (qwords - 1 - k) : n - 8;
      const at = st[k]!;
      if (at >= 0) v.setInt32(at, dv.getInt32(off, true), true);
      else {
        v.setInt32(-1 - at, dv.getInt32(off, true), true);
        v.setInt32(-1 - at + 4, dv.getInt32(off + 4, true), true);
      }
    }
    return true;
  }
}
