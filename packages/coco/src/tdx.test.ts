import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeTdxIoRequest,
  decodeTdxMmioRequest,
  decodeVmxIoQualification,
  EXCEPTION_VECTOR,
  encodeTdxIoRequest,
  encodeTdxMmioRequest,
  encodeVmxIoQualification,
  TDCALL_LEAF,
  TDVMCALL_STATUS,
  TDVMCALL_SUBFUNCTION,
  type TdxIoRequest,
  type TdxMmioRequest,
  tdvmcallStatusName,
  type VmxIoQualification,
} from './index.js';

const u = (bits: number) => fc.bigInt({ min: 0n, max: (1n << BigInt(bits)) - 1n });

const ioArb: fc.Arbitrary<TdxIoRequest> = fc
  .record({
    port: fc.nat({ max: 0xffff }),
    size: fc.constantFrom(1 as const, 2 as const, 4 as const),
    write: fc.boolean(),
  })
  .chain((r) => (r.write ? u(r.size * 8).map((value) => ({ ...r, value })) : fc.constant(r)));

const mmioArb: fc.Arbitrary<TdxMmioRequest> = fc
  .record({
    gpa: u(64),
    size: fc.constantFrom(1 as const, 2 as const, 4 as const, 8 as const),
    write: fc.boolean(),
  })
  .chain((r) => (r.write ? u(r.size * 8).map((value) => ({ ...r, value })) : fc.constant(r)));

describe('TDVMCALL ABI', () => {
  it('has the leaf, sub-function and status numbers of the GHCI (asm/shared/tdx.h)', () => {
    expect(TDCALL_LEAF.VP_VMCALL).toBe(0);
    expect(TDVMCALL_SUBFUNCTION.IO).toBe(30);
    expect(TDVMCALL_SUBFUNCTION.REQUEST_MMIO).toBe(48);
    expect(TDVMCALL_SUBFUNCTION.MAP_GPA).toBe(0x10001);
    expect(TDVMCALL_SUBFUNCTION.REPORT_FATAL_ERROR).toBe(0x10003);
    expect(TDVMCALL_STATUS.INVALID_OPERAND).toBe(1n << 63n);
    expect(tdvmcallStatusName(0x8000_0000_0000_0003n)).toBe('SUBFUNC_UNSUPPORTED');
    expect(tdvmcallStatusName(5n)).toBeUndefined();
    expect(EXCEPTION_VECTOR.VE).toBe(20);
    expect(EXCEPTION_VECTOR.VC).toBe(29);
  });

  it('encodes the ucall OUT to port 0x1000 in R10..R15', () => {
    expect(encodeTdxIoRequest({ port: 0x1000, size: 4, write: true, value: 0x1234n })).toEqual({
      r10: 0n,
      r11: 30n,
      r12: 4n,
      r13: 1n,
      r14: 0x1000n,
      r15: 0x1234n,
    });
  });

  it('round-trips every I/O and MMIO request', () => {
    fc.assert(
      fc.property(ioArb, (req) => {
        expect(decodeTdxIoRequest(encodeTdxIoRequest(req))).toEqual(req);
      }),
    );
    fc.assert(
      fc.property(mmioArb, (req) => {
        expect(decodeTdxMmioRequest(encodeTdxMmioRequest(req))).toEqual(req);
      }),
    );
  });

  it('rejects what KVM answers with INVALID_OPERAND, naming the register', () => {
    const good = encodeTdxIoRequest({ port: 0x80, size: 1, write: false });
    expect(() => decodeTdxIoRequest({ ...good, r12: 3n })).toThrow(/R12 size 0x3 is not one of 1, 2, 4/);
    expect(() => decodeTdxIoRequest({ ...good, r13: 2n })).toThrow(/R13 direction 0x2/);
    expect(() => decodeTdxIoRequest({ ...good, r10: 1n })).toThrow(/R10 0x1 is not 0/);
    expect(() => decodeTdxIoRequest({ ...good, r11: 48n })).toThrow(/R11 0x30 is not sub-function 30/);
    expect(() => decodeTdxIoRequest({ ...good, r14: 0x10000n })).toThrow(/port 0x10000 is above 0xffff/);
  });

  it('rejects a write value wider than the access unless asked to truncate', () => {
    const regs = { ...encodeTdxIoRequest({ port: 0x80, size: 1, write: true, value: 1n }), r15: 0x1ffn };
    expect(() => decodeTdxIoRequest(regs)).toThrow(/wider than the 1-byte access/);
    expect(decodeTdxIoRequest(regs, { strict: false }).value).toBe(0xffn);
    expect(() => encodeTdxIoRequest({ port: 0x80, size: 1, write: true, value: 0x100n })).toThrow(
      /does not fit in 8 bits/,
    );
    expect(() => encodeTdxIoRequest({ port: 0x80, size: 1, write: false, value: 1n })).toThrow(
      /read carries a value/,
    );
  });
});

describe('VMX I/O exit qualification', () => {
  const qArb: fc.Arbitrary<VmxIoQualification> = fc.record({
    direction: fc.constantFrom('in' as const, 'out' as const),
    size: fc.constantFrom(1 as const, 2 as const, 4 as const),
    port: fc.nat({ max: 0xffff }),
    string: fc.boolean(),
    rep: fc.boolean(),
    immediate: fc.boolean(),
  });

  it('encodes size − 1, IN at bit 3 and the port at 31:16', () => {
    expect(
      encodeVmxIoQualification({
        direction: 'in',
        size: 4,
        port: 0x1000,
        string: false,
        rep: false,
        immediate: false,
      }),
    ).toBe(0x1000_000bn);
  });

  it('round-trips and rejects a bad size code', () => {
    fc.assert(
      fc.property(qArb, (q) => {
        expect(decodeVmxIoQualification(encodeVmxIoQualification(q))).toEqual(q);
      }),
    );
    expect(() => decodeVmxIoQualification(2n)).toThrow(/size code 2/);
    expect(() => decodeVmxIoQualification(1n << 7n)).toThrow(/reserved/);
  });
});
