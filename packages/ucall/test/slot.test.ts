import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeSlot,
  encodeSlot,
  UCALL_ASSERT_ARGS,
  UCALL_ASSERT_EXTRA_PRESENT_SHIFT,
  UCALL_ASSERT_FILE_MAX,
  UCALL_ASSERT_MAGIC,
  UCALL_BUFFER_LEN,
  UCALL_SLOT_LAYOUT,
} from '../src/index.js';

const enc = new TextEncoder();
const dec = new TextDecoder();
const bytesOf = (s: string) => enc.encode(s).length;

function inSlot(bytes: Uint8Array, gpa = 0x5000n): Uint8Array {
  const slot = new Uint8Array(UCALL_SLOT_LAYOUT.size).fill(0xee);
  slot.set(bytes, 0);
  new DataView(slot.buffer).setBigUint64(UCALL_SLOT_LAYOUT.gpa, gpa, true);
  return slot;
}

// Longest prefix of s whose UTF-8 form fits in max bytes (cut at a character boundary).
function prefix(s: string, max: number): string {
  const b = enc.encode(s);
  if (b.length <= max) return s;
  let end = max;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return dec.decode(b.subarray(0, end));
}

const text = (maxLength: number) => fc.string({ unit: 'binary', maxLength }).filter((s) => !s.includes('\0'));

