import { describe, expect, expectTypeOf, test } from 'vitest';
import {
  CR,
  type Guest,
  GuestException,
  PF_ERROR,
  type ReadableCr,
  VECTOR,
  vectorName,
  type WritableCr,
} from './index.js';

describe('guest exceptions', () => {
  test('vector names use the architectural mnemonics', () => {
    expect(vectorName(VECTOR.PF)).toBe('#PF');
    expect(vectorName(29)).toBe('#VC');
    expect(vectorName(20)).toBe('#VE');
    expect(vectorName(200)).toBe('vector 200');
  });

  test('a GuestException message names the vector, error code, address and operation', () => {
    const e = new GuestException({
      vector: VECTOR.PF,
      errorCode: PF_ERROR.WRITE,
      cr2: 0xdead000n,
      operation: 'writeU64(0xdead000)',
      detail: 'PTE not present at level 1',
    });
    expect(e.message).toBe(
      '#PF error code 0x2 at 0xdead000 in writeU64(0xdead000): PTE not present at level 1',
    );
    expect(e.frame.vector).toBe(14);
  });
});

describe('guest control state (MOV to/from CR)', () => {
  test('CR and EFER bits sit at their architectural positions (SDM vol. 3 §2.5, §2.2.1)', () => {
    expect(CR.CR0_PE).toBe(0x1n);
    expect(CR.CR0_NE).toBe(0x20n);
    expect(CR.CR0_NW | CR.CR0_CD | CR.CR0_PG).toBe(0xe000_0000n);
    expect(CR.CR4_PAE | CR.CR4_MCE).toBe(0x60n);
    expect(CR.CR4_LA57).toBe(0x1000n);
    expect(CR.CR4_VMXE | CR.CR4_SMXE).toBe(0x6000n);
    expect(CR.EFER_LME | CR.EFER_LMA | CR.EFER_NXE).toBe(0xd00n);
  });

  test('readCr names CR0, CR2, CR3, CR4 and writeCr only CR0, CR3, CR4 (CR2 is written by #PF)', () => {
    expectTypeOf<Parameters<NonNullable<Guest['readCr']>>[0]>().toEqualTypeOf<ReadableCr>();
    expectTypeOf<ReadableCr>().toEqualTypeOf<0 | 2 | 3 | 4>();
    expectTypeOf<Parameters<NonNullable<Guest['writeCr']>>[0]>().toEqualTypeOf<WritableCr>();
    expectTypeOf<WritableCr>().toEqualTypeOf<0 | 3 | 4>();
  });

  test('a Guest written before readCr/writeCr existed still satisfies the interface (the addition is optional)', () => {
    type Older = Omit<Guest, 'readCr' | 'writeCr'>;
    expectTypeOf<Older>().toExtend<Guest>();
  });
});
