// No exception entry means the CPU's behaviour: a guest that removed its exception entry (loaded an
// empty IDT) and then faults triple-faults, and KVM_RUN returns KVM_EXIT_SHUTDOWN on every VM type
// (arch/x86/kvm/svm/svm.c: shutdown_interception(), arch/x86/kvm/vmx/vmx.c: handle_triple_fault(),
// arch/x86/kvm/vmx/tdx.c: tdx_handle_triple_fault()). With the kit's entry installed, the same fault
// is reported to the host as UNHANDLED.
import { SEV_POLICY_BIT } from '@kvmtest/coco';
import { type Guest, VECTOR } from '@kvmtest/kvm';
import { describe, expect, test } from 'vitest';
import {
  assertExitReason,
  GuestUnhandledError,
  runUcall,
  SNP_DEFAULT_POLICY,
  vcpuRun,
  vmCreateWithOneVcpu,
  vmSevCreateWithOneVcpu,
  vmSevLaunch,
  vmSnpLaunch,
} from '../src/index.js';
import { ALL_TYPES, requireType } from './helpers.js';

/** guest_shutdown_code(): clobber the IDT so that #UD is guaranteed to trigger SHUTDOWN, then UD2. */
async function guestShutdownCode(g: Guest): Promise<void> {
  g.setExceptionHandler(undefined);
  g.ud2();
}

describe.each(ALL_TYPES)('%s: a fault with no exception entry', (type) => {
  test('triple-faults: the run ends with a shutdown exit, not an UNHANDLED ucall', async (ctx) => {
    requireType(ctx, type);
    using vm = vmCreateWithOneVcpu(async (g) => {
      g.setExceptionHandler(undefined);
      g.readU64(0xdead_0000n);
    }, type);
    const vcpu = vm.vcpus[0]!;
    const exit = await vcpuRun(vcpu);
    expect(exit.reason).toBe('shutdown');
    assertExitReason(vcpu, 'shutdown');
  });

  test('with the kit entry still installed, the same fault is UNHANDLED with its vector', async (ctx) => {
    requireType(ctx, type);
    using vm = vmCreateWithOneVcpu(async (g) => {
      g.ud2();
    }, type);
    const err = await runUcall(vm.vcpus[0]!).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestUnhandledError);
    expect((err as GuestUnhandledError).vector).toBe(VECTOR.UD);
  });
});

// tools/testing/selftests/kvm/x86/sev_smoke_test.c: test_sev_shutdown() for SEV-ES and SNP.
describe('sev_smoke_test: test_sev_shutdown', () => {
  test('sev-es: SHUTDOWN after UD2 with an empty IDT', async (ctx) => {
    requireType(ctx, 'sev-es');
    using vm = vmSevCreateWithOneVcpu('sev-es', guestShutdownCode);
    vmSevLaunch(vm, { policy: 1 << SEV_POLICY_BIT.ES });
    const vcpu = vm.vcpus[0]!;
    await vcpu.run();
    assertExitReason(vcpu, 'shutdown');
  });

  test('sev-snp: SHUTDOWN after UD2 with an empty IDT', async (ctx) => {
    requireType(ctx, 'sev-snp');
    using vm = vmCreateWithOneVcpu(guestShutdownCode, 'sev-snp');
    vmSnpLaunch(vm, { policy: SNP_DEFAULT_POLICY });
    const vcpu = vm.vcpus[0]!;
    await vcpu.run();
    assertExitReason(vcpu, 'shutdown');
  });
});
