// The VMSA page KVM builds for LAUNCH_UPDATE_VMSA (arch/x86/kvm/svm/sev.c: sev_es_sync_vmsa()). KVM
// first copies the VMCB save area as the vendor module has built it so far (segments, descriptor
// tables, CPL, EFER, control and debug registers, the syscall MSRs, G_PAT), then overwrites the GPRs,
// RIP, XCR0, PKRU, XSS, DR6 and SEV_FEATURES from `vcpu->arch`, and, on every VM type but
// KVM_X86_DEFAULT_VM, the x87/SSE/AVX state. Each field sits at its `struct sev_es_save_area` offset
// (arch/x86/include/asm/svm.h). Little-endian; everything else zero.

import type { VmType } from '@kvmtest/coco';
import { type Regs, type Segment, type Sregs, XSAVE_LAYOUT as XS } from '@kvmtest/kvm';
import type { SevVcpuView } from './views.js';

/** Byte offsets inside the 4 KiB VMSA (arch/x86/include/asm/svm.h `struct sev_es_save_area`). */
export const VMSA_OFFSET = {
  es: 0x000,
  cs: 0x010,
  ss: 0x020,
  ds: 0x030,
  fs: 0x040,
  gs: 0x050,
  gdtr: 0x060,
  ldtr: 0x070,
  idtr: 0x080,
  tr: 0x090,
  /** u8. */
  cpl: 0x0cb,
  efer: 0x0d0,
  xss: 0x140,
  cr4: 0x148,
  cr3: 0x150,
  cr0: 0x158,
  dr7: 0x160,
  dr6: 0x168,
  rflags: 0x170,
  rip: 0x178,
  rsp: 0x1d8,
  rax: 0x1f8,
  star: 0x200,
  lstar: 0x208,
  cstar: 0x210,
  sfmask: 0x218,
  kernelGsBase: 0x220,
  sysenterCs: 0x228,
  sysenterEsp: 0x230,
  sysenterEip: 0x238,
  cr2: 0x240,
  gPat: 0x268,
  /** u32. */
  pkru: 0x2e8,
  rcx: 0x308,
  rdx: 0x310,
  rbx: 0x318,
  rbp: 0x328,
  rsi: 0x330,
  rdi: 0x338,
  r8: 0x340,
  r9: 0x348,
  r10: 0x350,
  r11: 0x358,
  r12: 0x360,
  r13: 0x368,
  r14: 0x370,
  r15: 0x378,
  sevFeatures: 0x3b0,
  xcr0: 0x3e8,
  x87Dp: 0x400,
  /** u32. */
  mxcsr: 0x408,
  /** u16 from here to x87Cs. */
  x87Ftw: 0x40c,
  x87Fsw: 0x40e,
  x87Fcw: 0x410,
  x87Fop: 0x412,
  x87Ds: 0x414,
  x87Cs: 0x416,
  x87Rip: 0x418,
  /** 80 bytes: bytes 0–7 of ST0..ST7, then bytes 8–9 of each. */
  fpregX87: 0x420,
  /** 256 bytes: XMM0..XMM15. */
  fpregXmm: 0x470,
  /** 256 bytes: the upper halves of YMM0..YMM15. */
  fpregYmm: 0x570,
} as const;

/** Size of `struct sev_es_save_area` (EXPECTED_SEV_ES_SAVE_AREA_SIZE, arch/x86/include/asm/svm.h). */
export const SEV_ES_SAVE_AREA_SIZE = 0x670;

/** DR7 bits that are always one (`DR7_FIXED_1`); any other bit set refuses LAUNCH_UPDATE_VMSA (arch/x86/kvm/svm/sev.c: sev_launch_update_vmsa()). */
export const DR7_FIXED_1 = 0x400n;

/** The segment registers in VMSA order, with their `struct vmcb_seg` slots. */
export const VMSA_SEGMENTS = [
  ['es', VMSA_OFFSET.es],
  ['cs', VMSA_OFFSET.cs],
  ['ss', VMSA_OFFSET.ss],
  ['ds', VMSA_OFFSET.ds],
  ['fs', VMSA_OFFSET.fs],
  ['gs', VMSA_OFFSET.gs],
  ['ldt', VMSA_OFFSET.ldtr],
  ['tr', VMSA_OFFSET.tr],
] as const;

/** MSR numbers whose VMCB copies the VMSA carries (arch/x86/include/asm/msr-index.h). */
const MSR_INDEX = {
  sysenterCs: 0x174,
  sysenterEsp: 0x175,
  sysenterEip: 0x176,
  pat: 0x277,
  star: 0xc0000081,
  lstar: 0xc0000082,
  cstar: 0xc0000083,
  sfmask: 0xc0000084,
  kernelGsBase: 0xc0000102,
} as const;

