// The VMSA page KVM builds for LAUNCH_UPDATE_VMSA (`sev_es_sync_vmsa`): the vCPU's registers at their
// `struct sev_es_save_area` offsets, plus SEV_FEATURES. Little-endian; everything else zero.

import type { Regs, Sregs } from '@kvmtest/kvm';

/** Byte offsets inside the 4 KiB VMSA (arch/x86/include/asm/svm.h `struct sev_es_save_area`). */
export const VMSA_OFFSET = {
  efer: 0x0d0,
  cr4: 0x148,
  cr3: 0x150,
  cr0: 0x158,
  dr7: 0x160,
  dr6: 0x168,
  rflags: 0x170,
  rip: 0x178,
  rsp: 0x1d8,
  cr2: 0x240,
  rax: 0x1f8,
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
} as const;

/** DR7 bits that are always one (`DR7_FIXED_1`); any other bit set refuses LAUNCH_UPDATE_VMSA (arch/x86/kvm/svm/sev.c: sev_launch_update_vmsa()). */
export const DR7_FIXED_1 = 0x400n;

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

/** Builds the plaintext VMSA of one vCPU (what the firmware measures and then encrypts). */
export function buildVmsa(regs: Regs, sregs: Sregs, dr7: bigint, sevFeatures: bigint): Uint8Array {
  const page = new Uint8Array(4096);
  const dv = new DataView(page.buffer);
  const put = (off: number, v: bigint) => dv.setBigUint64(off, BigInt.asUintN(64, v), true);
  for (const r of GPRS) put(VMSA_OFFSET[r], regs[r]);
  put(VMSA_OFFSET.rsp, regs.rsp);
  put(VMSA_OFFSET.rip, regs.rip);
  put(VMSA_OFFSET.rflags, regs.rflags);
  put(VMSA_OFFSET.cr0, sregs.cr0);
  put(VMSA_OFFSET.cr2, sregs.cr2);
  put(VMSA_OFFSET.cr3, sregs.cr3);
  put(VMSA_OFFSET.cr4, sregs.cr4);
  put(VMSA_OFFSET.efer, sregs.efer);
  put(VMSA_OFFSET.dr7, dr7);
  put(VMSA_OFFSET.dr6, 0xffff0ff0n);
  put(VMSA_OFFSET.xcr0, 1n);
  put(VMSA_OFFSET.sevFeatures, sevFeatures);
  return page;
}
