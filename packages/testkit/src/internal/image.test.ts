import { UCALL_GUEST_GLOBALS } from '@kvmtest/ucall';
import { describe, expect, test } from 'vitest';
import { buildGuestImage, defineGuest, guestGlobalsOf, RUNTIME_GLOBAL } from './image.js';

describe('guest images', () => {
  test('an image holds the test globals, the ucall globals and the runtime globals', () => {
    const img = buildGuestImage('t', { expected: 42n, buf: { size: 16 } });
    const names = img.globals.map((g) => g.name);
    expect(names.slice(0, 2)).toEqual(['expected', 'buf']);
    for (const g of UCALL_GUEST_GLOBALS) expect(names).toContain(g.name);
    expect(names).toContain(RUNTIME_GLOBAL.exceptionHandlers);
    expect([...img.bytes().subarray(0, 8)]).toEqual([42, 0, 0, 0, 0, 0, 0, 0]);
  });

  test('defineGuest attaches globals to the program and still runs it', async () => {
    let ran = false;
    const guest = defineGuest(
      async () => {
        ran = true;
      },
      { globals: { expected: 0n } },
    );
    expect(guestGlobalsOf(guest)).toEqual({ expected: 0n });
    await guest({} as never);
    expect(ran).toBe(true);
  });

  test('reserved names and conflicting declarations are refused', () => {
    expect(() => buildGuestImage('t', { ucall_pool: 0n })).toThrow(/reserved for ucall or the guest runtime/);
    expect(() => buildGuestImage('t', { a: 1n }, { a: 2n })).toThrow(/declared twice with different values/);
    expect(() => buildGuestImage('t', { a: { size: 4, init: 1n } })).toThrow(/too small for a u64/);
    expect(() => defineGuest(async () => {}, { globals: { z: { size: 0 } } })).toThrow(
      /sizes must be positive/,
    );
  });
});