/** IA32_PAT at RESET (arch/x86/kvm/x86.c: kvm_vcpu_reset(), MSR_IA32_CR_PAT_DEFAULT). */
const PAT_RESET = 0x0007040600070406n;
/** EFER.SVME: svm/svm.c: svm_set_efer() keeps it set in the VMCB's copy of EFER. */
const EFER_SVME = 0x1000n;
/** CR0.CD | CR0.NW: svm/svm.c: svm_set_cr0() clears them in the VMCB (KVM_X86_QUIRK_CD_NW_CLEARED, on by default). */
const CR0_CD_NW = 0x6000_0000n;
/** CR4.MCE: svm/svm.c: svm_set_cr4() ORs the host's CR4.MCE (set on any Linux host) into the VMCB's CR4. */
const CR4_MCE = 0x40n;
/** DR6 at RESET (DR6_ACTIVE_LOW), `vcpu->arch.dr6`. */
const DR6_RESET = 0xffff0ff0n;
/** XCR0 at RESET: x87 only. */
const XCR0_RESET = 1n;
/** XSTATE_BV bit of the AVX (YMM_Hi128) component. */
const XFEATURE_YMM = 4n;

/** What besides the registers goes into the VMSA: the vCPU's MSR file, XCR0, and its FPU state. */
export interface VmsaExtras {
  /** The vCPU's MSRs as KVM holds them; an MSR it returns undefined for is taken at its RESET value. */
  readonly msr?: (index: number) => bigint | undefined;
  /** `vcpu->arch.xcr0` (RESET: 1). */
  readonly xcr0?: bigint;
  /**
   * The standard-format XSAVE area of the guest FPU, given only for VM types other than
   * KVM_X86_DEFAULT_VM: sev_es_sync_vmsa() skips the FPU on KVM_SEV_ES_INIT VMs "to avoid breaking
   * older measurements".
   */
  readonly fpu?: Uint8Array;
}

/**
 * A segment in the VMCB's `struct vmcb_seg` form, as svm/svm.c: svm_set_segment() packs it: type in
 * bits 0–3, S 4, DPL 5–6, P 7 (present and usable), AVL 8, L 9, D/B 10, G 11.
 *
 * The simulator keeps each segment as KVM_GET_SREGS reports it (svm_get_segment()), so the attribute
 * is packed from that: for a data segment never loaded by KVM_SET_SREGS this carries the accessed bit
 * svm_get_segment() synthesises (0x93 where init_vmcb() wrote 0x92).
 */
export function vmcbSegmentAttrib(seg: Segment): number {
  const present = (seg.present & 1) === 1 && seg.unusable === 0 ? 1 : 0;
  return (
    (seg.type & 0xf) |
    ((seg.s & 1) << 4) |
    ((seg.dpl & 3) << 5) |
    (present << 7) |
    ((seg.avl & 1) << 8) |
    ((seg.l & 1) << 9) |
    ((seg.db & 1) << 10) |
    ((seg.g & 1) << 11)
  );
}

const GPRS = [
  'rax',
  'rcx',
  'rdx',
  'rbx',
  'rbp',
  'rsi',
  'rdi',
  'r8',
  'r9',
  'r10',
  'r11',
  'r12',
  'r13',
  'r14',
  'r15',
] as const;

const MSR_FIELDS = [
  'star',
  'lstar',
  'cstar',
  'sfmask',
  'kernelGsBase',
  'sysenterCs',
  'sysenterEsp',
  'sysenterEip',
] as const;

