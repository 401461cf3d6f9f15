// `struct kvm_sregs` <-> the contract's Sregs (arch/x86/include/uapi/asm/kvm.h, little-endian):
// eight `struct kvm_segment`, two `struct kvm_dtable`, the control registers and EFER. CR8, the APIC
// base and the interrupt bitmap are not in the contract and pass through unchanged.

import { SEGMENT_NAMES, type Segment, type Sregs, type SregsInput } from '@kvmtest/kvm';
import { SEGMENT, SREGS } from './uapi.js';

/** Reads the `struct kvm_segment` at byte `at`. */
export function decodeSegment(v: DataView, at: number): Segment {
  const u8 = (o: number) => v.getUint8(at + o);
  return {
    base: v.getBigUint64(at + SEGMENT.base, true),
    limit: v.getUint32(at + SEGMENT.limit, true),
    selector: v.getUint16(at + SEGMENT.selector, true),
    type: u8(SEGMENT.type),
    present: u8(SEGMENT.present),
    dpl: u8(SEGMENT.dpl),
    db: u8(SEGMENT.db),
    s: u8(SEGMENT.s),
    l: u8(SEGMENT.l),
    g: u8(SEGMENT.g),
    avl: u8(SEGMENT.avl),
    unusable: u8(SEGMENT.unusable),
  };
}

/** Writes `seg` as the `struct kvm_segment` at byte `at` (its padding byte zero). */
export function encodeSegment(v: DataView, at: number, seg: Segment): void {
  v.setBigUint64(at + SEGMENT.base, BigInt.asUintN(64, seg.base), true);
  v.setUint32(at + SEGMENT.limit, seg.limit, true);
  v.setUint16(at + SEGMENT.selector, seg.selector, true);
  v.setUint8(at + SEGMENT.type, seg.type);
  v.setUint8(at + SEGMENT.present, seg.present);
  v.setUint8(at + SEGMENT.dpl, seg.dpl);
  v.setUint8(at + SEGMENT.db, seg.db);
  v.setUint8(at + SEGMENT.s, seg.s);
  v.setUint8(at + SEGMENT.l, seg.l);
  v.setUint8(at + SEGMENT.g, seg.g);
  v.setUint8(at + SEGMENT.avl, seg.avl);
  v.setUint8(at + SEGMENT.unusable, seg.unusable);
  v.setUint8(at + SEGMENT.unusable + 1, 0);
}

/** Reads the contract's part of a `struct kvm_sregs`. */
export function decodeSregs(v: DataView): Sregs {
  const table = (at: number) => ({ base: v.getBigUint64(at, true), limit: v.getUint16(at + 8, true) });
  const seg = (n: (typeof SEGMENT_NAMES)[number]) => decodeSegment(v, SREGS[n]);
  return {
    cs: seg('cs'),
    ds: seg('ds'),
    es: seg('es'),
    fs: seg('fs'),
    gs: seg('gs'),
    ss: seg('ss'),
    tr: seg('tr'),
    ldt: seg('ldt'),
    gdt: table(SREGS.gdt),
    idt: table(SREGS.idt),
    cr0: v.getBigUint64(SREGS.cr0, true),
    cr2: v.getBigUint64(SREGS.cr2, true),
    cr3: v.getBigUint64(SREGS.cr3, true),
    cr4: v.getBigUint64(SREGS.cr4, true),
    efer: v.getBigUint64(SREGS.efer, true),
  };
}

/** Writes the fields `input` has over a `struct kvm_sregs` holding the current state. */
export function encodeSregsInput(v: DataView, input: SregsInput): void {
  for (const n of ['cr0', 'cr2', 'cr3', 'cr4', 'efer'] as const)
    v.setBigUint64(SREGS[n], BigInt.asUintN(64, input[n]), true);
  for (const n of SEGMENT_NAMES) {
    const seg = input[n];
    if (seg !== undefined) encodeSegment(v, SREGS[n], seg);
  }
  for (const n of ['gdt', 'idt'] as const) {
    const t = input[n];
    if (t === undefined) continue;
    v.setBigUint64(SREGS[n], BigInt.asUintN(64, t.base), true);
    v.setUint16(SREGS[n] + 8, t.limit, true);
  }
}
