// Reading a binary-statistics descriptor (KVM_GET_STATS_FD): the layout of include/uapi/linux/kvm.h's
// struct kvm_stats_header and struct kvm_stats_desc, little-endian, read with Kvm.pread.

import type { Kvm } from './kvm.js';

/** KVM_STATS_TYPE_* (flags bits 3:0), KVM_STATS_UNIT_* (bits 7:4), KVM_STATS_BASE_* (bits 11:8). */
export const KVM_STATS = {
  TYPE_MASK: 0xf,
  TYPE_CUMULATIVE: 0,
  TYPE_INSTANT: 1,
  TYPE_PEAK: 2,
  TYPE_LINEAR_HIST: 3,
  TYPE_LOG_HIST: 4,
  UNIT_MASK: 0xf0,
  UNIT_NONE: 0x00,
  UNIT_BYTES: 0x10,
  UNIT_SECONDS: 0x20,
  UNIT_CYCLES: 0x30,
  UNIT_BOOLEAN: 0x40,
  BASE_MASK: 0xf00,
  BASE_POW10: 0x000,
  BASE_POW2: 0x100,
} as const;

/** `struct kvm_stats_header` (24 bytes). */
export interface StatsHeader {
  flags: number;
  nameSize: number;
  numDesc: number;
  idOffset: number;
  descOffset: number;
  dataOffset: number;
}

/** One `struct kvm_stats_desc` with its name, and the statistic's values read from the data block. */
export interface StatsEntry {
  name: string;
  flags: number;
  exponent: number;
  size: number;
  /** Byte offset of the values from the header's dataOffset. */
  offset: number;
  bucketSize: number;
  values: bigint[];
}

/** Everything a stats descriptor reads: the header, the id string and each statistic. */
export interface BinaryStats {
  header: StatsHeader;
  id: string;
  stats: StatsEntry[];
}

function cstring(b: Uint8Array): string {
  const end = b.indexOf(0);
  return String.fromCharCode(...(end < 0 ? b : b.subarray(0, end)));
}

/** Reads the whole statistics file behind `fd` (pread of header, id, descriptors, then data). */
export function readBinaryStats(kvm: Kvm, fd: number): BinaryStats {
  const h = new DataView(kvm.pread(fd, 24, 0).slice().buffer);
  if (h.byteLength < 24) throw new RangeError(`stats fd ${fd}: short header (${h.byteLength} bytes)`);
  const header: StatsHeader = {
    flags: h.getUint32(0, true),
    nameSize: h.getUint32(4, true),
    numDesc: h.getUint32(8, true),
    idOffset: h.getUint32(12, true),
    descOffset: h.getUint32(16, true),
    dataOffset: h.getUint32(20, true),
  };
  const id = cstring(kvm.pread(fd, header.nameSize, header.idOffset));
  const descSize = 16 + header.nameSize;
  const descs = kvm.pread(fd, header.numDesc * descSize, header.descOffset);
  const dv = new DataView(descs.buffer, descs.byteOffset, descs.byteLength);
  const stats: StatsEntry[] = [];
  for (let i = 0; i < header.numDesc; i++) {
    const at = i * descSize;
    const size = dv.getUint16(at + 6, true);
    const offset = dv.getUint32(at + 8, true);
    const data = kvm.pread(fd, size * 8, header.dataOffset + offset);
    const d = new DataView(data.buffer, data.byteOffset, data.byteLength);
    stats.push({
      name: cstring(descs.subarray(at + 16, at + descSize)),
      flags: dv.getUint32(at, true),
      exponent: dv.getInt16(at + 4, true),
      size,
      offset,
      bucketSize: dv.getUint32(at + 12, true),
      values: Array.from({ length: Math.floor(data.byteLength / 8) }, (_, k) => d.getBigUint64(k * 8, true)),
    });
  }
  return { header, id, stats };
}