/** Builds the plaintext VMSA of one vCPU (what the firmware measures and then encrypts). */
export function buildVmsa(
  regs: Regs,
  sregs: Sregs,
  dr7: bigint,
  sevFeatures: bigint,
  extras: VmsaExtras = {},
): Uint8Array {
  const page = new Uint8Array(4096);
  const dv = new DataView(page.buffer);
  const put = (off: number, v: bigint) => dv.setBigUint64(off, BigInt.asUintN(64, v), true);
  const msr = (index: number, reset: bigint) => extras.msr?.(index) ?? reset;

  // The VMCB save area (memcpy of svm->vmcb->save): segments, tables, CPL, EFER, CRs, DR7, RFLAGS,
  // the syscall MSRs, CR2 and G_PAT.
  const seg = (off: number, selector: number, attrib: number, limit: number, base: bigint) => {
    dv.setUint16(off, selector & 0xffff, true);
    dv.setUint16(off + 2, attrib, true);
    dv.setUint32(off + 4, limit >>> 0, true);
    put(off + 8, base);
  };
  for (const [name, off] of VMSA_SEGMENTS) {
    const s = sregs[name];
    seg(off, s.selector, vmcbSegmentAttrib(s), s.limit, s.base);
  }
  // svm_set_gdt()/svm_set_idt(): only limit and base; selector and attrib stay zero.
  seg(VMSA_OFFSET.gdtr, 0, 0, sregs.gdt.limit, sregs.gdt.base);
  seg(VMSA_OFFSET.idtr, 0, 0, sregs.idt.limit, sregs.idt.base);
  // svm_set_segment(): loading SS sets the CPL to SS.DPL.
  page[VMSA_OFFSET.cpl] = sregs.ss.dpl & 3;
  put(VMSA_OFFSET.efer, sregs.efer | EFER_SVME);
  put(VMSA_OFFSET.cr0, sregs.cr0 & ~CR0_CD_NW);
  put(VMSA_OFFSET.cr2, sregs.cr2);
  put(VMSA_OFFSET.cr3, sregs.cr3);
  put(VMSA_OFFSET.cr4, sregs.cr4 | CR4_MCE);
  put(VMSA_OFFSET.dr7, dr7);
  put(VMSA_OFFSET.rflags, regs.rflags);
  for (const f of MSR_FIELDS) put(VMSA_OFFSET[f], msr(MSR_INDEX[f], 0n));
  put(VMSA_OFFSET.gPat, msr(MSR_INDEX.pat, PAT_RESET));

  // Then the fields sev_es_sync_vmsa() syncs from vcpu->arch.
  for (const r of GPRS) put(VMSA_OFFSET[r], regs[r]);
  put(VMSA_OFFSET.rsp, regs.rsp);
  put(VMSA_OFFSET.rip, regs.rip);
  put(VMSA_OFFSET.xcr0, extras.xcr0 ?? XCR0_RESET);
  // PKRU and XSS: the simulated CPU has neither PKE nor XSAVES state, so both are 0 as at RESET.
  dv.setUint32(VMSA_OFFSET.pkru, 0, true);
  put(VMSA_OFFSET.xss, 0n);
  put(VMSA_OFFSET.dr6, DR6_RESET);
  put(VMSA_OFFSET.sevFeatures, sevFeatures);
  if (extras.fpu !== undefined) syncFpu(dv, extras.fpu);
  return page;
}

// The x87/SSE/AVX part of sev_es_sync_vmsa(): from the legacy FXSAVE region of the guest FPU's XSAVE
// area, the YMM upper halves only when XSTATE_BV has the component (get_xsave_addr() is NULL for a
// component in its init state, and the VMSA field is then zeroed).
function syncFpu(dv: DataView, area: Uint8Array): void {
  const xs = new DataView(area.buffer, area.byteOffset, area.byteLength);
  const page = new Uint8Array(dv.buffer);
  dv.setBigUint64(VMSA_OFFSET.x87Dp, xs.getBigUint64(XS.fdp, true), true);
  dv.setUint32(VMSA_OFFSET.mxcsr, xs.getUint32(XS.mxcsr, true), true);
  dv.setUint16(VMSA_OFFSET.x87Ftw, xs.getUint16(XS.ftw, true), true);
  dv.setUint16(VMSA_OFFSET.x87Fsw, xs.getUint16(XS.fsw, true), true);
  dv.setUint16(VMSA_OFFSET.x87Fcw, xs.getUint16(XS.fcw, true), true);
  dv.setUint16(VMSA_OFFSET.x87Fop, xs.getUint16(XS.fop, true), true);
  dv.setUint16(VMSA_OFFSET.x87Ds, 0, true);
  dv.setUint16(VMSA_OFFSET.x87Cs, 0, true);
  dv.setBigUint64(VMSA_OFFSET.x87Rip, xs.getBigUint64(XS.fip, true), true);
  for (let i = 0; i < 8; i++) {
    const st = XS.st + i * 16;
    page.set(area.subarray(st, st + 8), VMSA_OFFSET.fpregX87 + i * 8);
    page[VMSA_OFFSET.fpregX87 + 64 + i * 2] = area[st + 8] ?? 0;
    page[VMSA_OFFSET.fpregX87 + 64 + i * 2 + 1] = area[st + 9] ?? 0;
  }
  page.set(area.subarray(XS.xmm, XS.xmm + 256), VMSA_OFFSET.fpregXmm);
  if ((xs.getBigUint64(XS.xstateBv, true) & XFEATURE_YMM) !== 0n)
    page.set(area.subarray(XS.ymmHi, XS.ymmHi + 256), VMSA_OFFSET.fpregYmm);
}

/**
 * arch/x86/kvm/svm/sev.c: sev_es_sync_vmsa(): the plaintext VMSA of `vcpu` in a VM of type `vmType`,
 * from what KVM holds for it (registers, segments, MSRs, XCR0, and the FPU unless the VM is a
 * KVM_X86_DEFAULT_VM made SEV-ES by KVM_SEV_ES_INIT).
 */
export function syncVmsa(vmType: VmType, vcpu: SevVcpuView, sevFeatures: bigint): Uint8Array {
  return buildVmsa(vcpu.regs(), vcpu.sregs(), vcpu.dr7, sevFeatures, {
    msr: (i) => vcpu.msr?.(i),
    xcr0: vcpu.xcr0?.(),
    fpu: vmType === 'default' ? undefined : vcpu.fpu?.(),
  });
}
