// biome-ignore-all format: kept verbatim as printed in the README
// The first test of the repository README, verbatim (keep the two in step).
import { defineGuest, guestDone, guestSync, runUcall, testAssertEq, vmCreateWithOneVcpu } from '@kvmtest/testkit';
import { UCALL } from '@kvmtest/ucall';
import { test } from 'vitest';

// Guest side: only `g`, its locals and this VM's globals.
const guest = defineGuest(async (g) => {
  await guestSync(g, 1n, g.readU64(g.global('answer')));
  await guestDone(g);
}, { globals: { answer: 42n } });

for (const type of ['default', 'sev-es', 'tdx'] as const)
  test(`a ${type} guest reports to its host`, async () => {
    using vm = vmCreateWithOneVcpu(guest, { type }); // memory, tag bit, image, ucall, launch
    const sync = await runUcall(vm.vcpus[0]!);          // an ABORT or #PF in the guest throws here
    testAssertEq(sync.args[1]!, 42n);
    testAssertEq((await runUcall(vm.vcpus[0]!)).cmd, UCALL.DONE);
  });
