import { SEV_CMD, tryKvm } from '@kvmtest/kvm';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AsidPool } from './asid.js';
import { cpuidWith, FakeHost } from './fakes.test-support.js';

describe('ASID pool (arch/x86/kvm/svm/sev.c: sev_asid_new(), sev_asid_free())', () => {
  it('plain SEV uses min..max, SEV-ES uses 1..min-1; ASID 0 is never handed out (arch/x86/kvm/svm/sev.c: sev_asid_new())', () => {
    const p = new AsidPool(4, 6);
    expect([p.allocate(false), p.allocate(false), p.allocate(false), p.allocate(false)]).toEqual([
      4,
      5,
      6,
      'EBUSY',
    ]);
    expect([p.allocate(true), p.allocate(true), p.allocate(true), p.allocate(true)]).toEqual([
      1,
      2,
      3,
      'EBUSY',
    ]);
  });

  it('an empty range → ENOTTY (min > max for SEV; min == 1 for SEV-ES) (arch/x86/kvm/svm/sev.c: sev_asid_new())', () => {
    expect(new AsidPool(5, 4).allocate(false)).toBe('ENOTTY');
    expect(new AsidPool(1, 4).allocate(true)).toBe('ENOTTY');
  });

  it('a freed ASID is not reused until the range is exhausted (delayed reuse) (arch/x86/kvm/svm/sev.c: sev_asid_free())', () => {
    const p = new AsidPool(1, 3);
    expect(p.allocate(false)).toBe(1);
    expect(p.allocate(false)).toBe(2);
    p.free(1);
    expect(p.allocate(false)).toBe(3);
    expect(p.stats.recycles).toBe(0);
    // Exhausted: one recycle (DF_FLUSH) makes the reclaimed ASID 1 free again.
    expect(p.allocate(false)).toBe(1);
    expect(p.stats.recycles).toBe(1);
    expect(p.allocate(false)).toBe('EBUSY');
  });

  it('a recycle happens only if this range has a reclaimable ASID, and then frees every range (arch/x86/kvm/svm/sev.c: __sev_recycle_asids())', () => {
    const p = new AsidPool(3, 4);
    expect([p.allocate(true), p.allocate(true)]).toEqual([1, 2]);
    expect([p.allocate(false), p.allocate(false)]).toEqual([3, 4]);
    p.free(1); // an ES ASID waits
    expect(p.allocate(false)).toBe('EBUSY'); // nothing of the SEV range waits: no recycle
    expect(p.stats.recycles).toBe(0);
    p.free(3);
    expect(p.allocate(false)).toBe(3); // recycle: 3 and also 1 become free
    expect(p.stats.recycles).toBe(1);
    expect(p.allocate(true)).toBe(1);
    expect(p.stats.recycles).toBe(1);
  });

  it('the kernel answers EBUSY when a range is full (through KVM_SEV_INIT) (arch/x86/kvm/svm/sev.c: sev_asid_new())', () => {
    const h = new FakeHost({ cpuid: cpuidWith(3, 4) });
    const es = [h.createVm(), h.createVm()];
    for (const v of es) v.cmd(SEV_CMD.ES_INIT);
    expect(tryKvm(() => h.createVm().cmd(SEV_CMD.ES_INIT))).toBe('EBUSY');
    const sev = [h.createVm(), h.createVm()];
    for (const v of sev) v.cmd(SEV_CMD.INIT);
    expect(tryKvm(() => h.createVm().cmd(SEV_CMD.INIT))).toBe('EBUSY');
    expect(es.map((v) => v.sev.asid)).toEqual([1, 2]);
    expect(sev.map((v) => v.sev.asid)).toEqual([3, 4]);
    // Closing one VM makes room only after a DF_FLUSH recycle, which the next INIT triggers.
    sev[0]!.close();
    const again = h.createVm();
    again.cmd(SEV_CMD.INIT);
    expect(again.sev.asid).toBe(3);
    expect(h.platform.firmware.issued).toContain('DF_FLUSH');
  });

  it('every ASID is back (owned none) after all VMs are closed; pools refill (arch/x86/kvm/svm/sev.c: sev_asid_free())', () => {
    const h = new FakeHost({ cpuid: cpuidWith(3, 5) });
    for (let round = 0; round < 4; round++) {
      const vms = [h.createVm(), h.createVm(), h.createVm(), h.createVm(), h.createVm()];
      vms[0]!.cmd(SEV_CMD.ES_INIT);
      vms[1]!.cmd(SEV_CMD.ES_INIT);
      vms[2]!.cmd(SEV_CMD.INIT);
      vms[3]!.cmd(SEV_CMD.INIT);
      vms[4]!.cmd(SEV_CMD.INIT);
      expect(h.platform.asids.ownedAsids()).toEqual([1, 2, 3, 4, 5]);
      for (const v of vms) v.close();
      expect(h.platform.leakReport()).toMatchObject({ ownedAsids: [], liveVms: 0 });
    }
  });

  it('property — allocate/free sequences never hand out an owned ASID and stay inside the range (arch/x86/kvm/svm/sev.c: sev_asid_new())', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 0, max: 6 }),
        fc.array(fc.tuple(fc.boolean(), fc.boolean(), fc.nat(10)), { maxLength: 60 }),
        (min, extra, ops) => {
          const max = min + extra;
          const p = new AsidPool(min, max);
          const held = new Set<number>();
          for (const [alloc, es, pick] of ops) {
            if (alloc || held.size === 0) {
              const r = p.allocate(es);
              const range = p.range(es);
              if (typeof r === 'number') {
                expect(held.has(r)).toBe(false);
                expect(r >= range.first && r <= range.last).toBe(true);
                held.add(r);
              } else if (r === 'EBUSY') {
                const inRange = [...held].filter((a) => a >= range.first && a <= range.last).length;
                expect(inRange).toBe(range.last - range.first + 1);
              } else expect(range.first > range.last).toBe(true);
            } else {
              const a = [...held][pick % held.size]!;
              held.delete(a);
              p.free(a);
            }
          }
          expect(p.ownedAsids().sort((a, b) => a - b)).toEqual([...held].sort((a, b) => a - b));
        },
      ),
      { numRuns: 300 },
    );
  });
});
