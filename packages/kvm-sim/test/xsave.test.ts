// x87/SSE/AVX state and XCR0: KVM_CAP_XCRS, KVM_GET/SET_XSAVE, KVM_GET/SET_XCRS (arch/x86/kvm/x86.c:
// kvm_vcpu_ioctl_x86_{get,set}_{xsave,xcrs}(), __kvm_set_xcr()) and the guest's XGETBV, XSETBV,
// XSAVE and XRSTOR.
import { CAP, CR, type ExceptionFrame, tryKvm, VECTOR, XFEATURE, XSAVE_LAYOUT as L } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { createSimKvm } from '../src/index.js';
import { DATA_GVA, guestVm, vmVcpuAdd } from './helpers.js';

const ALL = XFEATURE.FP | XFEATURE.SSE | XFEATURE.YMM;

/** The area test_sync_vmsa's host builds: FNINIT, ymm4 all ones, FLD pi, XSAVE with x87 | SSE | AVX. */
function hostArea(): Uint8Array {
  const a = new Uint8Array(L.size);
  const v = new DataView(a.buffer);
  v.setUint16(L.fcw, 0x037f, true);
  v.setUint16(L.fsw, 7 << 11, true); // TOP = 7 after one push
  a[L.ftw] = 0x80; // physical register 7 valid
  v.setBigUint64(L.st, 0xc90fdaa22168c000n, true); // pi, 80-bit extended: mantissa …
  v.setUint16(L.st + 8, 0x4000, true); // … and sign/exponent
  v.setUint32(L.mxcsr, 0x1f80, true);
  v.setUint32(L.mxcsrMask, 0xffff, true);
  a.fill(0xff, L.xmm + 4 * 16, L.xmm + 5 * 16);
  a.fill(0xff, L.ymmHi + 4 * 16, L.ymmHi + 5 * 16);
  v.setBigUint64(L.xstateBv, ALL, true);
  return a;
}

describe('KVM_CAP_XCRS, KVM_GET/SET_XCRS', () => {
  it('KVM_CAP_XCRS and KVM_CAP_XSAVE answer 1; a new vCPU has XCR0 = x87 (kvm_vcpu_reset)', () => {
    const kvm = createSimKvm();
    expect(kvm.checkExtension(CAP.XCRS)).toBe(1);
    expect(kvm.checkExtension(CAP.XSAVE)).toBe(1);
    const v = kvm.createVm().createVcpu(0);
    expect(v.getXcrs()).toEqual([{ xcr: 0, value: XFEATURE.FP }]);
  });
  it('__kvm_set_xcr: x87 always, AVX needs SSE, only supported features, at most KVM_MAX_XCRS entries', () => {
    const v = vmVcpuAdd(createSimKvm().createVm(), 0);
    expect(tryKvm(() => v.setXcrs([{ xcr: 0, value: 0n }]))).toBe('EINVAL');
    expect(tryKvm(() => v.setXcrs([{ xcr: 0, value: XFEATURE.FP | XFEATURE.YMM }]))).toBe('EINVAL');
    expect(tryKvm(() => v.setXcrs([{ xcr: 0, value: ALL | (1n << 5n) }]))).toBe('EINVAL');
    const many = Array.from({ length: 17 }, () => ({ xcr: 0, value: ALL }));
    expect(tryKvm(() => v.setXcrs(many))).toBe('EINVAL');
    expect(v.getXcrs()[0]!.value).toBe(XFEATURE.FP);
    expect(tryKvm(() => v.setXcrs([{ xcr: 1, value: 0n }]))).toBeUndefined();
    v.setXcrs([{ xcr: 0, value: ALL }]);
    expect(v.getXcrs()).toEqual([{ xcr: 0, value: ALL }]);
    // guest_supported_xcr0 follows the vCPU's CPUID leaf 0xD.
    v.setCpuid(v.getCpuid().filter((e) => e.function !== 0xd));
    expect(tryKvm(() => v.setXcrs([{ xcr: 0, value: XFEATURE.FP | XFEATURE.SSE }]))).toBe('EINVAL');
  });
  it('__kvm_set_xcr with no CPUID set (a new vCPU): guest_supported_xcr0 is 0, so only XCR0 = x87 is accepted', () => {
    const v = createSimKvm().createVm().createVcpu(0);
    expect(tryKvm(() => v.setXcrs([{ xcr: 0, value: XFEATURE.FP }]))).toBeUndefined();
    expect(tryKvm(() => v.setXcrs([{ xcr: 0, value: XFEATURE.FP | XFEATURE.SSE }]))).toBe('EINVAL');
    expect(v.getXcrs()).toEqual([{ xcr: 0, value: XFEATURE.FP }]);
  });
});

