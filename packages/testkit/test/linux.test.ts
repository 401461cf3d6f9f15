// The kit on the real /dev/kvm (kvm-linux and its guest agent): the README's first test, a #PF a
// guest handler resolves, an unhandled #UD, printf and a failed guest assertion — the same guest
// programs the simulator runs. Skipped, with the reason, where /dev/kvm cannot be opened.
import type { Kvm } from '@kvmtest/kvm';
import { UCALL } from '@kvmtest/ucall';
import { afterAll, describe, expect, test } from 'vitest';
import {
  defineGuest,
  GuestAssertionError,
  GuestUnhandledError,
  guestAssertEq,
  guestDone,
  guestPrintf,
  guestSync,
  KsftSkip,
  kvmFromEnv,
  runUcall,
  testAssertEq,
  testRequireVmType,
  vmCreateBarebones,
  vmCreateWithOneVcpu,
  vmCreateWithVcpus,
  vmInstallExceptionHandler,
} from '../src/index.js';

let kvm: (Kvm & { close?(): void }) | undefined;
let skip = '';
try {
  kvm = kvmFromEnv({ KVMTEST_BACKEND: 'linux' });
} catch (e) {
  if (!(e instanceof KsftSkip)) throw e;
  skip = e.reason;
  console.warn(`testkit linux tests skipped: ${skip}`);
}

const answer = defineGuest(
  async (g) => {
    await guestSync(g, 1n, g.readU64(g.global('answer')));
    await guestDone(g);
  },
  { globals: { answer: 42n } },
);

describe.skipIf(kvm === undefined)('testkit on /dev/kvm', () => {
  afterAll(() => kvm?.close?.());

  test("the README's first guest reports SYNC then DONE on a default VM", async () => {
    using vm = vmCreateWithOneVcpu(answer, 'default', { kvm: kvm! });
    expect(vm.kvm.backend).toBe('linux');
    const sync = await runUcall(vm.vcpus[0]!);
    testAssertEq(sync.cmd, UCALL.SYNC);
    testAssertEq(sync.args[1]!, 42n);
    testAssertEq((await runUcall(vm.vcpus[0]!)).cmd, UCALL.DONE);
  });

  test('a guest #PF reaches the handler the host installed, with the faulting address', async () => {
    const faulting = 0x7fff_0000_0000n; // canonical, never mapped by the kit
    const guest = defineGuest(
      async (g) => {
        const v = g.readU64(faulting); // the handler skips the access: it reads 0
        await guestSync(g, 2n, v, g.readU64(g.global('pf_seen')));
        await guestDone(g);
      },
      { globals: { pf_seen: 0n } },
    );
    using vm = vmCreateWithOneVcpu(guest, 'default', { kvm: kvm! });
    vmInstallExceptionHandler(vm, 14, (frame, g) => {
      g.writeU64(g.global('pf_seen'), frame.cr2 ?? 1n);
      return 'skip';
    });
    const sync = await runUcall(vm.vcpus[0]!);
    expect(sync.args.slice(0, 3)).toEqual([2n, 0n, faulting]);
    testAssertEq((await runUcall(vm.vcpus[0]!)).cmd, UCALL.DONE);
  });

  test('an unhandled #UD is reported as UNHANDLED with vector 6', async () => {
    const guest = defineGuest(async (g) => {
      g.ud2();
      await guestDone(g);
    });
    using vm = vmCreateWithOneVcpu(guest, 'default', { kvm: kvm! });
    const err = await runUcall(vm.vcpus[0]!).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestUnhandledError);
    expect((err as GuestUnhandledError).vector).toBe(6);
    expect((err as GuestUnhandledError).errorCode).toBeUndefined();
    // The guest's own line, not the agent's frames.
    expect((err as GuestUnhandledError).file).toMatch(/test\/linux\.test\.ts$/);
  });

  test('guest printf arrives formatted; a failed guest assertion arrives as ABORT and returns', async () => {
    const guest = defineGuest(
      async (g) => {
        await guestPrintf(g, 'vcpu %d says %s 0x%lx', g.vcpuId, 'hello', 0xabcn);
        await guestAssertEq(g, g.readU64(g.global('x')), 2n);
        await guestDone(g);
      },
      { globals: { x: 1n } },
    );
    using vm = vmCreateWithOneVcpu(guest, 'default', { kvm: kvm! });
    const pr = await runUcall(vm.vcpus[0]!);
    expect(pr.cmd).toBe(UCALL.PRINTF);
    expect(pr.message).toBe('vcpu 0 says hello 0xabc');
    const err = await runUcall(vm.vcpus[0]!).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestAssertionError);
    expect((err as GuestAssertionError).ucall.cmd).toBe(UCALL.ABORT);
    expect((err as GuestAssertionError).message).toContain('0x1 != 0x2');
    // The assertion returned after its ABORT ucall: the guest goes on at the next run.
    expect((await runUcall(vm.vcpus[0]!)).cmd).toBe(UCALL.DONE);
  });

  test('two vCPUs of one VM each report through their own agent pages, one run at a time', async () => {
    const guest = defineGuest(
      async (g) => {
        await guestSync(g, 1n, BigInt(g.vcpuId), g.readU64(g.global('answer')));
        await guestDone(g);
      },
      { globals: { answer: 7n } },
    );
    using vm = vmCreateWithVcpus(2, guest, 'default', { kvm: kvm! });
    for (const vcpu of vm.vcpus) {
      const sync = await runUcall(vcpu);
      expect(sync.args.slice(0, 3)).toEqual([1n, BigInt(vcpu.id), 7n]);
    }
    for (const vcpu of vm.vcpus) testAssertEq((await runUcall(vcpu)).cmd, UCALL.DONE);
  });

  test('a VM type the host lacks skips with the kselftest wording; barebones default VMs work', () => {
    using vm = vmCreateBarebones('default', { kvm: kvm! });
    expect(vm.raw.fd).toBeGreaterThanOrEqual(0);
    let skipped: unknown;
    try {
      testRequireVmType('sev', kvm!);
    } catch (e) {
      skipped = e;
    }
    // PVM hosts (and most CI) have no SEV: the skip names the type and the capability.
    if (skipped !== undefined) {
      expect(skipped).toBeInstanceOf(KsftSkip);
      expect((skipped as KsftSkip).reason).toBe(
        'sev VMs are not supported by the linux backend (KVM_CAP_VM_TYPES)',
      );
    }
  });
});
