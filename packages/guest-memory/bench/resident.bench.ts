// Resident memory of many large, sparsely touched address spaces: backings are zero-filled
// ArrayBuffers (calloc → lazily zeroed pages), page bitmaps are sparse, so a 1 GiB space with 16
// touched pages should cost about those pages plus its page tables.
import type { Bench } from '../../../scripts/bench/measure.js';
import { residentMiB } from '../../../scripts/bench/measure.js';
import { AddressSpace, PhysicalMemory } from '../src/index.js';

const benches: Bench[] = [
  {
    name: 'guest-memory.resident-1000x1GiB',
    unit: 'MiB',
    goal: '≤ 200 MiB',
    run() {
      const before = residentMiB();
      const spaces: AddressSpace[] = [];
      for (let i = 0; i < 1000; i++) {
        const memory = new PhysicalMemory();
        memory.addRegion({ slot: 0, gpa: 0n, size: 0x4000_0000n });
        const s = new AddressSpace({ memory });
        const gva = s.vaddrAlloc(16n * 4096n);
        for (let p = 0n; p < 16n; p++) memory.writeU64(s.gvaToGpa(gva + p * 4096n), 0xfeedn + p);
        spaces.push(s);
      }
      const after = residentMiB();
      // Keep the spaces alive until after the measurement.
      if (spaces.length !== 1000) throw new Error('lost an address space');
      return after - before;
    },
  },
];

export default benches;
