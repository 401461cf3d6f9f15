// A port of tools/testing/selftests/kvm/x86/sev_smoke_test.c: test_sync_vmsa(). The host loads x87,
// SSE and AVX state with KVM_SET_XSAVE before the SEV-ES launch; KVM_SEV_LAUNCH_UPDATE_VMSA syncs it
// into the VMSA (arch/x86/kvm/svm/sev.c: sev_es_sync_vmsa()); the guest's first instruction, XSAVE,
// must write exactly that state into a shared page.
import { GHCB_MSR_CODE, SEV_MSR, SEV_POLICY_BIT, X86_FEATURE } from '@kvmtest/coco';
import { CAP, type Guest, tryKvm, XFEATURE, XSAVE_LAYOUT as L } from '@kvmtest/kvm';
import { describe, expect, test } from 'vitest';
import {
  addrGva2Hva,
  getKvm,
  guestAssert,
  kvmCpuHas,
  vcpuArgsSet,
  vmSevCreateWithOneVcpu,
  vmSevLaunch,
  vmVaddrAllocShared,
} from '../src/index.js';
import { requireType } from './helpers.js';

const XFEATURE_MASK_X87_AVX = XFEATURE.FP | XFEATURE.SSE | XFEATURE.YMM;

/** guest_sev_es_code(): the SEV and SEV-ES bits of MSR_AMD64_SEV, then "done" through a GHCB termination request. */
async function guestSevEsCode(g: Guest): Promise<void> {
  await guestAssert(g, (g.rdmsr(SEV_MSR.MSR_AMD64_SEV) & 1n) !== 0n);
  await guestAssert(g, (g.rdmsr(SEV_MSR.MSR_AMD64_SEV) & 2n) !== 0n);
  g.wrmsr(SEV_MSR.MSR_AMD64_SEV_ES_GHCB, BigInt(GHCB_MSR_CODE.TERM_REQ));
  await g.vmgexit();
}

/** guest_code_xsave: XSAVE (RDI) with EDX:EAX = x87 | SSE | AVX before any other code, then guest_sev_es_code. */
async function guestCodeXsave(g: Guest): Promise<void> {
  g.xsave!(g.regs.rdi, XFEATURE_MASK_X87_AVX);
  await guestSevEsCode(g);
}

/** What the host's `fninit; vpcmpeqb %ymm4,%ymm4,%ymm4; fldl pi; xsave` leaves in a zeroed kvm_xsave. */
function hostXsave(): Uint8Array {
  const a = new Uint8Array(L.size);
  const v = new DataView(a.buffer);
  v.setUint16(L.fcw, 0x037f, true);
  v.setUint16(L.fsw, 7 << 11, true);
  a[L.ftw] = 0x80;
  v.setBigUint64(L.st, 0xc90fdaa22168c000n, true);
  v.setUint16(L.st + 8, 0x4000, true);
  v.setUint32(L.mxcsr, 0x1f80, true);
  v.setUint32(L.mxcsrMask, 0xffff, true);
  a.fill(0xff, L.xmm + 4 * 16, L.xmm + 5 * 16);
  a.fill(0xff, L.ymmHi + 4 * 16, L.ymmHi + 5 * 16);
  v.setBigUint64(L.xstateBv, XFEATURE_MASK_X87_AVX, true);
  return a;
}

describe.each([0, 1 << SEV_POLICY_BIT.NODBG])('test_sync_vmsa (policy ES | 0x%x)', (policy) => {
  test('the guest XSAVEs the state the host set', async (ctx) => {
    requireType(ctx, 'sev-es');
    const kvm = getKvm();
    if (kvm.checkExtension(CAP.XCRS) <= 0 || !kvmCpuHas(X86_FEATURE.XSAVE))
      ctx.skip('Requirement not met: kvm_has_cap(KVM_CAP_XCRS) && XSAVE');
    using vm = vmSevCreateWithOneVcpu('sev-es', guestCodeXsave);
    const vcpu = vm.vcpus[0]!;
    const gva = vmVaddrAllocShared(vm, 4096);
    const hva = addrGva2Hva(vm, gva);
    vcpuArgsSet(vcpu, gva);
    const xsave = hostXsave();
    vcpu.setXsave(xsave);
    vmSevLaunch(vm, { policy: (1 << SEV_POLICY_BIT.ES) | policy });
    // The VMSA holds the state now: KVM_GET_XSAVE of a protected vCPU fails.
    expect(tryKvm(() => vcpu.getXsave())).toBe('EINVAL');
    // This page is shared, so make it decrypted.
    hva.buffer.fill(0, hva.offset, hva.offset + 4096);
    const exit = await vcpu.run();
    expect(exit).toMatchObject({ reason: 'system-event', type: 'sev-term' });
    if (exit.reason === 'system-event') expect(exit.data).toEqual([BigInt(GHCB_MSR_CODE.TERM_REQ)]);
    // compare_xsave(): the first 4095 bytes.
    expect(hva.buffer.subarray(hva.offset, hva.offset + 4095)).toEqual(xsave.subarray(0, 4095));
  });
});
