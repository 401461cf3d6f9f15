// Guest-physical access throughput through the region lookup (last-hit cache + DataView).
import type { Bench } from '../../../scripts/bench/measure.js';
import { opsPerSecondSync } from '../../../scripts/bench/measure.js';
import { PhysicalMemory } from '../src/index.js';

function memory(): PhysicalMemory {
  const mem = new PhysicalMemory();
  mem.addRegion({ slot: 0, gpa: 0n, size: 0x20_0000n });
  mem.addRegion({ slot: 1, gpa: 0x1_0000_0000n, size: 0x10_0000n });
  return mem;
}

// 1024 u64-aligned GPAs inside slot 0, precomputed so the loop measures the access alone.
const gpas = Array.from({ length: 1024 }, (_, i) => BigInt((i * 0x1238) & 0x1f_fff8));

// The same loop on a bare DataView, measured in the same process: the ceiling under this machine's load.
function rawDataView(write: boolean): string {
  const view = new DataView(new ArrayBuffer(0x20_0000));
  let sink = 0n;
  const rate = write
    ? opsPerSecondSync((i) => view.setBigUint64(Number(gpas[i & 1023]!), 5n, true), 300)
    : opsPerSecondSync((i) => {
        sink = view.getBigUint64(Number(gpas[i & 1023]!), true);
      }, 300);
  if (sink === -1n) console.log(sink);
  return `bare DataView.${write ? 'set' : 'get'}BigUint64 loop: ${(rate / 1e6).toFixed(1)} M ops/s`;
}

const benches: Bench[] = [
  {
    name: 'guest-memory.readU64',
    unit: 'ops/s',
    goal: '≥ 20,000,000 ops/s',
    run() {
      this.reference = rawDataView(false);
      const mem = memory();
      let sink = 0n;
      const r = opsPerSecondSync((i) => {
        sink = mem.readU64(gpas[i & 1023]!);
      }, 600);
      if (sink === -1n) console.log(sink);
      return r;
    },
  },
  {
    name: 'guest-memory.writeU64',
    unit: 'ops/s',
    goal: '≥ 20,000,000 ops/s',
    run() {
      this.reference = rawDataView(true);
      const mem = memory();
      const v = 0x1234_5678_9abc_def0n;
      return opsPerSecondSync((i) => mem.writeU64(gpas[i & 1023]!, v), 600);
    },
  },
];

export default benches;
