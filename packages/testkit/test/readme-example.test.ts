import { UCALL } from '@kvmtest/ucall';
import {
  defineGuest,
  defineSuite,
  guestAssertEq,
  guestDone,
  guestSync,
  runUcall,
  testAssertEq,
  testRequireVmType,
  vmCreateWithOneVcpu,
  writeGuestGlobal,
} from '@kvmtest/testkit';
import { vitestSuite } from '@kvmtest/testkit/vitest';

const guest = defineGuest(
  async (g) => {
    // guest side: only g, locals, this VM's globals
    await guestSync(g, 1n);
    await guestAssertEq(g, g.readU64(g.global('expected')), 42n);
    await guestDone(g);
  },
  { globals: { expected: 0n } },
);

vitestSuite(
  defineSuite({
    name: 'first test',
    cases: (['default', 'sev-es'] as const).map((type) => ({
      name: type,
      async run() {
        testRequireVmType(type); // a kselftest skip where the backend lacks it
        using vm = vmCreateWithOneVcpu(guest, type); // memory, tag bit, image, ucall (SEV: INIT2)
        writeGuestGlobal(vm, 'expected', 42n); // lands before the launch
        testAssertEq((await runUcall(vm.vcpus[0]!)).cmd, UCALL.SYNC); // SEV-ES: launched here
        testAssertEq((await runUcall(vm.vcpus[0]!)).cmd, UCALL.DONE); // ABORT/UNHANDLED would throw
      },
    })),
  }),
);
