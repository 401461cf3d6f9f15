// SNP page-state change (PSC) descriptor: the buffer an SNP guest puts in the GHCB shared buffer for
// VMGEXIT PSC (sw_scratch points at it).

import { CocoError } from './error.js';
import {
  bitsOf,
  checkBigUint,
  checkOneOf,
  checkUint,
  genmask,
  hex,
  rejectReserved,
} from './internal/bits.js';

/** Most entries one PSC descriptor holds (arch/x86/include/asm/sev-common.h `VMGEXIT_PSC_MAX_ENTRY`). */
export const VMGEXIT_PSC_MAX_ENTRY = 253;

/** Size of a PSC descriptor: 8-byte header + 253 entries of 8 bytes = 2032, the GHCB shared buffer. */
export const PSC_DESC_SIZE = 8 + VMGEXIT_PSC_MAX_ENTRY * 8;

/** PSC results KVM returns in sw_exit_info_2 (arch/x86/include/asm/sev-common.h `VMGEXIT_PSC_ERROR_*`: GENERIC, INVALID_HDR, INVALID_ENTRY). */
export const VMGEXIT_PSC_ERROR = {
  GENERIC: 0x100n << 32n,
  INVALID_HDR: (1n << 32n) | 1n,
  INVALID_ENTRY: (1n << 32n) | 2n,
} as const;

/** One PSC entry (u64): cur_page [11:0], gfn [51:12], operation [55:52], page size [56] (sev-common.h `struct psc_entry`). */
export interface PscEntry {
  /** Pages of this entry already processed (0 when the guest submits it). */
  readonly curPage: number;
  readonly gfn: bigint;
  /** A {@link PSC_OP} value (1 private, 2 shared, 3 PSMASH, 4 UNSMASH); other values are kept as given. */
  readonly op: number;
  readonly pageSize: '4k' | '2m';
}

/** A PSC descriptor: header {cur_entry, end_entry (inclusive)} and the entries 0..end_entry. */
export interface PscDesc {
  readonly curEntry: number;
  readonly entries: readonly PscEntry[];
}

/** Encodes one PSC entry to its u64. */
export function encodePscEntry(e: PscEntry): bigint {
  checkOneOf('PSC entry pageSize', e.pageSize, ['4k', '2m'] as const);
  return (
    BigInt(checkUint('PSC entry curPage', e.curPage, 12)) |
    (checkBigUint('PSC entry gfn', e.gfn, 40) << 12n) |
    (BigInt(checkUint('PSC entry op', e.op, 4)) << 52n) |
    (e.pageSize === '2m' ? 1n << 56n : 0n)
  );
}

/** Decodes one PSC entry; rejects reserved bits 63:57. */
export function decodePscEntry(v: bigint): PscEntry {
  checkBigUint('PSC entry', v, 64);
  rejectReserved('PSC entry', v, genmask(63, 57), 'bits 63:57 are reserved');
  return Object.freeze({
    curPage: Number(bitsOf(v, 11, 0)),
    gfn: bitsOf(v, 51, 12),
    op: Number(bitsOf(v, 55, 52)),
    pageSize: bitsOf(v, 56, 56) === 1n ? '2m' : '4k',
  });
}

/** Writes a PSC descriptor (little-endian) into `into` (default: a new 2032-byte buffer) and returns it. */
export function encodePscDesc(desc: PscDesc, into: Uint8Array = new Uint8Array(PSC_DESC_SIZE)): Uint8Array {
  const n = desc.entries.length;
  if (n < 1 || n > VMGEXIT_PSC_MAX_ENTRY)
    throw new CocoError(
      'FIELD_RANGE',
      `a PSC descriptor holds 1..${VMGEXIT_PSC_MAX_ENTRY} entries, got ${n}`,
      { entries: n },
    );
  if (into.length < 8 + n * 8)
    throw new CocoError(
      'BAD_LENGTH',
      `PSC buffer of ${into.length} bytes is too small for ${n} entries (${8 + n * 8})`,
      {
        got: into.length,
        expected: 8 + n * 8,
      },
    );
  const dv = new DataView(into.buffer, into.byteOffset, into.byteLength);
  dv.setUint16(0, checkUint('PSC curEntry', desc.curEntry, 16), true);
  dv.setUint16(2, n - 1, true);
  dv.setUint32(4, 0, true);
  for (const [i, e] of desc.entries.entries()) dv.setBigUint64(8 + i * 8, encodePscEntry(e), true);
  return into;
}

/**
 * Reads a PSC descriptor. Rejects end_entry ≥ 253 (KVM: INVALID_HDR), a buffer too short for the entries,
 * a non-zero header reserved word and entries with reserved bits.
 */
export function decodePscDesc(bytes: Uint8Array): PscDesc {
  if (bytes.length < 8)
    throw new CocoError(
      'BAD_LENGTH',
      `PSC buffer of ${bytes.length} bytes has no room for the 8-byte header`,
      { got: bytes.length },
    );
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const curEntry = dv.getUint16(0, true);
  const endEntry = dv.getUint16(2, true);
  const reserved = dv.getUint32(4, true);
  if (endEntry >= VMGEXIT_PSC_MAX_ENTRY)
    throw new CocoError(
      'FIELD_RANGE',
      `PSC end_entry ${endEntry} is not below ${VMGEXIT_PSC_MAX_ENTRY} (VMGEXIT_PSC_MAX_ENTRY)`,
      {
        endEntry,
      },
    );
  if (reserved !== 0)
    throw new CocoError('RESERVED_BITS', `PSC header reserved word is ${hex(reserved)}; it must be zero`, {
      reserved,
    });
  if (bytes.length < 8 + (endEntry + 1) * 8)
    throw new CocoError(
      'BAD_LENGTH',
      `PSC buffer of ${bytes.length} bytes is too small for end_entry ${endEntry}`,
      {
        got: bytes.length,
        endEntry,
      },
    );
  const entries: PscEntry[] = [];
  for (let i = 0; i <= endEntry; i++) entries.push(decodePscEntry(dv.getBigUint64(8 + i * 8, true)));
  return Object.freeze({ curEntry, entries: Object.freeze(entries) });
}
