import { describe, expect, test } from 'vitest';
import { CPUID_FLAG_SIGNIFICANT_INDEX, findCpuid, hostPtr, REG_NAMES, zeroRegs } from './index.js';

describe('registers and CPUID', () => {
  test('zeroRegs has every register zero but the reserved RFLAGS bit 1', () => {
    const r = zeroRegs();
    for (const n of REG_NAMES) expect(r[n]).toBe(n === 'rflags' ? 2n : 0n);
  });

  test('findCpuid honours the significant-index flag', () => {
    const entries = [
      { function: 7, index: 0, flags: CPUID_FLAG_SIGNIFICANT_INDEX, eax: 1, ebx: 0, ecx: 0, edx: 0 },
      { function: 7, index: 1, flags: CPUID_FLAG_SIGNIFICANT_INDEX, eax: 2, ebx: 0, ecx: 0, edx: 0 },
      { function: 0x80000008, index: 0, flags: 0, eax: 0x3030, ebx: 0, ecx: 0, edx: 0 },
    ];
    expect(findCpuid(entries, 7, 1)?.eax).toBe(2);
    expect(findCpuid(entries, 0x80000008, 5)?.eax).toBe(0x3030);
    expect(findCpuid(entries, 0x8000001f)).toBeUndefined();
  });
});

describe('hostPtr', () => {
  test('points into a buffer', () => {
    const b = new Uint8Array(8192);
    expect(hostPtr(b, 4096)).toEqual({ buffer: b, offset: 4096 });
  });

  test('rejects an offset outside the buffer, naming it', () => {
    expect(() => hostPtr(new Uint8Array(16), 17)).toThrow(/offset 17 is outside the buffer \(0\.\.16\)/);
    expect(() => hostPtr(new Uint8Array(16), -1)).toThrow(RangeError);
    expect(() => hostPtr([] as unknown as Uint8Array)).toThrow(TypeError);
  });
});
