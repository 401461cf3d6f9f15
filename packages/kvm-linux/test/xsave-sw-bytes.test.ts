// KVM_GET_XSAVE's software-reserved bytes on the real /dev/kvm: arch/x86/kernel/fpu/xstate.c:
// __copy_xstate_to_uabi_buf() zeroes the FXSAVE padding (416–463) and copies xstate_fx_sw_bytes
// into 464–511, whose first u64 is the host kernel's user xfeatures (arch/x86/kernel/ptrace.c:
// update_regset_xstate_info()); KVM_SET_XSAVE (copy_uabi_to_xstate()) never reads them.
import { XFEATURE } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { openLinuxKvm } from '../src/index.js';
import { kvmAvailable } from './helpers.js';

describe.skipIf(!kvmAvailable)('KVM_GET_XSAVE bytes 464-511', () => {
  it('__copy_xstate_to_uabi_buf: bytes 464-471 are the host user xfeatures (with x87 and SSE), the rest zero; KVM_SET_XSAVE ignores them', () => {
    using kvm = openLinuxKvm();
    using vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    const a = vcpu.getXsave();
    const mask = new DataView(a.buffer).getBigUint64(464, true);
    console.log(`host user xfeatures in KVM_GET_XSAVE[464]: 0x${mask.toString(16)}`);
    expect(mask & (XFEATURE.FP | XFEATURE.SSE)).toBe(XFEATURE.FP | XFEATURE.SSE);
    expect(a.subarray(416, 464).every((b) => b === 0)).toBe(true);
    expect(a.subarray(472, 512).every((b) => b === 0)).toBe(true);
    const junk = a.slice();
    junk.fill(0xee, 416, 512);
    vcpu.setXsave(junk);
    expect(vcpu.getXsave()).toEqual(a);
  });
});
