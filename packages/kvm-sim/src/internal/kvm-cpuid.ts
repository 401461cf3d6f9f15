// KVM's answer to a guest CPUID from the vCPU's table (arch/x86/kvm/cpuid.c: kvm_cpuid() with
// exact_only false, as kvm_emulate_cpuid() calls it).

import { type CpuidEntry, findCpuid } from '@kvmtest/kvm';

/** The four output registers of CPUID. */
export interface CpuidRegs {
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** CPUID.0 EBX, EDX, ECX of a vendor string, as arch/x86/include/asm/kvm_cpuid.h compares them. */
const AMD_LIKE = [
  ['Auth', 'enti', 'cAMD'],
  ['AMDi', 'sbet', 'ter!'],
  ['Hygo', 'nGen', 'uine'],
].map((parts) =>
  parts.map(
    (p) => p.charCodeAt(0) | (p.charCodeAt(1) << 8) | (p.charCodeAt(2) << 16) | (p.charCodeAt(3) << 24),
  ),
);

function amdLikeVendor(basic: CpuidEntry): boolean {
  return AMD_LIKE.some(
    ([b, d, c]) => (basic.ebx | 0) === b && (basic.edx | 0) === d && (basic.ecx | 0) === c,
  );
}

/**
 * get_out_of_range_cpuid_entry(): on a guest that is not AMD or Hygon (by its CPUID.0 vendor), a
 * function above the maximum of its class (basic, each 0x100-leaf hypervisor range, extended,
 * Centaur), or in a class with no base leaf, reads the highest basic leaf (CPUID.0.EAX) instead.
 * With no CPUID.0 entry (a vCPU whose CPUID was never set) there is no redirect.
 */
function outOfRange(
  entries: readonly CpuidEntry[],
  fn: number,
  index: number,
): { fn: number; entry: CpuidEntry | undefined } | undefined {
  const basic = findCpuid(entries, 0, 0);
  if (basic === undefined || amdLikeVendor(basic)) return undefined;
  let base: number;
  if (fn >= 0x4000_0000 && fn <= 0x4fff_ffff) base = (fn & 0xffff_ff00) >>> 0;
  else if (fn >= 0xc000_0000) base = 0xc000_0000;
  else base = (fn & 0x8000_0000) >>> 0;
  const cls = findCpuid(entries, base, 0);
  if (cls !== undefined && fn <= cls.eax >>> 0) return undefined;
  const max = basic.eax >>> 0;
  return { fn: max, entry: findCpuid(entries, max, index) };
}

/**
 * arch/x86/kvm/cpuid.c: kvm_cpuid(): the entry for (fn, index), else the out-of-range redirect,
 * else zeros, except that leaves 0xB and 0x1F with a subleaf 1 pass ECX[7:0] through and report
 * that subleaf's EDX (the x2APIC ID) for any undefined subleaf.
 */
export function kvmCpuid(entries: readonly CpuidEntry[], fn: number, index: number): CpuidRegs {
  let f = fn >>> 0;
  const i = index >>> 0;
  let e = findCpuid(entries, f, i);
  if (e === undefined) {
    const r = outOfRange(entries, f, i);
    if (r !== undefined) {
      f = r.fn;
      e = r.entry;
    }
  }
  if (e !== undefined) return { eax: e.eax, ebx: e.ebx, ecx: e.ecx, edx: e.edx };
  const out = { eax: 0, ebx: 0, ecx: 0, edx: 0 };
  if (f === 0xb || f === 0x1f) {
    const one = findCpuid(entries, f, 1);
    if (one !== undefined) {
      out.ecx = i & 0xff;
      out.edx = one.edx;
    }
  }
  return out;
}
