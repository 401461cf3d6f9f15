import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import {
  argSregsInput,
  CPUID_FLAG_SIGNIFICANT_INDEX,
  codeSegment64,
  copySregs,
  dataSegment64,
  findCpuid,
  hostPtr,
  mergeSregs,
  REG_NAMES,
  SEGMENT_FIELDS,
  SEGMENT_NAMES,
  type Segment,
  type Sregs,
  type SregsInput,
  tssSegment64,
  unusableSegment,
  zeroRegs,
} from './index.js';

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

/** Any Segment whose fields fit their uapi widths. */
const segmentArb: fc.Arbitrary<Segment> = fc.record({
  base: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  limit: fc.nat({ max: 0xffff_ffff }),
  selector: fc.nat({ max: 0xffff }),
  type: fc.nat({ max: 0xff }),
  present: fc.nat({ max: 0xff }),
  dpl: fc.nat({ max: 0xff }),
  db: fc.nat({ max: 0xff }),
  s: fc.nat({ max: 0xff }),
  l: fc.nat({ max: 0xff }),
  g: fc.nat({ max: 0xff }),
  avl: fc.nat({ max: 0xff }),
  unusable: fc.nat({ max: 0xff }),
});
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const tableArb = fc.record({ base: u64, limit: fc.nat({ max: 0xffff }) });
const sregsArb: fc.Arbitrary<Sregs> = fc.record({
  cs: segmentArb,
  ds: segmentArb,
  es: segmentArb,
  fs: segmentArb,
  gs: segmentArb,
  ss: segmentArb,
  tr: segmentArb,
  ldt: segmentArb,
  gdt: tableArb,
  idt: tableArb,
  cr0: u64,
  cr2: u64,
  cr3: u64,
  cr4: u64,
  efer: u64,
});
/** An SregsInput: control registers, and each segment or table present or not. */
const inputArb: fc.Arbitrary<SregsInput> = fc
  .tuple(sregsArb, fc.array(fc.boolean(), { minLength: 10, maxLength: 10 }))
  .map(([s, keep]) => {
    const out: SregsInput = { cr0: s.cr0, cr2: s.cr2, cr3: s.cr3, cr4: s.cr4, efer: s.efer };
    [...SEGMENT_NAMES, 'gdt', 'idt'].forEach((n, i) => {
      if (keep[i]) Object.assign(out, { [n]: s[n as keyof Sregs] });
    });
    return out;
  });

describe('Sregs with segments (struct kvm_sregs)', () => {
  test('mergeSregs: the input wins where it has a field, the current state elsewhere, and nothing is shared', () => {
    fc.assert(
      fc.property(sregsArb, inputArb, (current, input) => {
        const before = copySregs(current);
        const out = mergeSregs(current, input);
        for (const n of [...SEGMENT_NAMES, 'gdt', 'idt'] as const) {
          expect(out[n]).toEqual(input[n] ?? current[n]);
          expect(out[n]).not.toBe(input[n]);
          expect(out[n]).not.toBe(current[n]);
        }
        for (const n of ['cr0', 'cr2', 'cr3', 'cr4', 'efer'] as const) expect(out[n]).toBe(input[n]);
        expect(current).toEqual(before);
      }),
    );
  });
  test('argSregsInput accepts every SregsInput and refuses a field outside its uapi width', () => {
    fc.assert(
      fc.property(
        inputArb,
        fc.constantFrom(...SEGMENT_NAMES),
        fc.constantFrom(...SEGMENT_FIELDS),
        (input, n, [f, max]) => {
          expect(argSregsInput('KVM_SET_SREGS', input)).toBe(input);
          const seg = { ...(input[n] ?? codeSegment64(8)), [f]: max + 1 };
          expect(() => argSregsInput('KVM_SET_SREGS', { ...input, [n]: seg })).toThrow(
            new RegExp(`sregs\\.${n}\\.${f}`),
          );
        },
      ),
    );
  });
  test("the selftests' segments: flat 64-bit code and data, a 64-bit TSS, an unusable null segment", () => {
    expect(codeSegment64(8)).toEqual({
      base: 0n,
      limit: 0xffff_ffff,
      selector: 8,
      type: 11,
      present: 1,
      dpl: 0,
      db: 0,
      s: 1,
      l: 1,
      g: 1,
      avl: 0,
      unusable: 0,
    });
    expect(dataSegment64(0x10)).toEqual({ ...codeSegment64(0x10), type: 3, l: 0 });
    expect(tssSegment64(0x5000n, 0x18)).toMatchObject({
      base: 0x5000n,
      limit: 0x67,
      type: 11,
      s: 0,
      g: 0,
      present: 1,
    });
    expect(unusableSegment()).toEqual({
      base: 0n,
      limit: 0,
      selector: 0,
      type: 0,
      present: 0,
      dpl: 0,
      db: 0,
      s: 0,
      l: 0,
      g: 0,
      avl: 0,
      unusable: 1,
    });
  });
});
