// The vCPU's x87/SSE/AVX state and XCR0, and the XSAVE family of instructions over it. The state is
// kept as a standard-format XSAVE area (XSAVE_LAYOUT), the format KVM_GET/SET_XSAVE exchange, plus
// XINUSE (the components not in their initial state), kept in the area's XSTATE_BV field.

import { XFEATURE, XSAVE_LAYOUT as L } from '@kvmtest/kvm';

/** The state components this simulator saves: x87 | SSE | AVX (kvm_caps.supported_xcr0). */
export const SUPPORTED_XCR0 = XFEATURE.FP | XFEATURE.SSE | XFEATURE.YMM;
/**
 * Bytes 464–511 of the legacy area, which XSAVE leaves to software. KVM_GET_XSAVE fills them as
 * ptrace's REGSET_XSTATE does (arch/x86/kernel/fpu/xstate.c: __copy_xstate_to_uabi_buf() copies
 * `xstate_fx_sw_bytes`, arch/x86/kernel/ptrace.c): the first u64 is the host kernel's user xfeatures
 * (update_regset_xstate_info(), fpu_user_cfg.max_features), the rest zero. KVM_SET_XSAVE ignores them.
 */
export const XSAVE_SW_RESERVED = { offset: 464, end: 512 } as const;
/** The simulated host kernel's user xfeatures (its CPU has exactly x87, SSE and AVX, as this project's hosts measure 0x7). */
export const HOST_USER_XFEATURES = SUPPORTED_XCR0;

/** The area KVM_GET_XSAVE hands out for `state`: a copy with the software-reserved bytes filled in. */
export function uabiXsaveArea(state: Uint8Array): Uint8Array {
  const out = state.slice();
  out.fill(0, XSAVE_SW_RESERVED.offset, XSAVE_SW_RESERVED.end);
  view(out).setBigUint64(XSAVE_SW_RESERVED.offset, HOST_USER_XFEATURES, true);
  return out;
}

/** MXCSR bits the CPU implements (MXCSR_MASK as FXSAVE reports it): writing others is #GP / EINVAL. */
export const MXCSR_FEATURE_MASK = 0xffff;
/** MXCSR at RESET and INIT. */
const MXCSR_RESET = 0x1f80;
/** x87 control word at RESET (FNINIT state). */
const FCW_RESET = 0x037f;

/** A fresh XSAVE area in the RESET state: FCW 0x37F, MXCSR 0x1F80, every register zero, XINUSE 0. */
export function resetXsaveArea(): Uint8Array {
  const a = new Uint8Array(L.size);
  const v = new DataView(a.buffer);
  v.setUint16(L.fcw, FCW_RESET, true);
  v.setUint32(L.mxcsr, MXCSR_RESET, true);
  v.setUint32(L.mxcsrMask, MXCSR_FEATURE_MASK, true);
  return a;
}

const view = (a: Uint8Array) => new DataView(a.buffer, a.byteOffset, a.byteLength);

/**
 * Why an XSAVE area cannot be loaded by KVM_SET_XSAVE (arch/x86/kernel/fpu/xstate.c:
 * validate_user_xstate_header() and copy_uabi_to_xstate()), or undefined when it can.
 */
export function xsaveAreaProblem(area: Uint8Array, supported: bigint): string | undefined {
  const v = view(area);
  const bv = v.getBigUint64(L.xstateBv, true);
  if ((bv & ~supported) !== 0n)
    return `XSTATE_BV 0x${bv.toString(16)} has features KVM cannot save (supported 0x${supported.toString(16)})`;
  const comp = v.getBigUint64(L.xcompBv, true);
  if (comp !== 0n)
    return `XCOMP_BV 0x${comp.toString(16)}: only the standard (uncompacted) format is accepted`;
  for (let i = L.headerReserved; i < L.headerEnd; i++)
    if (area[i] !== 0) return `XSAVE header reserved byte ${i - L.xstateBv} is not zero`;
  if ((bv & (XFEATURE.SSE | XFEATURE.YMM)) !== 0n) {
    const mxcsr = v.getUint32(L.mxcsr, true);
    if ((mxcsr & ~MXCSR_FEATURE_MASK) !== 0)
      return `MXCSR 0x${mxcsr.toString(16)} sets bits outside MXCSR_MASK 0x${MXCSR_FEATURE_MASK.toString(16)}`;
  }
  return undefined;
}

