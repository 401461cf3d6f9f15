// A #PF handler that touches guest memory and then retries: the retried access still reads and
// writes the bytes of its own GVA (the handler's accesses must not leak into it).

import { expect, test } from 'vitest';
import { createSimKvm } from '../src/index.js';
import { DATA_GVA, guestVm } from './helpers.js';

test('an access retried after its #PF handler read other guest memory reaches its own offset', async () => {
  const t = guestVm(createSimKvm());
  t.phys.writeU64(0x20_0010n, 0x1111n);
  t.phys.writeU64(0x30_0123n, 0xabcdn);
  // Late pages: 0x50_0000 → GPA 0x30_0000, 0x60_0000 → GPA 0x31_0000, mapped by the handler.
  const late = new Map([
    [0x50_0000n, 0x30_0000n],
    [0x60_0000n, 0x31_0000n],
  ]);
  let seen = 0n;
  const vcpu = t.vcpu(async (g) => {
    g.setExceptionHandler((frame) => {
      // What a guest runtime's dispatcher does (it reads its handler table), then the fix-up.
      g.readU64(DATA_GVA + 0x10n);
      const page = (frame.cr2 ?? 0n) & ~0xfffn;
      t.map(page, late.get(page)!);
      return 'retry';
    });
    seen = g.readU64(0x50_0123n);
    g.writeU64(0x60_0ab8n, 0x5555n);
    await g.out(0x80, 1, 0);
  });
  expect((await vcpu.run()).reason).toBe('io');
  expect(seen).toBe(0xabcdn);
  expect(t.phys.readU64(0x31_0ab8n)).toBe(0x5555n);
});
