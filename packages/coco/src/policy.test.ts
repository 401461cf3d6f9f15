import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CocoError,
  decodeSevPolicy,
  decodeSnpPolicy,
  encodeSevPolicy,
  encodeSnpPolicy,
  KVM_SNP_POLICY_MASK_VALID,
  SEV_POLICY_RESERVED_MASK,
  SNP_POLICY_RESERVED_MASK,
  snpPolicyProblems,
  validateSevPolicy,
  validateSnpPolicy,
} from './index.js';

describe('legacy SEV policy', () => {
  it('encodes the flags at bits 0..5 and the API version at 16..31', () => {
    expect(encodeSevPolicy({ noDebug: true })).toBe(1);
    expect(encodeSevPolicy({ es: true, noKeySharing: true })).toBe(0b110);
    expect(encodeSevPolicy({ sev: true, apiMajor: 1, apiMinor: 0x30 })).toBe(0x3001_0020);
  });

  it('round-trips every policy without reserved bits', () => {
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), (raw) => {
        const policy = (raw & ~SEV_POLICY_RESERVED_MASK) >>> 0;
        expect(encodeSevPolicy(decodeSevPolicy(policy))).toBe(policy);
      }),
    );
  });

  it('names the reserved bit that is set', () => {
    expect(() => validateSevPolicy(1 << 6)).toThrow(/reserved bit 6 set/);
    try {
      decodeSevPolicy(0x8040);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(CocoError);
      expect((e as CocoError).code).toBe('RESERVED_BITS');
      expect((e as CocoError).details.reservedBits).toEqual([6, 15]);
    }
  });

  it('rejects an API version wider than a byte', () => {
    expect(() => encodeSevPolicy({ apiMajor: 256 })).toThrow(/apiMajor 256 does not fit in 8 bits/);
  });
});

describe('SNP policy', () => {
  it('has the valid mask mainline KVM uses (svm/sev.c: snp_launch_start())', () => {
    expect(KVM_SNP_POLICY_MASK_VALID).toBe(0x1b_ffffn);
  });

  it('sets RSVD_MBO by default and SMT when asked', () => {
    expect(encodeSnpPolicy({})).toBe(1n << 17n);
    expect(encodeSnpPolicy({ smt: true })).toBe(0x3_0000n);
    expect(encodeSnpPolicy({ smt: true, debug: true, abiMajor: 1, abiMinor: 55 })).toBe(0xb_0137n);
  });

  it('round-trips every policy without reserved bits', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (raw) => {
        const policy = raw & ~SNP_POLICY_RESERVED_MASK;
        expect(encodeSnpPolicy(decodeSnpPolicy(policy))).toBe(policy);
      }),
    );
  });

  it('rejects reserved bits 63:26 on decode', () => {
    expect(() => decodeSnpPolicy(1n << 26n)).toThrow(/reserved bit 26 set/);
  });

  it('applies KVM SNP_LAUNCH_START checks in order', () => {
    expect(snpPolicyProblems(0x3_0000n)).toEqual([]);
    expect(snpPolicyProblems(0x1_0000n)).toEqual([{ rule: 'rsvd-mbo-clear' }]);
    expect(snpPolicyProblems(0x13_0000n)).toEqual([{ rule: 'single-socket' }]);
    expect(snpPolicyProblems(0x7_0000n)).toEqual([{ rule: 'unsupported-bits', bits: [18] }]);
    expect(() => validateSnpPolicy(0x7_0000n)).toThrow(/bit 18 outside the supported mask 0x1bffff/);
    expect(() => validateSnpPolicy(0x1_0000n)).toThrow(/bit 17 \(RSVD_MBO\) clear/);
    expect(() => validateSnpPolicy(0x13_0000n)).toThrow(/SINGLE_SOCKET/);
  });

  it('accepts a wider mask when the caller models a newer kernel', () => {
    expect(snpPolicyProblems(0x7_0000n, { validMask: KVM_SNP_POLICY_MASK_VALID | (1n << 18n) })).toEqual([]);
  });
});
