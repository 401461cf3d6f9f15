// Encoding and decoding one slot (`struct ucall`): what the guest writes and what the host reads back.

import type { Gpa } from '@kvmtest/guest-memory';
import { argTypeError, describeValue } from '@kvmtest/kvm';
import {
  UCALL_ASSERT_ARGS,
  UCALL_ASSERT_EXTRA_MAX,
  UCALL_ASSERT_EXTRA_PRESENT_SHIFT,
  UCALL_ASSERT_FILE_MAX,
  UCALL_ASSERT_MAGIC,
  UCALL_BUFFER_LEN,
  UCALL_MAX_ARGS,
  UCALL_SLOT_LAYOUT,
} from './constants.js';

/**
 * Where a guest assertion failed: the expression text, file and line (GUEST_ASSERT's #cond, __FILE__,
 * __LINE__), and optionally up to UCALL_ASSERT_EXTRA_MAX extra numbers for the host (e.g. UNHANDLED's
 * vector and error code), sent in `args[4]`/`args[5]`. An `undefined` entry is sent as absent.
 */
export interface AssertWhere {
  expression: string;
  file: string;
  line: number;
  extra?: readonly (bigint | number | undefined)[];
}

/** What a guest puts in a slot: command, up to 7 args, optionally a message, and for an assertion where it failed. */
export interface SlotContents {
  cmd: number | bigint;
  args?: readonly bigint[];
  message?: string;
  where?: AssertWhere;
}

