// The JS watchdog's costs: arming and releasing it per case, a whole empty case under
// runWithTimeout (fresh event-loop turn, timer, watchdog), and the simulator's exit round trip
// while the watchdog is armed (its worker's inspector session connected to this thread), to compare
// with kvm-sim.exit-roundtrip.
import { createSimKvm } from '@kvmtest/kvm-sim';
import { type Bench, nsPerOp } from '../../../scripts/bench/measure.js';
import { caseContext, runWithTimeout } from '../src/index.js';
import { armWatchdog } from '../src/internal/watchdog.js';

/** Arms the watchdog once and waits for its worker to connect its inspector session. */
async function connected(): Promise<void> {
  const lease = armWatchdog(60_000);
  if (lease === undefined) throw new Error('the watchdog is unavailable in this process');
  await new Promise((r) => setTimeout(r, 300));
  await lease.release();
}

const benches: Bench[] = [
  {
    name: 'testkit.watchdog.arm-release',
    unit: 'ns/op',
    goal: '≤ 2 000 ns/op (per case)',
    async run() {
      await connected();
      return nsPerOp(async () => {
        await armWatchdog(60_000)!.release();
      });
    },
  },
  {
    name: 'testkit.case-overhead',
    unit: 'ns/op',
    reference: 'an empty case under runWithTimeout: fresh event-loop turn, timer, watchdog arm and release',
    async run() {
      await connected();
      const c = { name: 'empty', run() {} };
      const ctx = caseContext('bench', c.name, () => {});
      return nsPerOp(() => runWithTimeout(c, ctx, 60_000));
    },
  },
  {
    name: 'kvm-sim.exit-roundtrip.watchdog-armed',
    unit: 'ns/op',
    goal: 'within 10 % of kvm-sim.exit-roundtrip',
    async run() {
      await connected();
      const kvm = createSimKvm({ runBudget: Number.MAX_SAFE_INTEGER });
      const vcpu = kvm.createVm().createVcpu(0);
      vcpu.setEntry(async (g) => {
        for (let i = 0; ; i++) await g.out(0x80, 1, i & 0xff);
      });
      const lease = armWatchdog(600_000)!;
      try {
        return await nsPerOp(() => vcpu.run());
      } finally {
        await lease.release();
      }
    },
  },
];

export default benches;