/** Loads `area` into `state` for the components in `rfbm`: present in XSTATE_BV → copied, else initialised. */
export function loadComponents(state: Uint8Array, area: Uint8Array, rfbm: bigint): void {
  const bv = view(area).getBigUint64(L.xstateBv, true);
  const sv = view(state);
  if ((rfbm & XFEATURE.FP) !== 0n) {
    if ((bv & XFEATURE.FP) !== 0n) {
      state.set(area.subarray(0, L.mxcsr), 0);
      state.set(area.subarray(L.st, L.xmm), L.st);
    } else {
      state.fill(0, 0, L.mxcsr);
      state.fill(0, L.st, L.xmm);
      sv.setUint16(L.fcw, FCW_RESET, true);
    }
  }
  // MXCSR goes with SSE or AVX, whatever XSTATE_BV says (SDM: XRSTOR, standard form).
  if ((rfbm & (XFEATURE.SSE | XFEATURE.YMM)) !== 0n)
    sv.setUint32(L.mxcsr, view(area).getUint32(L.mxcsr, true), true);
  if ((rfbm & XFEATURE.SSE) !== 0n) {
    if ((bv & XFEATURE.SSE) !== 0n) state.set(area.subarray(L.xmm, L.xmmEnd), L.xmm);
    else state.fill(0, L.xmm, L.xmmEnd);
  }
  if ((rfbm & XFEATURE.YMM) !== 0n) {
    if ((bv & XFEATURE.YMM) !== 0n) state.set(area.subarray(L.ymmHi, L.ymmHiEnd), L.ymmHi);
    else state.fill(0, L.ymmHi, L.ymmHiEnd);
  }
  const inuse = sv.getBigUint64(L.xstateBv, true);
  sv.setBigUint64(L.xstateBv, (inuse & ~rfbm) | (bv & rfbm), true);
}

/**
 * XSAVE (standard form) of the components in `rfbm` into `out` (the 832 bytes at the guest's area,
 * read first so the bytes XSAVE does not write keep their value): the x87 fields, MXCSR with SSE or
 * AVX, XMM, YMM_Hi128, and XSTATE_BV = (old & ~rfbm) | (XINUSE & rfbm).
 */
export function saveComponents(state: Uint8Array, out: Uint8Array, rfbm: bigint): void {
  const ov = view(out);
  if ((rfbm & XFEATURE.FP) !== 0n) {
    out.set(state.subarray(0, L.mxcsr), 0);
    out.set(state.subarray(L.st, L.xmm), L.st);
  }
  if ((rfbm & (XFEATURE.SSE | XFEATURE.YMM)) !== 0n) out.set(state.subarray(L.mxcsr, L.st), L.mxcsr);
  if ((rfbm & XFEATURE.SSE) !== 0n) out.set(state.subarray(L.xmm, L.xmmEnd), L.xmm);
  if ((rfbm & XFEATURE.YMM) !== 0n) out.set(state.subarray(L.ymmHi, L.ymmHiEnd), L.ymmHi);
  const inuse = view(state).getBigUint64(L.xstateBv, true);
  const old = ov.getBigUint64(L.xstateBv, true);
  ov.setBigUint64(L.xstateBv, (old & ~rfbm) | (inuse & rfbm), true);
}

/**
 * arch/x86/kvm/x86.c: __kvm_set_xcr(): why `value` cannot be XCR `index`, or undefined. Only XCR0
 * exists; x87 is always on; AVX needs SSE; only features the vCPU's CPUID (leaf 0xD) and KVM support.
 */
export function xcrProblem(index: number, value: bigint, guestSupported: bigint): string | undefined {
  if (index !== 0) return `XCR${index} does not exist (only XCR0, XCR_XFEATURE_ENABLED_MASK)`;
  if ((value & XFEATURE.FP) === 0n) return `XCR0 0x${value.toString(16)} clears x87 (bit 0 must be set)`;
  if ((value & XFEATURE.YMM) !== 0n && (value & XFEATURE.SSE) === 0n)
    return `XCR0 0x${value.toString(16)} enables AVX without SSE`;
  const valid = guestSupported | XFEATURE.FP;
  if ((value & ~valid) !== 0n)
    return `XCR0 0x${value.toString(16)} enables features outside the guest's supported 0x${valid.toString(16)}`;
  return undefined;
}

/** Bytes of the standard area covering every supported component (CPUID.(0xD,0).ECX). */
export const XSAVE_AREA_BYTES = L.ymmHiEnd;
