import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CocoError,
  decodeGhcbMsr,
  encodeGhcbMsr,
  GHCB_MSR_CODE,
  GHCB_MSR_PREF_GPA_NONE,
  type GhcbMsrMessage,
  ghcbMsrCode,
  isKnownGhcbMsrCode,
  PSC_OP,
  SEV_TERM_SET,
} from './index.js';

const u = (bits: number) => fc.bigInt({ min: 0n, max: (1n << BigInt(bits)) - 1n });
const n = (bits: number) => fc.nat({ max: 2 ** bits - 1 });
const reg = fc.constantFrom('eax', 'ebx', 'ecx', 'edx' as const);

const messageArb: fc.Arbitrary<GhcbMsrMessage> = fc.oneof(
  u(52).map((pfn) => ({ kind: 'ghcb-gpa' as const, gpa: pfn << 12n })),
  fc.constant({ kind: 'sev-info-req' as const }),
  fc.record({
    kind: fc.constant('sev-info-resp' as const),
    maxVersion: n(16),
    minVersion: n(16),
    cBit: n(8),
  }),
  fc.record({ kind: fc.constant('cpuid-req' as const), fn: n(32), reg }),
  fc.record({ kind: fc.constant('cpuid-resp' as const), value: n(32), reg }),
  fc.constant({ kind: 'ap-reset-hold-req' as const }),
  fc.record({ kind: fc.constant('ap-reset-hold-resp' as const), result: u(52) }),
  fc.constant({ kind: 'pref-gpa-req' as const }),
  fc.record({ kind: fc.constant('pref-gpa-resp' as const), gfn: u(52) }),
  fc.record({ kind: fc.constant('reg-gpa-req' as const), gfn: u(52) }),
  fc.record({ kind: fc.constant('reg-gpa-resp' as const), gfn: u(52) }),
  fc.record({ kind: fc.constant('psc-req' as const), gfn: u(40), op: n(4) }),
  fc.record({ kind: fc.constant('psc-resp' as const), error: n(32) }),
  fc.constant({ kind: 'hv-features-req' as const }),
  fc.record({ kind: fc.constant('hv-features-resp' as const), features: u(52) }),
  fc.record({ kind: fc.constant('term-req' as const), reasonSet: n(4), reasonCode: n(8) }),
);

describe('GHCB MSR protocol', () => {
  it('encodes a bare termination request as 0x100, the value the selftests expect in SEV_TERM data[0]', () => {
    expect(encodeGhcbMsr({ kind: 'term-req', reasonSet: SEV_TERM_SET.GEN, reasonCode: 0 })).toBe(0x100n);
    expect(decodeGhcbMsr(0x100n)).toEqual({ kind: 'term-req', reasonSet: 0, reasonCode: 0 });
  });

  it('puts the reason set in bits 15:12 and the code in bits 23:16 (sev-common.h)', () => {
    expect(encodeGhcbMsr({ kind: 'term-req', reasonSet: 1, reasonCode: 2 })).toBe(0x02_1100n);
  });

  it('lays out SEV_INFO as KVM writes it at vCPU reset', () => {
    const v = encodeGhcbMsr({ kind: 'sev-info-resp', maxVersion: 2, minVersion: 1, cBit: 51 });
    expect(v).toBe((2n << 48n) | (1n << 32n) | (51n << 24n) | 1n);
  });

  it('lays out CPUID and PSC requests as sev-common.h does', () => {
    expect(encodeGhcbMsr({ kind: 'cpuid-req', fn: 0x8000001f, reg: 'ebx' })).toBe(
      (0x8000001fn << 32n) | (1n << 30n) | 4n,
    );
    expect(encodeGhcbMsr({ kind: 'psc-req', gfn: 0x12345n, op: PSC_OP.SHARED })).toBe(
      (2n << 52n) | (0x12345n << 12n) | 0x14n,
    );
    expect(encodeGhcbMsr({ kind: 'pref-gpa-resp', gfn: GHCB_MSR_PREF_GPA_NONE })).toBe(
      0xffff_ffff_ffff_f011n,
    );
  });

  it('treats a value with the low 12 bits clear as the GHCB GPA', () => {
    expect(decodeGhcbMsr(0x7000n)).toEqual({ kind: 'ghcb-gpa', gpa: 0x7000n });
    expect(ghcbMsrCode(0x7000n)).toBe(0);
    expect(() => encodeGhcbMsr({ kind: 'ghcb-gpa', gpa: 0x7001n })).toThrow(/not 4 KiB aligned/);
  });

  it('round-trips every message', () => {
    fc.assert(
      fc.property(messageArb, (msg) => {
        const v = encodeGhcbMsr(msg);
        expect(v >= 0n && v < 1n << 64n).toBe(true);
        expect(decodeGhcbMsr(v)).toEqual(msg);
      }),
    );
  });

  it('round-trips every value it accepts', () => {
    fc.assert(
      fc.property(u(64), (v) => {
        let msg: GhcbMsrMessage;
        try {
          msg = decodeGhcbMsr(v);
        } catch (e) {
          expect(e).toBeInstanceOf(CocoError);
          return;
        }
        expect(encodeGhcbMsr(msg)).toBe(v);
      }),
    );
  });

  it('rejects an unknown code, naming the value', () => {
    expect(isKnownGhcbMsrCode(0x003)).toBe(false);
    expect(isKnownGhcbMsrCode(GHCB_MSR_CODE.HV_FT_REQ)).toBe(true);
    expect(() => decodeGhcbMsr(0x1003n)).toThrow(/0x1003 carries code 0x3, which is not a GHCB MSR protocol/);
  });

  it('rejects reserved payload bits unless told to read like KVM', () => {
    const v = 0x100n | (1n << 40n);
    expect(() => decodeGhcbMsr(v)).toThrow(/reserved bit 40 set/);
    expect(decodeGhcbMsr(v, { strict: false })).toEqual({ kind: 'term-req', reasonSet: 0, reasonCode: 0 });
  });

  it('rejects a field that does not fit its bits', () => {
    expect(() => encodeGhcbMsr({ kind: 'term-req', reasonSet: 16, reasonCode: 0 })).toThrow(
      /reasonSet 16 does not fit in 4 bits/,
    );
    expect(() => encodeGhcbMsr({ kind: 'psc-req', gfn: 1n << 40n, op: 1 })).toThrow(/gfn/);
  });
});
