import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CocoError,
  cBitFromCpuid,
  cBitMask,
  decodeCpuid8000001F,
  encodeCpuid8000001F,
  hasSevCpuFeature,
  SEV_CPUID_FEATURE_BIT,
  type SevCpuFeature,
  sevAsidRanges,
  tdxSharedBit,
  tdxSharedMask,
} from './index.js';

const names = Object.keys(SEV_CPUID_FEATURE_BIT) as SevCpuFeature[];
const namedMask = names.reduce((m, n) => (m | (1 << SEV_CPUID_FEATURE_BIT[n])) >>> 0, 0);

describe('CPUID 0x8000001F', () => {
  it('places the kernel-named feature bits where cpufeatures.h word 19 has them', () => {
    expect(SEV_CPUID_FEATURE_BIT.SME).toBe(0);
    expect(SEV_CPUID_FEATURE_BIT.SEV).toBe(1);
    expect(SEV_CPUID_FEATURE_BIT.SEV_ES).toBe(3);
    expect(SEV_CPUID_FEATURE_BIT.SEV_SNP).toBe(4);
    expect(SEV_CPUID_FEATURE_BIT.DEBUG_SWAP).toBe(14);
  });

  it('encodes a typical EPYC answer', () => {
    const regs = encodeCpuid8000001F({
      features: ['SME', 'SEV', 'SEV_ES', 'SEV_SNP'],
      otherEaxBits: 0,
      cBit: 51,
      physAddrReduction: 5,
      numVmpls: 4,
      maxSevAsid: 509,
      minSevAsid: 100,
    });
    expect(regs).toEqual({ eax: 0x1b, ebx: (4 << 12) | (5 << 6) | 51, ecx: 509, edx: 100 });
    expect(cBitFromCpuid(regs)).toBe(51);
    expect(cBitFromCpuid(regs.ebx)).toBe(51);
    expect(cBitMask(51)).toBe(1n << 51n);
  });

  it('round-trips every well-formed register set', () => {
    const regsArb = fc.record({
      eax: fc.nat({ max: 0xffffffff }),
      ebx: fc.nat({ max: 0xffff }),
      ecx: fc.nat({ max: 0xffffffff }),
      edx: fc.nat({ max: 0xffffffff }),
    });
    fc.assert(
      fc.property(regsArb, (regs) => {
        const info = decodeCpuid8000001F(regs);
        expect(encodeCpuid8000001F(info)).toEqual(regs);
        for (const f of info.features) expect(hasSevCpuFeature(info, f)).toBe(true);
        expect(info.otherEaxBits & namedMask).toBe(0);
      }),
    );
  });

  it('round-trips the decoded form', () => {
    fc.assert(
      fc.property(
        fc.subarray(names),
        fc.nat({ max: 63 }),
        fc.nat({ max: 63 }),
        fc.nat({ max: 15 }),
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 0xffffffff }),
        (features, cBit, physAddrReduction, numVmpls, maxSevAsid, minSevAsid) => {
          const info = {
            features,
            otherEaxBits: 0,
            cBit,
            physAddrReduction,
            numVmpls,
            maxSevAsid,
            minSevAsid,
          };
          const back = decodeCpuid8000001F(encodeCpuid8000001F(info));
          expect(back).toEqual({
            ...info,
            features: [...features].sort((a, b) => SEV_CPUID_FEATURE_BIT[a] - SEV_CPUID_FEATURE_BIT[b]),
          });
        },
      ),
    );
  });

  it('rejects EBX[31:16] set, naming the bit', () => {
    expect(() => decodeCpuid8000001F({ eax: 0, ebx: 1 << 16, ecx: 0, edx: 0 })).toThrow(
      /reserved bit 16 set/,
    );
  });

  it('rejects a C-bit position that does not fit 6 bits and a register outside u32', () => {
    const base = {
      features: [],
      otherEaxBits: 0,
      physAddrReduction: 0,
      numVmpls: 0,
      maxSevAsid: 0,
      minSevAsid: 0,
    };
    expect(() => encodeCpuid8000001F({ ...base, cBit: 64 })).toThrow(CocoError);
    expect(() => decodeCpuid8000001F({ eax: 2 ** 32, ebx: 0, ecx: 0, edx: 0 })).toThrow(
      /does not fit in 32 bits/,
    );
  });

  it('rejects unnamed EAX bits that overlap named ones', () => {
    const info = {
      features: [],
      otherEaxBits: 2,
      cBit: 0,
      physAddrReduction: 0,
      numVmpls: 0,
      maxSevAsid: 0,
      minSevAsid: 0,
    };
    expect(() => encodeCpuid8000001F(info)).toThrow(/overlaps named feature bits/);
  });

  it('splits ASIDs into the SEV range and the SEV-ES/SNP range (svm/sev.c: sev_hardware_setup())', () => {
    expect(sevAsidRanges({ minSevAsid: 100, maxSevAsid: 509 })).toEqual({
      sev: { first: 100, last: 509 },
      sevEs: { first: 1, last: 99 },
    });
    const none = sevAsidRanges({ minSevAsid: 1, maxSevAsid: 15 });
    expect(none.sevEs.first > none.sevEs.last).toBe(true);
  });
});

describe('TDX shared bit', () => {
  it('is GPAW − 1 (vmx/tdx.c)', () => {
    expect(tdxSharedBit(48)).toBe(47);
    expect(tdxSharedBit(52)).toBe(51);
    expect(tdxSharedMask(48)).toBe(0x8000_0000_0000n);
    expect(tdxSharedMask(52)).toBe(1n << 51n);
  });

  it('rejects any other GPAW', () => {
    expect(() => tdxSharedBit(50 as never)).toThrow(/TDX GPAW 50 is not one of 48, 52/);
  });
});
