// Named cases of bad input at ucall's public entry points (the fuzz in fuzz.test.ts finds the class).
import { describe, expect, it } from 'vitest';
import { encodeSlot, formatGuestString, getUcall, transportFor, ucallInit } from '../src/index.js';
import { createFakeVm } from './support/fake-kvm.js';

describe('typed-errors-name-the-value', () => {
  it('names a bigint where a VM type or transport belongs instead of failing to serialize it', () => {
    expect(() => transportFor(1n as never)).toThrow(
      new TypeError('unknown VM type bigint 1n has no ucall transport'),
    );
    const f = createFakeVm();
    expect(() => ucallInit(f.target, { transport: 1n as never })).toThrow(
      /ucall transport bigint 1n is not one of/,
    );
  });
  it('refuses null contents, args that are not an array and a message that is not a string', () => {
    expect(() => encodeSlot(null as never)).toThrow(/encodeSlot: contents must be an object, got null/);
    expect(() => encodeSlot({ cmd: 1, args: 0 as never })).toThrow(/contents.args must be an array/);
    expect(() => encodeSlot({ cmd: 1, message: null as never })).toThrow(/contents.message must be a string/);
  });
  it('refuses a vCPU that is not one, and printf values that are not an array', () => {
    expect(() => getUcall(null as never)).toThrow(new TypeError('getUcall: vcpu must be a Vcpu, got null'));
    expect(() => formatGuestString('%d', undefined as never)).toThrow(/printf values must be an array/);
  });
});
