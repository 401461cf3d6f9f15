import { describe, expect, it } from 'vitest';
import { createSimKvm, simStats } from '../src/index.js';
import { DATA_GVA, guestVm } from './helpers.js';

describe('smoke', () => {
  it('runs a guest that writes memory and does port I/O', async () => {
    const kvm = createSimKvm();
    const { vm, mem, vcpu } = guestVm(kvm);
    const v = vcpu(async (g) => {
      g.writeU64(DATA_GVA + 8n, 0x1122334455667788n);
      await g.out(0x80, 1, 42);
      const x = await g.in(0x81, 2);
      g.writeU32(DATA_GVA, x);
    });
    const e1 = await v.run();
    expect(e1).toMatchObject({ reason: 'io', direction: 'out', port: 0x80, size: 1 });
    const e2 = await v.run();
    expect(e2).toMatchObject({ reason: 'io', direction: 'in', port: 0x81 });
    if (e2.reason === 'io') e2.data.set([0x34, 0x12]);
    const e3 = await v.run();
    expect(e3.reason).toBe('hlt');
    expect(new DataView(mem.buffer).getBigUint64(0x200008, true)).toBe(0x1122334455667788n);
    expect(new DataView(mem.buffer).getUint32(0x200000, true)).toBe(0x1234);
    vm.close();
    expect(simStats(kvm)).toMatchObject({ liveVms: 0, liveVcpus: 0, openFds: 1 });
  });
});