describe('KVM_GET/SET_XSAVE', () => {
  it('a new vCPU holds the RESET x87/SSE state: FCW 0x37F, MXCSR 0x1F80, nothing in use', () => {
    const a = createSimKvm().createVm().createVcpu(0).getXsave();
    const v = new DataView(a.buffer);
    expect(a.length).toBe(4096);
    expect(v.getUint16(L.fcw, true)).toBe(0x37f);
    expect(v.getUint32(L.mxcsr, true)).toBe(0x1f80);
    expect(v.getBigUint64(L.xstateBv, true)).toBe(0n);
  });
  // arch/x86/kernel/fpu/xstate.c: __copy_xstate_to_uabi_buf() writes xstate_fx_sw_bytes there
  // (arch/x86/kernel/ptrace.c: update_regset_xstate_info() stores the host's user xfeatures in the
  // first u64); copy_uabi_to_xstate() never reads them. Measured on /dev/kvm: 07 then 47 zero bytes.
  it('__copy_xstate_to_uabi_buf: bytes 464-511 hold the host user xfeatures (x87|SSE|AVX) then zeros; KVM_SET_XSAVE ignores them', () => {
    const v = createSimKvm().createVm().createVcpu(0);
    const a = v.getXsave();
    const d = new DataView(a.buffer);
    expect(d.getBigUint64(464, true)).toBe(ALL);
    expect(a.subarray(472, 512).every((b) => b === 0)).toBe(true);
    expect(a.subarray(416, 464).every((b) => b === 0)).toBe(true); // the FXSAVE padding is zeroed
    const junk = hostArea();
    junk.fill(0xee, 416, 512);
    v.setXsave(junk);
    const back = v.getXsave();
    expect(new DataView(back.buffer).getBigUint64(464, true)).toBe(ALL);
    expect(back.subarray(416, 464).every((b) => b === 0)).toBe(true);
    expect(back.subarray(472, 512).every((b) => b === 0)).toBe(true);
  });
  it('validate_user_xstate_header: unsupported XSTATE_BV, a compacted header, reserved bytes or MXCSR bits -> EINVAL, nothing changed', () => {
    const v = createSimKvm().createVm().createVcpu(0);
    const before = v.getXsave();
    const bad = (patch: (a: Uint8Array, d: DataView) => void) => {
      const a = hostArea();
      patch(a, new DataView(a.buffer));
      return tryKvm(() => v.setXsave(a));
    };
    expect(bad((_a, d) => d.setBigUint64(L.xstateBv, ALL | 8n, true))).toBe('EINVAL');
    expect(bad((_a, d) => d.setBigUint64(L.xcompBv, 1n << 63n, true))).toBe('EINVAL');
    expect(bad((a) => (a[L.headerReserved + 3] = 1))).toBe('EINVAL');
    expect(bad((_a, d) => d.setUint32(L.mxcsr, 1 << 16, true))).toBe('EINVAL');
    expect(v.getXsave()).toEqual(before);
    expect(() => v.setXsave(new Uint8Array(100))).toThrow(TypeError);
  });
  it('round-trips the area; components missing from XSTATE_BV load their initial state', () => {
    const v = createSimKvm().createVm().createVcpu(0);
    const a = hostArea();
    v.setXsave(a);
    // Bytes 464–511 are software's (filled by KVM_GET_XSAVE, ignored by KVM_SET_XSAVE).
    expect(v.getXsave().subarray(0, 464)).toEqual(a.subarray(0, 464));
    expect(v.getXsave().subarray(512, 832)).toEqual(a.subarray(512, 832));
    const noAvx = hostArea();
    new DataView(noAvx.buffer).setBigUint64(L.xstateBv, XFEATURE.FP | XFEATURE.SSE, true);
    v.setXsave(noAvx);
    expect(
      v
        .getXsave()
        .subarray(L.ymmHi, L.ymmHiEnd)
        .every((b) => b === 0),
    ).toBe(true);
  });
});

