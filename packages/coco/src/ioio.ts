// SVM IOIO exit information (EXITINFO1 of an IOIO intercept, and sw_exit_info_1 of a GHCB IOIO request).

import { CocoError } from './error.js';
import { checkOneOf, checkUint, hex, rejectReserved } from './internal/bits.js';

/** Bit positions of the SVM IOIO exit info (arch/x86/include/uapi/asm/svm.h `SVM_IOIO_*`). */
export const SVM_IOIO = {
  TYPE_IN: 0, // 1 = IN, 0 = OUT
  STR: 2,
  REP: 3,
  SZ8: 4,
  SZ16: 5,
  SZ32: 6,
  A16: 7,
  A32: 8,
  A64: 9,
  SEG_SHIFT: 10, // bits 12:10
  PORT_SHIFT: 16, // bits 31:16
} as const;

/** Segment register numbers in IOIO bits 12:10 (AMD APM vol. 2, IOIO intercept). */
export const IOIO_SEGMENT = { ES: 0, CS: 1, SS: 2, DS: 3, FS: 4, GS: 5 } as const;

/** Reserved bits of the IOIO exit info: 1 and 15:13 (and everything above 31). */
export const SVM_IOIO_RESERVED_MASK = 0x0000e002;

/** A decoded IOIO exit info. */
export interface IoioInfo {
  readonly direction: 'in' | 'out';
  /** Operand size in bytes. */
  readonly size: 1 | 2 | 4;
  readonly port: number;
  /** INS/OUTS. */
  readonly string: boolean;
  readonly rep: boolean;
  /** Address size in bits; absent when no A16/A32/A64 bit is set. */
  readonly addressSize?: 16 | 32 | 64;
  /** Segment register number (bits 12:10), 0..5; 0 (ES) when not given. */
  readonly segment: number;
}

const SIZE_BIT = { 1: SVM_IOIO.SZ8, 2: SVM_IOIO.SZ16, 4: SVM_IOIO.SZ32 } as const;
const ADDR_BIT = { 16: SVM_IOIO.A16, 32: SVM_IOIO.A32, 64: SVM_IOIO.A64 } as const;

/** Encodes an IOIO exit info as the u64 placed in sw_exit_info_1 (arch/x86/kvm/svm/sev.c: sev_es_validate_vmgexit(), `SVM_EXIT_IOIO`). `segment` defaults to 0. */
export function encodeIoioExitInfo(info: Omit<IoioInfo, 'segment'> & { readonly segment?: number }): bigint {
  checkOneOf('IOIO direction', info.direction, ['in', 'out'] as const);
  let v = info.direction === 'in' ? 1 : 0;
  if (info.string) v |= 1 << SVM_IOIO.STR;
  if (info.rep) v |= 1 << SVM_IOIO.REP;
  v |= 1 << SIZE_BIT[checkOneOf('IOIO size', info.size, [1, 2, 4] as const)];
  if (info.addressSize !== undefined)
    v |= 1 << ADDR_BIT[checkOneOf('IOIO addressSize', info.addressSize, [16, 32, 64] as const)];
  const seg = checkUint('IOIO segment', info.segment ?? 0, 3);
  if (seg > IOIO_SEGMENT.GS)
    throw new CocoError('FIELD_RANGE', `IOIO segment ${seg} is not a segment register (0..5)`, {
      segment: seg,
    });
  v |= seg << SVM_IOIO.SEG_SHIFT;
  v |= checkUint('IOIO port', info.port, 16) << SVM_IOIO.PORT_SHIFT;
  return BigInt(v >>> 0);
}

/**
 * Decodes an IOIO exit info. Rejects bits above 31, reserved bits 1 and 15:13, a size field that is not
 * exactly one of SZ8/SZ16/SZ32, more than one address-size bit, and segment 6 or 7.
 */
export function decodeIoioExitInfo(value: bigint | number): IoioInfo {
  const v = typeof value === 'bigint' ? value : BigInt(checkUint('IOIO exit info', value, 32));
  rejectReserved(
    'IOIO exit info',
    v,
    ~0xffffffffn | BigInt(SVM_IOIO_RESERVED_MASK),
    'bits 1, 15:13 and 63:32 are reserved',
  );
  const n = Number(v);
  const sz = (n >>> 4) & 7;
  const size = sz === 1 ? 1 : sz === 2 ? 2 : sz === 4 ? 4 : undefined;
  if (size === undefined)
    throw new CocoError(
      'INVALID_COMBINATION',
      `IOIO exit info ${hex(v)} has size bits 6:4 = ${sz.toString(2).padStart(3, '0')}b; exactly one of SZ8/SZ16/SZ32 must be set`,
      {
        value: v,
      },
    );
  const a = (n >>> 7) & 7;
  if (a !== 0 && a !== 1 && a !== 2 && a !== 4)
    throw new CocoError(
      'INVALID_COMBINATION',
      `IOIO exit info ${hex(v)} has address-size bits 9:7 = ${a.toString(2).padStart(3, '0')}b; at most one of A16/A32/A64 may be set`,
      {
        value: v,
      },
    );
  const segment = (n >>> SVM_IOIO.SEG_SHIFT) & 7;
  if (segment > IOIO_SEGMENT.GS)
    throw new CocoError(
      'FIELD_RANGE',
      `IOIO exit info ${hex(v)} names segment ${segment}; only 0..5 (ES..GS) exist`,
      {
        value: v,
        segment,
      },
    );
  const out: IoioInfo = {
    direction: n & 1 ? 'in' : 'out',
    size,
    port: n >>> SVM_IOIO.PORT_SHIFT,
    string: ((n >>> SVM_IOIO.STR) & 1) === 1,
    rep: ((n >>> SVM_IOIO.REP) & 1) === 1,
    segment,
    ...(a === 0 ? {} : { addressSize: a === 1 ? 16 : a === 2 ? 32 : 64 }),
  };
  return Object.freeze(out);
}
