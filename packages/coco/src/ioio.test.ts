import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeIoioExitInfo, encodeIoioExitInfo, type IoioInfo } from './index.js';

const infoArb: fc.Arbitrary<IoioInfo> = fc
  .record({
    direction: fc.constantFrom('in' as const, 'out' as const),
    size: fc.constantFrom(1 as const, 2 as const, 4 as const),
    port: fc.nat({ max: 0xffff }),
    string: fc.boolean(),
    rep: fc.boolean(),
    addressSize: fc.option(fc.constantFrom(16 as const, 32 as const, 64 as const), { nil: undefined }),
    segment: fc.nat({ max: 5 }),
  })
  .map(({ addressSize, ...rest }) => (addressSize === undefined ? rest : { ...rest, addressSize }));

describe('IOIO exit info', () => {
  it('encodes `out dx, al` to port 0x1000 as the guest kernel’s #VC handler does (vc_ioio_exitinfo())', () => {
    const v = encodeIoioExitInfo({
      direction: 'out',
      size: 1,
      port: 0x1000,
      string: false,
      rep: false,
      addressSize: 64,
    });
    expect(v).toBe(0x1000_0210n);
  });

  it('encodes a 4-byte IN with the size in bits 6:4 so that (info >> 4) & 7 is the byte count', () => {
    const v = encodeIoioExitInfo({ direction: 'in', size: 4, port: 0x3f8, string: false, rep: false });
    expect((v >> 4n) & 7n).toBe(4n);
    expect(v & 1n).toBe(1n);
  });

  it('round-trips every well-formed info', () => {
    fc.assert(
      fc.property(infoArb, (info) => {
        expect(decodeIoioExitInfo(encodeIoioExitInfo(info))).toEqual(info);
      }),
    );
  });

  it('round-trips every 32-bit value it accepts', () => {
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), (raw) => {
        let info: IoioInfo;
        try {
          info = decodeIoioExitInfo(raw);
        } catch {
          return;
        }
        expect(encodeIoioExitInfo(info)).toBe(BigInt(raw));
      }),
    );
  });

  it('rejects malformed values with the rule', () => {
    expect(() => decodeIoioExitInfo(0x1000_0000n)).toThrow(/exactly one of SZ8\/SZ16\/SZ32/);
    expect(() => decodeIoioExitInfo(0x1000_0030n)).toThrow(/exactly one of SZ8/);
    expect(() => decodeIoioExitInfo(0x1000_0190n)).toThrow(/at most one of A16\/A32\/A64/);
    expect(() => decodeIoioExitInfo(0x1000_0012n)).toThrow(/reserved bit 1 set/);
    expect(() => decodeIoioExitInfo(0x1_0000_0010n)).toThrow(/reserved bit 32 set/);
    expect(() => decodeIoioExitInfo(0x1000_1810n)).toThrow(/segment 6/);
    expect(() =>
      encodeIoioExitInfo({ direction: 'out', size: 3 as never, port: 1, string: false, rep: false }),
    ).toThrow(/IOIO size 3 is not one of 1, 2, 4/);
    expect(() =>
      encodeIoioExitInfo({ direction: 'out', size: 1, port: 0x10000, string: false, rep: false }),
    ).toThrow(/port 65536 does not fit in 16 bits/);
  });
});
