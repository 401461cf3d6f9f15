// KVM_GET/SET_SREGS with segments on the real /dev/kvm: the uapi codec, the RESET state of
// arch/x86/kvm/x86.c: kvm_vcpu_reset() as this kernel reports it (the simulator's `pvm` and
// `mainline-intel` hosts report the same; apps/kvm-conformance compares the two backends), and
// kvm_is_valid_sregs()'s CS.L rule.
import {
  CR,
  codeSegment64,
  dataSegment64,
  type Segment,
  SEGMENT_NAMES,
  segment,
  type Sregs,
  tryKvm,
  tssSegment64,
  unusableSegment,
} from '@kvmtest/kvm';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { openLinuxKvm } from '../src/index.js';
import { decodeSegment, decodeSregs, encodeSegment, encodeSregsInput } from '../src/internal/sregs.js';
import { SIZE, SREGS } from '../src/internal/uapi.js';
import { kvmAvailable } from './helpers.js';

const seg = (type: number, s: number, selector = 0, base = 0n): Segment =>
  segment({ base, limit: 0xffff, selector, type, present: 1, s });

/** vmx_vcpu_reset()'s segments (and PVM's, measured): CS type 11, data 3, TR busy TSS 11, LDTR 2. */
const RESET: Sregs = {
  cs: seg(11, 1, 0xf000, 0xffff_0000n),
  ds: seg(3, 1),
  es: seg(3, 1),
  fs: seg(3, 1),
  gs: seg(3, 1),
  ss: seg(3, 1),
  tr: seg(11, 0),
  ldt: seg(2, 0),
  gdt: { base: 0n, limit: 0xffff },
  idt: { base: 0n, limit: 0xffff },
  cr0: 0x6000_0010n,
  cr2: 0n,
  cr3: 0n,
  cr4: 0n,
  efer: 0n,
};

const LONG = {
  cr0: CR.CR0_PE | CR.CR0_PG | CR.CR0_ET,
  cr2: 0n,
  cr3: 0x1000n,
  cr4: CR.CR4_PAE,
  efer: CR.EFER_LME | CR.EFER_LMA,
};

describe('struct kvm_sregs codec', () => {
  it('decodeSegment(encodeSegment(seg)) is seg for every segment of uapi widths, at every segment offset', () => {
    const u8 = fc.nat({ max: 0xff });
    const segment = fc.record({
      base: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      limit: fc.nat({ max: 0xffff_ffff }),
      selector: fc.nat({ max: 0xffff }),
      type: u8,
      present: u8,
      dpl: u8,
      db: u8,
      s: u8,
      l: u8,
      g: u8,
      avl: u8,
      unusable: u8,
    });
    fc.assert(
      fc.property(segment, fc.constantFrom(...SEGMENT_NAMES), (seg, n) => {
        const buf = new Uint8Array(SIZE.kvm_sregs).fill(0xa5);
        const v = new DataView(buf.buffer);
        encodeSegment(v, SREGS[n], seg);
        expect(decodeSegment(v, SREGS[n])).toEqual(seg);
        expect(buf[SREGS[n] + 23]).toBe(0); // the padding byte
        // Nothing outside the 24-byte struct kvm_segment is touched.
        expect(buf.subarray(0, SREGS[n]).every((b) => b === 0xa5)).toBe(true);
        expect(buf.subarray(SREGS[n] + 24).every((b) => b === 0xa5)).toBe(true);
      }),
    );
  });
  it('encodes and decodes every segment field at its uapi offset', () => {
    const buf = new Uint8Array(SIZE.kvm_sregs);
    const v = new DataView(buf.buffer);
    const s: Segment = { ...tssSegment64(0x1122_3344_5566_7788n, 0x18), dpl: 3, avl: 1, unusable: 1 };
    encodeSegment(v, SREGS.tr, s);
    expect(decodeSegment(v, SREGS.tr)).toEqual(s);
    expect(v.getBigUint64(SREGS.tr, true)).toBe(0x1122_3344_5566_7788n);
    expect(v.getUint16(SREGS.tr + 12, true)).toBe(0x18);
    expect(buf[SREGS.tr + 14]).toBe(11);
    encodeSregsInput(v, { ...LONG, gdt: { base: 0x6000n, limit: 0x17 } });
    const d = decodeSregs(v);
    expect(d.tr).toEqual(s);
    expect(d.gdt).toEqual({ base: 0x6000n, limit: 0x17 });
    expect(d.cs).toEqual(decodeSegment(v, 0)); // left out: untouched (zero here)
    expect(d.efer).toBe(LONG.efer);
  });
});

describe.skipIf(!kvmAvailable)('KVM_GET/SET_SREGS with segments', () => {
  it('kvm_vcpu_reset: CS is f000:ffff0000 limit 0xffff, the other segments 0:0 limit 0xffff, GDTR/IDTR limit 0xffff', () => {
    using kvm = openLinuxKvm();
    using vm = kvm.createVm();
    expect(vm.createVcpu(0).getSregs()).toEqual(RESET);
    expect(vm.createVcpu(1).getSregs()).toEqual(RESET);
  });
  it('round-trips segments, GDTR and IDTR; a set without segments keeps them', () => {
    using kvm = openLinuxKvm();
    using vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    const s: Sregs = {
      ...LONG,
      cs: codeSegment64(8),
      ds: dataSegment64(0x10),
      es: dataSegment64(0x10),
      fs: { ...dataSegment64(0x10), base: 0x7fff_0000_1000n },
      gs: { ...dataSegment64(0x10), base: 0xffff_8000_0000_2000n },
      ss: dataSegment64(0x10),
      tr: tssSegment64(0x5000n, 0x18),
      ldt: unusableSegment(),
      gdt: { base: 0x6000n, limit: 0xfff },
      idt: { base: 0x7000n, limit: 0xfff },
    };
    vcpu.setSregs(s);
    expect(vcpu.getSregs()).toEqual(s);
    vcpu.setSregs({ ...LONG, cr2: 0x1234n });
    expect(vcpu.getSregs()).toEqual({ ...s, cr2: 0x1234n });
  });
  it('kvm_is_valid_sregs: CS.L without long-mode paging is EINVAL, changing nothing', () => {
    using kvm = openLinuxKvm();
    using vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    expect(tryKvm(() => vcpu.setSregs({ ...RESET, cs: { ...RESET.cs, l: 1 } }))).toBe('EINVAL');
    expect(vcpu.getSregs()).toEqual(RESET);
    vcpu.setSregs({ ...LONG, cs: codeSegment64(8) });
    expect(tryKvm(() => vcpu.setSregs({ cr0: 0x11n, cr2: 0n, cr3: 0n, cr4: 0n, efer: 0n }))).toBe('EINVAL');
  });
});
