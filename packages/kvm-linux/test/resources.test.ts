// After VMs with memory and vCPUs are created, run and closed, the process's descriptors and
// mappings come back to where they were: fds at close, mmap'd memory and kvm_run once the GC has
// collected the last views (see src/internal/memory.ts).

import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { openLinuxKvm } from '../src/index.js';
import { mappingStats } from '../src/internal/memory.js';
import { kvmAvailable, realModeGuest } from './helpers.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Descriptors of KVM objects (/dev/kvm, VM, vCPU, stats…): the test runner's own come and go. */
const kvmFds = () =>
  readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return /kvm/.test(readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      return false; // closed since the listing
    }
  }).length;
const mapLines = () => readFileSync('/proc/self/maps', 'utf8').trim().split('\n');
/** kvm_run mappings of vCPU files. */
const kvmMaps = () => mapLines().filter((l) => l.includes('kvm-vcpu')).length;
/** Lines of /proc/self/maps that overlap one of the ranges this package mapped recently. */
function oursInMaps(): number {
  return mapLines().filter((l) => {
    const [a, b] = l
      .split(' ')[0]!
      .split('-')
      .map((x) => BigInt(`0x${x}`)) as [bigint, bigint];
    return mappingStats.recent.some(([s, e]) => a < e && s < b);
  }).length;
}

/**
 * Collects garbage until `settled()` holds (finalizers run asynchronously after a collection, later
 * on a loaded machine), at most 200 rounds; the caller asserts what it waited for.
 */
async function collect(settled: () => boolean = () => false): Promise<void> {
  for (let i = 0; i < 200; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 10));
    if (i >= 5 && settled()) return;
  }
}

async function workload(probe?: () => void): Promise<void> {
  const kvm = openLinuxKvm();
  for (let n = 0; n < 3; n++) {
    const g = realModeGuest([0xb0, 0x01, 0xe6, 0x20, 0xf4], { kvm });
    g.vm.createVcpu(1);
    const extra = kvm.allocateUserMemory(0x4000);
    g.vm.setUserMemoryRegion({
      slot: 1,
      flags: 0,
      guestPhysAddr: 0x100000n,
      memorySize: 0x4000n,
      userspace: extra.bytes,
    });
    expect((await g.vcpu.run()).reason).toBe('io');
    probe?.();
    extra.release();
    if (n === 1) g.vm.close(); // the rest: closed with the Kvm
  }
  kvm.close();
}

describe.skipIf(!kvmAvailable)('descriptors and mappings come back', () => {
  it('after VMs with memslots and vCPUs are closed and collected', async () => {
    await workload(); // warm-up: koffi, the watchdog worker and V8 make their lasting mappings once
    await collect();
    const kfds = kvmFds();
    const mapped0 = mappingStats.mapped - mappingStats.unmapped;
    mappingStats.recent.length = 0;
    let during = 0;
    await workload(() => {
      during = Math.max(during, oursInMaps());
    });
    expect(during).toBeGreaterThan(0);
    // Descriptors: back at close, before any GC. Counted among KVM's own (/dev/kvm, VM, vCPU, stats):
    // the test runner opens and closes files of its own meanwhile.
    expect(kvmFds()).toBe(kfds);
    await collect(
      () => mappingStats.mapped - mappingStats.unmapped === mapped0 && kvmMaps() === 0 && oursInMaps() === 0,
    );
    expect(mappingStats.mapped - mappingStats.unmapped).toBe(mapped0);
    expect(kvmMaps()).toBe(0);
    // Nothing is mapped over the ranges we mapped any more (in principle another mmap could land
    // on a freed range; with these small sizes V8 and malloc take their memory elsewhere).
    expect(oursInMaps()).toBe(0);
  });
});
