import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CocoError,
  GHCB_FIELD,
  GHCB_FIELDS,
  GHCB_LAYOUT,
  Ghcb,
  type GhcbField,
  ghcbValidBit,
  isKnownSvmExitCode,
  SVM_EXIT,
  SVM_VMGEXIT,
  svmExitCodeName,
} from './index.js';

describe('GHCB layout', () => {
  it('maps fields to valid-bitmap bits as offset / 8 (svm.h GHCB_BITMAP_IDX)', () => {
    expect(ghcbValidBit('cpl')).toBe(25);
    expect(ghcbValidBit('xss')).toBe(40);
    expect(ghcbValidBit('rax')).toBe(63);
    expect(ghcbValidBit('rcx')).toBe(97);
    expect(ghcbValidBit('rbx')).toBe(99);
    expect(ghcbValidBit('r15')).toBe(111);
    expect(ghcbValidBit('swExitCode')).toBe(114);
    expect(ghcbValidBit('swScratch')).toBe(117);
    expect(ghcbValidBit('xcr0')).toBe(125);
  });

  it('keeps the save area, bitmap, shared buffer, version and usage apart', () => {
    expect(GHCB_LAYOUT.VALID_BITMAP_OFFSET + GHCB_LAYOUT.VALID_BITMAP_SIZE).toBe(
      GHCB_LAYOUT.X87_STATE_GPA_OFFSET,
    );
    expect(GHCB_LAYOUT.SHARED_BUFFER_OFFSET + GHCB_LAYOUT.SHARED_BUFFER_SIZE).toBe(0xff0);
    expect(GHCB_LAYOUT.PROTOCOL_VERSION_OFFSET).toBe(0xffa);
    expect(GHCB_LAYOUT.USAGE_OFFSET).toBe(0xffc);
    for (const f of GHCB_FIELDS)
      expect(GHCB_FIELD[f].offset + GHCB_FIELD[f].size).toBeLessThanOrEqual(GHCB_LAYOUT.VALID_BITMAP_OFFSET);
  });

  it('names the exit codes the kernel uses', () => {
    expect(SVM_EXIT.IOIO).toBe(0x7b);
    expect(SVM_EXIT.MSR).toBe(0x7c);
    expect(SVM_EXIT.CPUID).toBe(0x72);
    expect(SVM_EXIT.VMMCALL).toBe(0x81);
    expect(SVM_VMGEXIT.PSC).toBe(0x8000_0010);
    expect(SVM_VMGEXIT.TERM_REQUEST).toBe(0x8000_fffe);
    expect(SVM_VMGEXIT.UNSUPPORTED_EVENT).toBe(0x8000_ffff);
    expect(svmExitCodeName(0x7bn)).toBe('SVM_EXIT_IOIO');
    expect(svmExitCodeName(0x8000_0001)).toBe('SVM_VMGEXIT_MMIO_READ');
    expect(svmExitCodeName(0x1234)).toBeUndefined();
    expect(isKnownSvmExitCode(0x8000_0013n)).toBe(true);
    expect(isKnownSvmExitCode(1n << 40n)).toBe(false);
  });
});

describe('Ghcb view', () => {
  it('fills an IOIO request the way the #VC handler does, little-endian in the page', () => {
    const g = new Ghcb();
    g.set('swExitCode', BigInt(SVM_EXIT.IOIO));
    g.set('swExitInfo1', 0x1000_0010n);
    g.set('swExitInfo2', 0n);
    g.set('rax', 0x1234_5678n);
    expect(g.validFields()).toEqual(['rax', 'swExitCode', 'swExitInfo1', 'swExitInfo2']);
    expect(g.bytes[0x390]).toBe(0x7b);
    expect(g.bytes[0x1f8]).toBe(0x78);
    expect(g.validBitmap).toBe((1n << 63n) | (1n << 114n) | (1n << 115n) | (1n << 116n));
  });

  it('reads 0 for a field that is not valid, as KVM does', () => {
    const g = new Ghcb();
    g.set('rbx', 7n);
    g.invalidate('rbx');
    expect(g.get('rbx')).toBe(7n);
    expect(g.getIfValid('rbx')).toBe(0n);
  });

  it('round-trips every field value and sets exactly its valid bit', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...GHCB_FIELDS),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        (field: GhcbField, raw) => {
          const g = new Ghcb();
          const v = GHCB_FIELD[field].size === 1 ? raw & 0xffn : raw;
          g.set(field, v);
          expect(g.get(field)).toBe(v);
          expect(g.isValid(field)).toBe(true);
          expect(g.validBitmap).toBe(1n << BigInt(ghcbValidBit(field)));
          const again = new Ghcb(g.bytes.slice());
          expect(again.getIfValid(field)).toBe(v);
        },
      ),
    );
  });

  it('clears the bitmap, resets for a new request and zeroes the page', () => {
    const g = new Ghcb();
    g.set('swExitCode', 0x72n);
    g.set('rcx', 1n);
    g.reset();
    expect(g.get('swExitCode')).toBe(0n);
    expect(g.get('rcx')).toBe(1n);
    expect(g.validFields()).toEqual([]);
    g.usage = 5;
    g.clear();
    expect(g.bytes.every((b) => b === 0)).toBe(true);
  });

  it('reads and writes version, usage, x87 GPA and the shared buffer in place', () => {
    const page = new Uint8Array(4096);
    const g = new Ghcb(page);
    g.protocolVersion = 2;
    g.usage = 0;
    g.x87StateGpa = 0xabc000n;
    g.sharedBuffer[0] = 0xee;
    expect(page[0xffa]).toBe(2);
    expect(page[0x800]).toBe(0xee);
    expect(g.sharedBuffer.length).toBe(2032);
    expect(new Ghcb(page).x87StateGpa).toBe(0xabc000n);
  });

  it('rejects a page of the wrong size, an unknown field and a value too wide', () => {
    expect(() => new Ghcb(new Uint8Array(100))).toThrow(/a GHCB is 4096 bytes, got 100/);
    expect(() => new Ghcb().set('rip2' as GhcbField, 0n)).toThrow(/GHCB field "rip2" is not known/);
    expect(() => new Ghcb().set('cpl', 256n)).toThrow(CocoError);
    expect(() => new Ghcb().set('cpl', 256n)).toThrow(/GHCB cpl 0x100 does not fit in 8 bits/);
    expect(() => new Ghcb().set('rax', 1n << 64n)).toThrow(
      /GHCB rax 0x10000000000000000 does not fit in 64 bits/,
    );
    expect(() => new Ghcb().set('rcx', -1n)).toThrow(/GHCB rcx -0x1 does not fit in 64 bits/);
    expect(() => new Ghcb().set('rdx', 1 as unknown as bigint)).toThrow(/GHCB rdx 1 does not fit in 64 bits/);
    // The largest values fit, and a rejected value leaves the field and its valid bit untouched.
    const g = new Ghcb();
    g.set('cpl', 255n);
    g.set('rax', (1n << 64n) - 1n);
    expect([g.get('cpl'), g.get('rax')]).toEqual([255n, (1n << 64n) - 1n]);
    expect(() => g.set('rbx', 1n << 64n)).toThrow(CocoError);
    expect(g.isValid('rbx')).toBe(false);
    expect(g.validFields()).toEqual(['cpl', 'rax']);
    expect(() => {
      new Ghcb().protocolVersion = 0x10000;
    }).toThrow(/does not fit in 16 bits/);
  });
});
