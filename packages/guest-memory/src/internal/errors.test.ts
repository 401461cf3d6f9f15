import { describe, expect, it } from 'vitest';
import { GUEST_MEMORY_ERROR, GuestMemoryError, hex, toU64, U64_MAX } from './errors.js';

describe('toU64', () => {
  it('returns bigints in 0..2^64-1 unchanged', () => {
    expect(toU64(0n, 'GPA')).toBe(0n);
    expect(toU64(U64_MAX, 'GPA')).toBe(U64_MAX);
  });

  it('throws a TypeError naming the quantity when given a number', () => {
    expect(() => toU64(4096, 'GPA')).toThrow(TypeError);
    expect(() => toU64(4096, 'GPA')).toThrow(/GPA must be a bigint, got number 4096/);
  });

  it('throws a RangeError naming the value in hex and the u64 rule when negative', () => {
    expect(() => toU64(-16n, 'GVA')).toThrow(RangeError);
    expect(() => toU64(-16n, 'GVA')).toThrow(/GVA -0x10 is outside the u64 range/);
  });

  it('throws a RangeError when above 2^64-1', () => {
    expect(() => toU64(1n << 64n, 'size')).toThrow(/size 0x10000000000000000 is outside the u64 range/);
  });
});

describe('GuestMemoryError', () => {
  it('carries a code from the table and structured details', () => {
    const e = new GuestMemoryError(GUEST_MEMORY_ERROR.UNBACKED, 'm', { gpa: 1n });
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('GuestMemoryError');
    expect(e.code).toBe('UNBACKED');
    expect(e.details).toEqual({ gpa: 1n });
  });

  it('has every code equal to its own name', () => {
    for (const [k, v] of Object.entries(GUEST_MEMORY_ERROR)) expect(v).toBe(k);
  });
});

describe('hex', () => {
  it('formats bigints and numbers with a 0x prefix', () => {
    expect(hex(0x21fffffn)).toBe('0x21fffff');
    expect(hex(255)).toBe('0xff');
    expect(hex(-1n)).toBe('-0x1');
  });
});
