// Page-table walk and GVA allocation throughput.
import type { Bench } from '../../../scripts/bench/measure.js';
import { opsPerSecondSync } from '../../../scripts/bench/measure.js';
import { AddressSpace, PhysicalMemory } from '../src/index.js';

function space(size: bigint): AddressSpace {
  const memory = new PhysicalMemory();
  memory.addRegion({ slot: 0, gpa: 0n, size });
  return new AddressSpace({ memory });
}

const benches: Bench[] = [
  {
    name: 'guest-memory.walk',
    unit: 'ops/s',
    goal: '≥ 5,000,000 ops/s (4-level table, 4 KiB leaves)',
    run() {
      const s = space(0x400_0000n);
      const base = s.vaddrAlloc(1024n * 4096n);
      const gvas = Array.from({ length: 1024 }, (_, i) => base + BigInt(i * 4096 + 8));
      const pt = s.pageTables;
      let sink = 0n;
      const r = opsPerSecondSync((i) => {
        const w = pt.walk(gvas[i & 1023]!);
        if (w.ok) sink = w.gpa;
      }, 600);
      if (sink === -1n) console.log(sink);
      return r;
    },
  },
  {
    name: 'guest-memory.vaddrAlloc-4k',
    unit: 'ops/s',
    goal: '≥ 500,000 ops/s',
    run() {
      // A fresh 4 GiB-capable space per batch keeps the allocator from running out.
      let s = space(0x1_0000_0000n);
      let n = 0;
      return opsPerSecondSync(() => {
        if (++n === 500_000) {
          s = space(0x1_0000_0000n);
          n = 0;
        }
        s.vaddrAlloc(4096n);
      }, 600);
    },
  },
];

export default benches;
