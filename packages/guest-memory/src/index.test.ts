import { describe, expect, it } from 'vitest';
import * as api from './index.js';

describe('the public API', () => {
  it('exports the names other packages are written against', () => {
    const names = [
      'PAGE_SIZE',
      'PAGE_SHIFT',
      'PAGE_SIZE_4K',
      'PAGE_SIZE_2M',
      'PAGE_SIZE_1G',
      'GuestMemoryError',
      'GUEST_MEMORY_ERROR',
      'toU64',
      'Region',
      'PhysicalMemory',
      'PageAllocator',
      'PTE',
      'walk',
      'PageTables',
      'AddressSpace',
      'GuestImage',
      'LoadedImage',
      'loadImage',
    ];
    for (const n of names) expect(api).toHaveProperty(n);
    expect(api.PAGE_SIZE).toBe(4096);
    expect(api.PAGE_SHIFT).toBe(12);
    expect(api.PAGE_SIZE_1G).toBe(0x4000_0000n);
  });

  it('has every error code the contract lists', () => {
    for (const c of [
      'OVERLAP',
      'UNALIGNED',
      'ZERO_SIZE',
      'SLOT_IN_USE',
      'NO_SUCH_SLOT',
      'UNBACKED',
      'OUT_OF_PAGES',
      'ALREADY_MAPPED',
      'NOT_MAPPED',
      'NON_CANONICAL',
      'BAD_ADDRESS',
      'UNKNOWN_GLOBAL',
    ])
      expect(api.GUEST_MEMORY_ERROR).toHaveProperty(c, c);
  });
});
