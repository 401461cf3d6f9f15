// The kselftest harness driving real VMs: a guest assertion fails its case with the guest's
// banner in the TAP diagnostics, the next case still runs, an unusable VM type is a skip.
import { createSimKvm } from '@kvmtest/kvm-sim';
import { UCALL } from '@kvmtest/ucall';
import { expect, test } from 'vitest';
import {
  defineSuite,
  guestAssert,
  guestDone,
  KSFT,
  runSuite,
  runUcall,
  tapReporter,
  testAssertEq,
  testRequireVmType,
  vmCreateWithOneVcpu,
} from '../src/index.js';

const suite = defineSuite({
  name: 'guest_smoke',
  cases: [
    {
      name: 'done',
      async run() {
        using vm = vmCreateWithOneVcpu(guestDone, 'default');
        testAssertEq((await runUcall(vm.vcpus[0]!)).cmd, UCALL.DONE);
      },
    },
    {
      name: 'guest-assert',
      async run() {
        using vm = vmCreateWithOneVcpu(async (g) => {
          await guestAssert(g, g.vcpuId === 7, 'vCPU id %d', g.vcpuId);
        }, 'default');
        await runUcall(vm.vcpus[0]!);
      },
    },
    {
      name: 'sev-snp',
      run() {
        // An Intel host has no SEV-SNP: the case is a skip.
        testRequireVmType('sev-snp', createSimKvm({ vendor: 'intel' }));
      },
    },
    {
      name: 'after',
      async run(ctx) {
        using vm = vmCreateWithOneVcpu(guestDone, 'sw-protected');
        ctx.log('vm type %s', vm.type);
        testAssertEq((await runUcall(vm.vcpus[0]!)).cmd, UCALL.DONE);
      },
    },
  ],
});

test('a suite of VM cases prints TAP with the guest banner and exits 1 when one case fails', async () => {
  const lines: string[] = [];
  const res = await runSuite(suite, { reporter: tapReporter((l) => lines.push(l)) });
  expect(lines.slice(0, 2)).toEqual(['TAP version 13', '1..4']);
  expect(lines).toContain('ok 1 done');
  expect(lines).toContain('not ok 2 guest-assert');
  expect(lines).toContain('# ==== Guest Assertion Failure (vCPU 0) ====');
  expect(lines.some((l) => /^# {3}.*harness-vms\.test\.ts:\d+: g\.vcpuId === 7$/.test(l))).toBe(true);
  expect(lines).toContain('#   vCPU id 0');
  expect(lines.some((l) => /^ok 3 sev-snp # SKIP /.test(l))).toBe(true);
  expect(lines).toContain('# vm type sw-protected');
  expect(lines).toContain('ok 4 after');
  expect(res.exitCode).toBe(KSFT.FAIL);
  expect(res.counts).toEqual({ pass: 2, fail: 1, skip: 1, timeout: 0 });
});
