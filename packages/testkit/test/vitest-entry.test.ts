// The vitest entry: each case of a suite is a vitest test; testRequire becomes a vitest skip.
import { UCALL } from '@kvmtest/ucall';
import {
  defineSuite,
  guestDone,
  guestSync,
  runUcall,
  testAssertEq,
  testRequire,
  vmCreateWithOneVcpu,
} from '../src/index.js';
import { vitestSuite } from '../src/vitest.js';

vitestSuite(
  defineSuite({
    name: 'vitest entry',
    cases: [
      {
        name: 'a guest syncs then finishes',
        async run() {
          using vm = vmCreateWithOneVcpu(async (g) => {
            await guestSync(g, 1n);
            await guestDone(g);
          }, 'default');
          const vcpu = vm.vcpus[0]!;
          testAssertEq((await runUcall(vcpu)).cmd, UCALL.SYNC);
          testAssertEq((await runUcall(vcpu)).cmd, UCALL.DONE);
        },
      },
      {
        name: 'an unmet requirement is a vitest skip',
        run: () => testRequire(false, 'needs hardware we do not have'),
      },
    ],
  }),
);
