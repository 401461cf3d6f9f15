import { describe, expect, test } from 'vitest';
import { cpuidHas, X86_FEATURE } from './x86-features.js';

const entry = (
  fn: number,
  index: number,
  flags: number,
  regs: Partial<Record<'eax' | 'ebx' | 'ecx' | 'edx', number>>,
) => ({
  function: fn,
  index,
  flags,
  eax: 0,
  ebx: 0,
  ecx: 0,
  edx: 0,
  ...regs,
});

describe('X86_FEATURE (selftests processor.h)', () => {
  test('names the bits where the SDM and APM put them', () => {
    expect(X86_FEATURE.XSAVE).toEqual({ function: 1, index: 0, reg: 'ecx', bit: 26 });
    expect(X86_FEATURE.LA57).toEqual({ function: 7, index: 0, reg: 'ecx', bit: 16 });
    expect(X86_FEATURE.LM).toEqual({ function: 0x8000_0001, index: 0, reg: 'edx', bit: 29 });
    expect(X86_FEATURE.SEV_ES).toEqual({ function: 0x8000_001f, index: 0, reg: 'eax', bit: 3 });
  });
  test('cpuidHas reads the bit, honouring the significant-index flag', () => {
    const table = [
      entry(1, 0, 0, { ecx: 1 << 26 }),
      entry(0xd, 0, 1, { eax: 7 }),
      entry(0xd, 1, 1, { eax: 1 << 3 }),
      entry(0x8000_0001, 0, 0, { edx: (1 << 29) >>> 0 }),
    ];
    expect(cpuidHas(table, X86_FEATURE.XSAVE)).toBe(true);
    expect(cpuidHas(table, X86_FEATURE.AVX)).toBe(false);
    expect(cpuidHas(table, X86_FEATURE.XSAVES)).toBe(true);
    expect(cpuidHas(table, X86_FEATURE.LM)).toBe(true);
    expect(cpuidHas(table, X86_FEATURE.SEV)).toBe(false);
    expect(cpuidHas([entry(0x8000_001f, 0, 0, { eax: 0x8000_0000 | 2 })], X86_FEATURE.SEV)).toBe(true);
  });
});