describe('slot encoding', () => {
  it('writes cmd and args little-endian at their offsets', () => {
    const b = encodeSlot({ cmd: 4, args: [0x0102030405060708n] });
    const v = new DataView(b.buffer);
    expect(v.getBigUint64(UCALL_SLOT_LAYOUT.cmd, true)).toBe(4n);
    expect(b[UCALL_SLOT_LAYOUT.args]).toBe(0x08);
    expect(v.getBigUint64(UCALL_SLOT_LAYOUT.args + 8, true)).toBe(0n);
    expect(b.length).toBe(UCALL_SLOT_LAYOUT.buffer + 1);
    expect(b[UCALL_SLOT_LAYOUT.buffer]).toBe(0);
  });

  it('lays an assertion out as message NUL file NUL expression NUL with offsets in args', () => {
    const b = encodeSlot({ cmd: 2, message: 'm', where: { expression: 'e', file: 'f.c', line: 9 } });
    const v = new DataView(b.buffer);
    const arg = (i: number) => v.getBigUint64(UCALL_SLOT_LAYOUT.args + 8 * i, true);
    expect(dec.decode(b.subarray(UCALL_SLOT_LAYOUT.buffer))).toBe('m\0f.c\0e\0');
    expect(arg(UCALL_ASSERT_ARGS.file)).toBe(2n);
    expect(arg(UCALL_ASSERT_ARGS.expression)).toBe(6n);
    expect(arg(UCALL_ASSERT_ARGS.line)).toBe(9n);
    expect(arg(UCALL_ASSERT_ARGS.messageBytes)).toBe(1n);
    expect(arg(UCALL_ASSERT_ARGS.magic)).toBe(UCALL_ASSERT_MAGIC);
  });

  it('puts assert extras in args[4]/args[5] and their presence bits above the message length', () => {
    const where = { expression: 'e', file: 'f.c', line: 9 };
    const argsOf = (b: Uint8Array) => {
      const v = new DataView(b.buffer);
      return (i: number) => v.getBigUint64(UCALL_SLOT_LAYOUT.args + 8 * i, true);
    };
    const both = argsOf(encodeSlot({ cmd: 5, message: 'm', where: { ...where, extra: [14n, 2] } }));
    expect(both(UCALL_ASSERT_ARGS.extra0)).toBe(14n);
    expect(both(UCALL_ASSERT_ARGS.extra1)).toBe(2n);
    expect(both(UCALL_ASSERT_ARGS.messageBytes)).toBe(1n | (3n << UCALL_ASSERT_EXTRA_PRESENT_SHIFT));
    const first = argsOf(encodeSlot({ cmd: 5, message: 'm', where: { ...where, extra: [6n, undefined] } }));
    expect(first(UCALL_ASSERT_ARGS.extra1)).toBe(0n);
    expect(first(UCALL_ASSERT_ARGS.messageBytes)).toBe(1n | (1n << UCALL_ASSERT_EXTRA_PRESENT_SHIFT));
    const second = argsOf(encodeSlot({ cmd: 5, message: 'm', where: { ...where, extra: [undefined, 0n] } }));
    expect(second(UCALL_ASSERT_ARGS.extra0)).toBe(0n);
    expect(second(UCALL_ASSERT_ARGS.messageBytes)).toBe(1n | (2n << UCALL_ASSERT_EXTRA_PRESENT_SHIFT));
    const none = argsOf(encodeSlot({ cmd: 5, message: 'm', where: { ...where, extra: [] } }));
    expect(none(UCALL_ASSERT_ARGS.messageBytes)).toBe(1n);
  });

  it('decodes assert extras: present ones as u64, absent ones as undefined, none as no field', () => {
    const where = { expression: 'e', file: 'f.c', line: 9 };
    const round = (extra?: readonly (bigint | number | undefined)[]) =>
      decodeSlot(inSlot(encodeSlot({ cmd: 5, message: 'é'.repeat(600), where: { ...where, extra } })));
    expect(round([14n, 0x11n])).toMatchObject({ extra: [14n, 0x11n], truncated: true, line: 9 });
    expect(round([6]).extra).toEqual([6n]);
    expect(round([6n, undefined]).extra).toEqual([6n]);
    expect(round([undefined, 0n]).extra).toEqual([undefined, 0n]);
    expect(round([0n, 0n]).extra).toEqual([0n, 0n]);
    expect(round([-1n, 2n ** 64n - 1n]).extra).toEqual([2n ** 64n - 1n, 2n ** 64n - 1n]);
    expect(round([]).extra).toBeUndefined();
    expect(round().extra).toBeUndefined();
    expect(round([undefined, undefined]).extra).toBeUndefined();
    expect(round().truncated).toBe(true);
    // A slot without the assert marker has no extras, whatever args[3] holds.
    expect(
      decodeSlot(inSlot(encodeSlot({ cmd: 1, args: [0n, 0n, 0n, 3n << 56n, 4n, 5n] }))).extra,
    ).toBeUndefined();
  });

  it('rejects more than two assert extras and extras that do not fit 64 bits', () => {
    const where = { expression: 'e', file: 'f.c', line: 9 };
    expect(() => encodeSlot({ cmd: 5, where: { ...where, extra: [1n, 2n, 3n] } })).toThrow(
      /at most 2 extra values, got 3/,
    );
    expect(() => encodeSlot({ cmd: 5, where: { ...where, extra: [2n ** 64n] } })).toThrow(RangeError);
    expect(() => encodeSlot({ cmd: 5, where: { ...where, extra: [0.5] } })).toThrow(/safe integer/);
  });

  it('rejects more than 7 args, a message that does not fit, and args beside an assertion', () => {
    expect(() => encodeSlot({ cmd: 1, args: Array(8).fill(0n) })).toThrow(/at most 7 args, got 8/);
    expect(() => encodeSlot({ cmd: 3, message: 'x'.repeat(1024) })).toThrow(/1024 UTF-8 bytes does not fit/);
    expect(() => encodeSlot({ cmd: 1, args: [2n ** 64n] })).toThrow(RangeError);
    expect(() => encodeSlot({ cmd: -1 })).toThrow(/cmd -1/);
    expect(() => encodeSlot({ cmd: 2, args: [1n], where: { expression: '', file: '', line: 0 } })).toThrow(
      /extra args/,
    );
  });

  it('round-trips cmd, args and a message', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
        fc.array(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), { maxLength: 7 }),
        fc.option(text(300)),
        (cmd, args, message) => {
          const d = decodeSlot(inSlot(encodeSlot({ cmd, args, ...(message === null ? {} : { message }) })));
          expect(d.cmd).toBe(cmd);
          expect(d.args).toEqual([...args, ...Array(7 - args.length).fill(0n)]);
          expect(d.message).toBe(message ?? '');
          expect(d.file).toBeUndefined();
          expect(d.truncated).toBe(false);
          expect(d.gpa).toBe(0x5000n);
        },
      ),
    );
  });

  it('round-trips an assertion, cutting the file, then the expression, then the message to fit', () => {
    fc.assert(
      fc.property(text(1500), text(400), text(1100), fc.nat(), (message, file, expression, line) => {
        const enc = encodeSlot({ cmd: 2, message, where: { expression, file, line } });
        expect(enc.length).toBeLessThanOrEqual(UCALL_SLOT_LAYOUT.buffer + UCALL_BUFFER_LEN);
        const d = decodeSlot(inSlot(enc));
        expect(d.line).toBe(line);
        expect(d.file).toBe(prefix(file, UCALL_ASSERT_FILE_MAX));
        const fileBytes = bytesOf(d.file!);
        expect(d.expression).toBe(prefix(expression, UCALL_BUFFER_LEN - 3 - fileBytes));
        expect(d.message).toBe(prefix(message, UCALL_BUFFER_LEN - 3 - fileBytes - bytesOf(d.expression!)));
        expect(d.truncated).toBe(d.message !== message);
        expect(d.buffer).toBe(`${d.message}\0${d.file}\0${d.expression}`);
      }),
    );
  });
});
