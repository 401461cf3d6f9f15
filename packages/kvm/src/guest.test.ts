import { describe, expect, test } from 'vitest';
import { GuestException, PF_ERROR, VECTOR, vectorName } from './index.js';

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
