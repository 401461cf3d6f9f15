// The guest half over a Guest that offers slotSend (kvm-linux's agent does): a ucall after the
// first is one slotSend, and wherever slotSend stops, the guest half goes on from that step with
// its own operations, so that the host sees the same ucalls and the pool ends the same.
import type { Guest, SlotSend, SlotSendResult } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import {
  getUcall,
  UCALL,
  UCALL_PIO_PORT,
  UCALL_TRANSPORT_CODE,
  type Ucall,
  ucall,
  ucallInit,
} from '../src/index.js';
import { createFakeVm, type FakeVcpu } from './support/fake-kvm.js';

/**
 * Gives `g` a slotSend made of its own operations, in the order the contract names them, that stops
 * where `plan` says (one entry per call; 'occupied' first takes the bit, as another vCPU would).
 */
function offerSlotSend(g: Guest, plan: SlotSendResult[], calls: SlotSend[]): void {
  g.slotSend = async (req) => {
    calls.push(req);
    const stop = plan.shift() ?? 'sent';
    if (g.readU64(req.poolGlobal) !== req.pool || stop === 'declined') return 'declined';
    if (g.readU64(req.countGlobal) !== req.count) return 'declined';
    if (stop === 'occupied') g.testAndSetBit(req.pool, req.bit);
    if (g.testAndSetBit(req.pool, req.bit)) return 'occupied';
    if (stop === 'reserved') return 'reserved';
    g.writeBytes(req.slot, req.data);
    const v = g.readU64(req.value);
    if (stop === 'filled' || g.readU64(req.selectorGlobal) !== req.selector || v > 0xffff_ffffn)
      return 'filled';
    await g.out(req.port, 4, Number(v));
    g.clearBit(req.pool, req.bit);
    return 'sent';
  };
}

async function next(v: FakeVcpu): Promise<Ucall | undefined> {
  await v.run();
  return getUcall(v.asVcpu());
}

describe('the guest half over Guest.slotSend', () => {
  it('sends each ucall after the first as one slotSend and goes on from wherever it stopped', async () => {
    const f = createFakeVm({ type: 'default' });
    const pool = ucallInit(f.target);
    const calls: SlotSend[] = [];
    const plan: SlotSendResult[] = ['sent', 'declined', 'reserved', 'filled', 'occupied', 'sent'];
    const v = f.vcpu(0, async (g) => {
      offerSlotSend(g, plan, calls);
      for (let i = 0; i < 7; i++) await ucall(g, UCALL.SYNC, BigInt(i), 7n);
    });
    const seen: [bigint | undefined, number | undefined, boolean][] = [];
    for (let i = 0; i < 7; i++) {
      const uc = await next(v);
      seen.push([uc?.args[0], uc?.slot, pool.inUse(0)]);
      expect(uc?.cmd).toBe(UCALL.SYNC);
      expect(uc?.args.slice(0, 2)).toEqual([BigInt(i), 7n]);
    }
    // The first ucall reads the globals itself; the fifth finds slot 0 taken (by "another vCPU")
    // and takes slot 1, as the seventh then does too.
    expect(seen.map(([a, s]) => [a, s])).toEqual([
      [0n, 0],
      [1n, 0],
      [2n, 0],
      [3n, 0],
      [4n, 0],
      [5n, 1],
      [6n, 1],
    ]);
    expect(calls.length).toBe(6);
    expect(calls[0]).toMatchObject({
      pool: pool.gva,
      count: BigInt(pool.slots),
      bit: 0,
      port: UCALL_PIO_PORT,
      selector: BigInt(UCALL_TRANSPORT_CODE.pio),
    });
    await v.run();
    // Slot 0 stays with "the other vCPU"; every slot this guest took is free again.
    expect([0, 1, 2, 3].map((i) => pool.inUse(i))).toEqual([true, false, false, false]);
  });
});
