import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeSevStatus,
  encodeSevStatus,
  SEV_MSR,
  SEV_STATUS_BIT,
  SEV_STATUS_RESERVED_MASK,
  type SevStatusFlag,
  SVM_SEV_FEATURE_BIT,
  sevStatusFor,
} from './index.js';

const flags = Object.keys(SEV_STATUS_BIT) as SevStatusFlag[];

describe('SEV MSRs', () => {
  it('numbers the GHCB and status MSRs as msr-index.h does', () => {
    expect(SEV_MSR.MSR_AMD64_SEV_ES_GHCB).toBe(0xc0010130);
    expect(SEV_MSR.MSR_AMD64_SEV).toBe(0xc0010131);
  });

  it('reserves bits 13, 15 and 19 up in the status MSR (msr-index.h)', () => {
    expect(SEV_STATUS_RESERVED_MASK & (1n << 13n)).not.toBe(0n);
    expect(SEV_STATUS_RESERVED_MASK & (1n << 15n)).not.toBe(0n);
    expect(SEV_STATUS_RESERVED_MASK & 0x7ffffn & ~((1n << 13n) | (1n << 15n))).toBe(0n);
    expect(() => decodeSevStatus(1n << 13n)).toThrow(/reserved bit 13 set/);
    expect(() => decodeSevStatus(1n << 40n)).toThrow(/reserved bit 40 set/);
  });

  it('round-trips every set of status flags', () => {
    fc.assert(
      fc.property(fc.subarray(flags), (set) => {
        const v = encodeSevStatus(set);
        expect(new Set(decodeSevStatus(v))).toEqual(new Set(set));
        expect(encodeSevStatus(decodeSevStatus(v))).toBe(v);
      }),
    );
  });

  it('maps VMSA features to status bits shifted by 2', () => {
    for (const [name, bit] of Object.entries(SVM_SEV_FEATURE_BIT)) {
      if (name === 'SNP_ACTIVE') continue;
      expect(SEV_STATUS_BIT[name as SevStatusFlag]).toBe(bit + 2);
    }
  });

  it('gives each guest kind its status value', () => {
    expect(sevStatusFor('sev')).toBe(1n);
    expect(sevStatusFor('sev-es')).toBe(3n);
    expect(sevStatusFor('sev-es', 1n << 5n)).toBe(3n | (1n << 7n));
    expect(sevStatusFor('sev-snp', 1n)).toBe(7n);
    expect(() => sevStatusFor('sev', 1n << 5n)).toThrow(/plain SEV guest has no VMSA features/);
    expect(() => sevStatusFor('sev-es', 1n)).toThrow(/SNP_ACTIVE/);
    expect(() => sevStatusFor('sev-snp', 1n | (1n << 11n))).toThrow(/reserved bit 13/);
  });
});