/** A slot as the host decodes it (see UCALL_SLOT_LAYOUT and UCALL_ASSERT_ARGS). */
export interface DecodedSlot {
  cmd: number;
  args: bigint[];
  /** The buffer's text up to the encoding's last NUL (assert slots: `message\0file\0expression`). */
  buffer: string;
  /** The formatted message: the buffer's first NUL-terminated string. */
  message: string;
  file?: string;
  line?: number;
  expression?: string;
  /** Assert slots that carried extra values: see {@link AssertWhere.extra} and Ucall.extra. */
  extra?: (bigint | undefined)[];
  /** True when the guest cut the message to fit the buffer (assert slots record the full length). */
  truncated: boolean;
  /** The slot's own `gpa` field. */
  gpa: Gpa;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8');

/** UTF-8 bytes of `s`, cut to at most `max` bytes without splitting a character. */
export function utf8Prefix(bytes: Uint8Array, max: number): Uint8Array {
  if (bytes.length <= max) return bytes;
  let end = max;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

/** UTF-8 encoding of a string. */
export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

/** Validates a ucall cmd: an integer in u64 range. */
export function checkCmd(cmd: number | bigint): bigint {
  const c = typeof cmd === 'number' && Number.isSafeInteger(cmd) ? BigInt(cmd) : cmd;
  if (typeof c !== 'bigint' || c < 0n || c > 0xffff_ffff_ffff_ffffn)
    throw new (typeof c === 'bigint' || typeof c === 'number' ? RangeError : TypeError)(
      `ucall cmd ${typeof cmd === 'number' || typeof cmd === 'bigint' ? String(cmd) : `(${describeValue(cmd)})`} must be an integer in 0–0xffffffffffffffff`,
    );
  return c;
}

const I64_MIN = -(1n << 63n);

/** Validates a ucall arg (−2^63 … 2^64−1) and returns it as a u64. */
export function checkArg(v: bigint, i: number): bigint {
  if (typeof v !== 'bigint') throw new TypeError(`ucall arg ${i} must be a bigint, got ${describeValue(v)}`);
  if (v < I64_MIN || v > 0xffff_ffff_ffff_ffffn)
    throw new RangeError(`ucall arg ${i} ${v} does not fit 64 bits (−2^63 … 2^64−1)`);
  return BigInt.asUintN(64, v);
}

/**
 * Bytes a guest writes at the start of a slot: cmd and args (all 7, unused ones zero), then the buffer
 * up to and including its last NUL — a lone NUL when there is no message, so no stale text survives.
 * With `where`, the buffer is `message NUL file NUL expression NUL` and args carry the UCALL_ASSERT_ARGS
 * fields (the file is cut to UCALL_ASSERT_FILE_MAX bytes, then the expression, then the message, to fit),
 * plus `where.extra` in `args[4]`/`args[5]` with their presence bits in `args[3]`.
 * Without `where`, a message longer than 1023 UTF-8 bytes is a RangeError (ucallFmt turns it into ABORT).
 */
export function encodeSlot(c: SlotContents): Uint8Array {
  if (typeof c !== 'object' || c === null) throw argTypeError('encodeSlot', 'contents', 'an object', c);
  const cmd = checkCmd(c.cmd);
  if (c.args !== undefined && !Array.isArray(c.args))
    throw argTypeError('encodeSlot', 'contents.args', 'an array of bigints or undefined', c.args);
  if (c.message !== undefined && typeof c.message !== 'string')
    throw argTypeError('encodeSlot', 'contents.message', 'a string or undefined', c.message);
  if (c.where !== undefined) {
    const w = c.where;
    if (typeof w !== 'object' || w === null)
      throw argTypeError('encodeSlot', 'contents.where', 'an object { expression, file, line }', w);
    if (typeof w.expression !== 'string')
      throw argTypeError('encodeSlot', 'where.expression', 'a string', w.expression);
    if (typeof w.file !== 'string') throw argTypeError('encodeSlot', 'where.file', 'a string', w.file);
  }
  const args = c.args ?? [];
  if (args.length > UCALL_MAX_ARGS)
    throw new RangeError(`a ucall carries at most ${UCALL_MAX_ARGS} args, got ${args.length}`);
  if (c.where !== undefined && args.length > 0)
    throw new RangeError(
      `an assert ucall's args hold file/line/expression; got ${args.length} extra args (send up to ${UCALL_ASSERT_EXTRA_MAX} values as where.extra)`,
    );
  let buf: Uint8Array;
  const words: bigint[] = [0n, 0n, 0n, 0n, 0n, 0n, 0n];
  for (let i = 0; i < args.length; i++) words[i] = checkArg(args[i]!, i);
  if (c.where !== undefined) {
    const { expression, file, line } = c.where;
    if (!Number.isSafeInteger(line) || line < 0)
      throw new RangeError(`assert line ${line} must be an integer ≥ 0`);
    const room = UCALL_BUFFER_LEN - 3;
    const fileB = utf8Prefix(utf8(String(file)), UCALL_ASSERT_FILE_MAX);
    const exprB = utf8Prefix(utf8(String(expression)), room - fileB.length);
    const full = utf8(c.message ?? '');
    const msgB = utf8Prefix(full, room - fileB.length - exprB.length);
    buf = new Uint8Array(msgB.length + fileB.length + exprB.length + 3);
    buf.set(msgB, 0);
    const fileOff = msgB.length + 1;
    buf.set(fileB, fileOff);
    const exprOff = fileOff + fileB.length + 1;
    buf.set(exprB, exprOff);
    words[UCALL_ASSERT_ARGS.expression] = BigInt(exprOff);
    words[UCALL_ASSERT_ARGS.file] = BigInt(fileOff);
    words[UCALL_ASSERT_ARGS.line] = BigInt(line);
    words[UCALL_ASSERT_ARGS.messageBytes] = BigInt(full.length) | encodeExtra(c.where.extra, words);
    words[UCALL_ASSERT_ARGS.magic] = UCALL_ASSERT_MAGIC;
  } else if (c.message !== undefined) {
    const m = utf8(c.message);
    if (m.length + 1 > UCALL_BUFFER_LEN)
      throw new RangeError(
        `ucall message of ${m.length} UTF-8 bytes does not fit the ${UCALL_BUFFER_LEN}-byte buffer with its NUL`,
      );
    buf = new Uint8Array(m.length + 1);
    buf.set(m, 0);
  } else {
    buf = new Uint8Array(1);
  }
  const out = new Uint8Array(UCALL_SLOT_LAYOUT.buffer + buf.length);
  const view = new DataView(out.buffer);
  view.setBigUint64(UCALL_SLOT_LAYOUT.cmd, cmd, true);
  for (let i = 0; i < UCALL_MAX_ARGS; i++) view.setBigUint64(UCALL_SLOT_LAYOUT.args + 8 * i, words[i]!, true);
  out.set(buf, UCALL_SLOT_LAYOUT.buffer);
  return out;
}

const LENGTH_MASK = (1n << UCALL_ASSERT_EXTRA_PRESENT_SHIFT) - 1n;
const EXTRA_ARGS = [UCALL_ASSERT_ARGS.extra0, UCALL_ASSERT_ARGS.extra1] as const;

// Writes the present extras into `words` and returns their presence bits for args[messageBytes].
function encodeExtra(extra: AssertWhere['extra'], words: bigint[]): bigint {
  if (extra === undefined) return 0n;
  if (!Array.isArray(extra) || extra.length > UCALL_ASSERT_EXTRA_MAX)
    throw new RangeError(
      `an assert ucall carries at most ${UCALL_ASSERT_EXTRA_MAX} extra values, got ${Array.isArray(extra) ? extra.length : typeof extra}`,
    );
  let present = 0n;
  for (let i = 0; i < extra.length; i++) {
    const v = extra[i];
    if (v === undefined) continue;
    const arg = EXTRA_ARGS[i]!;
    if (typeof v === 'number' && !Number.isSafeInteger(v))
      throw new RangeError(`assert extra value ${i} ${v} must be a bigint or a safe integer`);
    words[arg] = checkArg(typeof v === 'number' ? BigInt(v) : v, arg);
    present |= 1n << (UCALL_ASSERT_EXTRA_PRESENT_SHIFT + BigInt(i));
  }
  return present;
}

/** Where the NUL-terminated string at bytes[from] ends: its NUL, or `to` when none comes first. */
function cStringEnd(bytes: Uint8Array, from: number, to: number): number {
  // An empty string (every plain ucall's buffer) needs no search.
  if (bytes[from] === 0) return from;
  const end = bytes.indexOf(0, from);
  return end < 0 || end > to ? to : end;
}

/** The text of bytes[from, end) ('' without calling the decoder when empty). */
function text(bytes: Uint8Array, from: number, end: number): string {
  return end === from ? '' : decoder.decode(bytes.subarray(from, end));
}

/** Decodes the slot at byte `off` of `bytes` (`view` over the same bytes). */
export function decodeSlotAt(bytes: Uint8Array, view: DataView, off: number): DecodedSlot {
  const cmd =
    view.getUint32(off + UCALL_SLOT_LAYOUT.cmd + 4, true) * 2 ** 32 +
    view.getUint32(off + UCALL_SLOT_LAYOUT.cmd, true);
  const args: bigint[] = new Array(UCALL_MAX_ARGS);
  for (let i = 0; i < UCALL_MAX_ARGS; i++) {
    const at = off + UCALL_SLOT_LAYOUT.args + 8 * i;
    // Most args are unused (0): the 0n constant is the same value without allocating a BigInt.
    args[i] =
      view.getUint32(at, true) === 0 && view.getUint32(at + 4, true) === 0 ? 0n : view.getBigUint64(at, true);
  }
  const gpa = view.getBigUint64(off + UCALL_SLOT_LAYOUT.gpa, true);
  const b0 = off + UCALL_SLOT_LAYOUT.buffer;
  const bEnd = b0 + UCALL_BUFFER_LEN;
  const msgEnd = cStringEnd(bytes, b0, bEnd);
  const message = text(bytes, b0, msgEnd);
  const out: DecodedSlot = { cmd, args, buffer: message, message, truncated: msgEnd === bEnd, gpa };
  if (args[UCALL_ASSERT_ARGS.magic] === UCALL_ASSERT_MAGIC) {
    const fileOff = args[UCALL_ASSERT_ARGS.file]!;
    const exprOff = args[UCALL_ASSERT_ARGS.expression]!;
    let last = msgEnd;
    if (fileOff > 0n && fileOff < BigInt(UCALL_BUFFER_LEN)) {
      const from = b0 + Number(fileOff);
      const end = cStringEnd(bytes, from, bEnd);
      out.file = text(bytes, from, end);
      last = Math.max(last, end);
    }
    if (exprOff > 0n && exprOff < BigInt(UCALL_BUFFER_LEN)) {
      const from = b0 + Number(exprOff);
      const end = cStringEnd(bytes, from, bEnd);
      out.expression = text(bytes, from, end);
      last = Math.max(last, end);
    }
    const line = args[UCALL_ASSERT_ARGS.line]!;
    out.line = line <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(line) : Number.MAX_SAFE_INTEGER;
    const lengthWord = args[UCALL_ASSERT_ARGS.messageBytes]!;
    out.truncated = BigInt(msgEnd - b0) < (lengthWord & LENGTH_MASK);
    const present =
      (lengthWord >> UCALL_ASSERT_EXTRA_PRESENT_SHIFT) & ((1n << BigInt(UCALL_ASSERT_EXTRA_MAX)) - 1n);
    if (present !== 0n) {
      // Up to the last present extra; absent ones in between stay undefined.
      const extra: (bigint | undefined)[] = [];
      for (let i = 0; i < UCALL_ASSERT_EXTRA_MAX; i++)
        if ((present >> BigInt(i)) & 1n) extra[i] = args[EXTRA_ARGS[i]!]!;
      out.extra = Array.from(extra);
    }
    if (last > msgEnd) out.buffer = decoder.decode(bytes.subarray(b0, last));
  }
  return out;
}

/** Decodes a slot from its bytes (at least UCALL_SLOT_LAYOUT.size of them). */
export function decodeSlot(bytes: Uint8Array): DecodedSlot {
  if (!(bytes instanceof Uint8Array))
    throw argTypeError('decodeSlot', 'bytes', `a Uint8Array of ${UCALL_SLOT_LAYOUT.size} bytes`, bytes);
  if (bytes.length < UCALL_SLOT_LAYOUT.size)
    throw new RangeError(`decodeSlot: a ucall slot is ${UCALL_SLOT_LAYOUT.size} bytes, got ${bytes.length}`);
  return decodeSlotAt(bytes, new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0);
}