describe('XGETBV, XSETBV, XSAVE and XRSTOR in the guest', () => {
  function setup(osxsave: boolean) {
    const kvm = createSimKvm();
    const t = guestVm(kvm);
    return {
      t,
      vcpu(program: Parameters<typeof t.vcpu>[0]) {
        const v = t.vcpu(program);
        const s = v.getSregs();
        if (osxsave) v.setSregs({ ...s, cr4: s.cr4 | CR.CR4_OSXSAVE });
        return v;
      },
    };
  }

  it('XSAVE writes the state the host loaded with KVM_SET_XSAVE, byte for byte (what test_sync_vmsa compares)', async () => {
    const { t, vcpu } = setup(true);
    const v = vcpu(async (g) => {
      g.xsave!(DATA_GVA, ALL);
    });
    v.setXcrs([{ xcr: 0, value: ALL }]);
    const a = hostArea();
    v.setXsave(a);
    expect((await v.run()).reason).toBe('hlt');
    const out = t.mem.subarray(0x20_0000, 0x20_0000 + 4096);
    expect(out).toEqual(a);
  });
  it('XSAVE saves only RFBM & XCR0 and leaves the other bytes alone; XRSTOR loads them back', async () => {
    const { t, vcpu } = setup(true);
    let after: bigint[] = [];
    const v = vcpu(async (g) => {
      g.xsave!(DATA_GVA, ALL); // XCR0 = x87 | SSE: the AVX bytes stay as they were
      g.writeU64(DATA_GVA + BigInt(L.xmm), 0x1234n);
      g.xrstor!(DATA_GVA, XFEATURE.SSE);
      g.xsave!(DATA_GVA + 4096n, XFEATURE.SSE);
      after = [g.readU64(DATA_GVA + 4096n + BigInt(L.xmm)), g.xgetbv!(0)];
    });
    v.setXcrs([{ xcr: 0, value: XFEATURE.FP | XFEATURE.SSE }]);
    v.setXsave(hostArea());
    t.mem.fill(0xaa, 0x20_0000 + L.ymmHi, 0x20_0000 + L.ymmHiEnd);
    expect((await v.run()).reason).toBe('hlt');
    const out = t.mem.subarray(0x20_0000, 0x20_0000 + 4096);
    expect(out.subarray(L.ymmHi, L.ymmHiEnd).every((b) => b === 0xaa)).toBe(true);
    expect(new DataView(out.buffer, out.byteOffset).getBigUint64(L.xstateBv, true)).toBe(
      XFEATURE.FP | XFEATURE.SSE,
    );
    expect(after).toEqual([0x1234n, XFEATURE.FP | XFEATURE.SSE]);
  });
  it('XSETBV follows __kvm_set_xcr (#GP(0) otherwise); with CR4.OSXSAVE clear the family is #UD', async () => {
    const frames: ExceptionFrame[] = [];
    let xcr0 = 0n;
    const on = setup(true).vcpu(async (g) => {
      g.setExceptionHandler((f) => {
        frames.push(f);
        return 'skip';
      });
      g.xsetbv!(0, XFEATURE.FP | XFEATURE.YMM);
      g.xsetbv!(0, ALL);
      xcr0 = g.xgetbv!(0);
    });
    expect((await on.run()).reason).toBe('hlt');
    expect(frames.map((f) => [f.vector, f.errorCode])).toEqual([[VECTOR.GP, 0]]);
    expect(xcr0).toBe(ALL);
    const seen: number[] = [];
    const off = setup(false).vcpu(async (g) => {
      g.setExceptionHandler((f) => {
        seen.push(f.vector);
        return 'skip';
      });
      g.xgetbv!(0);
      g.xsave!(DATA_GVA, ALL);
    });
    expect((await off.run()).reason).toBe('hlt');
    expect(seen).toEqual([VECTOR.UD, VECTOR.UD]);
  });
});
