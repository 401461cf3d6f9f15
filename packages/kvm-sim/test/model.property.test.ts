// Model-based property test: random sequences of VM / vCPU / memslot / guest_memfd / close
// operations against a small reference model of the kernel's rules; every result's errno must match,
// and closing everything must leave nothing allocated.

import { type Errno, tryKvm, type Vm } from '@kvmtest/kvm';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createSimKvm, simStats } from '../src/index.js';

const MAX_VCPUS = 3;
const MAX_ID = 6;
const SLOTS = 4;

interface ModelVm {
  vm: Vm;
  open: boolean;
  vcpuIds: Set<number>;
  /** slot id -> [first page, page count] */
  slots: Map<number, [number, number]>;
  sw: boolean;
}

type Op =
  | { kind: 'createVm'; sw: boolean }
  | { kind: 'closeVm'; vm: number }
  | { kind: 'createVcpu'; vm: number; id: number }
  | { kind: 'setSlot'; vm: number; slot: number; page: number; pages: number }
  | { kind: 'deleteSlot'; vm: number; slot: number }
  | { kind: 'setAttr'; vm: number; page: number; pages: number; private: boolean };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('createVm' as const), sw: fc.boolean() }),
  fc.record({ kind: fc.constant('closeVm' as const), vm: fc.nat(4) }),
  fc.record({
    kind: fc.constant('createVcpu' as const),
    vm: fc.nat(4),
    id: fc.integer({ min: -1, max: MAX_ID + 1 }),
  }),
  fc.record({
    kind: fc.constant('setSlot' as const),
    vm: fc.nat(4),
    slot: fc.nat(SLOTS),
    page: fc.nat(12),
    pages: fc.integer({ min: 1, max: 4 }),
  }),
  fc.record({ kind: fc.constant('deleteSlot' as const), vm: fc.nat(4), slot: fc.nat(SLOTS) }),
  fc.record({
    kind: fc.constant('setAttr' as const),
    vm: fc.nat(4),
    page: fc.nat(12),
    pages: fc.nat(3),
    private: fc.boolean(),
  }),
);

function expected(m: ModelVm | undefined, op: Op): Errno | undefined {
  if (op.kind === 'createVm') return undefined;
  if (m === undefined) return undefined; // no such VM: the step is skipped
  if (!m.open) return 'EBADF';
  switch (op.kind) {
    case 'closeVm':
      return undefined;
    case 'createVcpu':
      if (op.id < 0 || op.id >= MAX_ID) return 'EINVAL';
      if (m.vcpuIds.size >= MAX_VCPUS) return 'EINVAL';
      return m.vcpuIds.has(op.id) ? 'EEXIST' : undefined;
    case 'setSlot': {
      if (op.slot >= SLOTS) return 'EINVAL';
      const old = m.slots.get(op.slot);
      if (old !== undefined && old[1] !== op.pages) return 'EINVAL';
      if (old !== undefined && old[0] === op.page) return undefined; // no change
      for (const [id, [p, n]] of m.slots)
        if (id !== op.slot && op.page < p + n && p < op.page + op.pages) return 'EEXIST';
      return undefined;
    }
    case 'deleteSlot':
      return op.slot >= SLOTS || !m.slots.has(op.slot) ? 'EINVAL' : undefined;
    case 'setAttr':
      if (op.pages === 0) return 'EINVAL';
      return op.private && !m.sw ? 'EINVAL' : undefined;
  }
}

/** Each slot keeps its own backing so "same userspace" holds across moves. */
const backings = new Map<string, Uint8Array>();
function backing(vmFd: number, slot: number, pages: number): Uint8Array {
  const k = `${vmFd}/${slot}/${pages}`;
  let b = backings.get(k);
  if (b === undefined) {
    b = new Uint8Array(pages * 4096);
    backings.set(k, b);
  }
  return b;
}

describe('the kernel model against a reference model of its rules', () => {
  it('gives the errno the rules predict for every operation, and frees everything on close', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 60 }), (ops) => {
        backings.clear();
        const kvm = createSimKvm({ maxVcpus: MAX_VCPUS, maxVcpuId: MAX_ID, memslotsPerAddressSpace: SLOTS });
        const vms: ModelVm[] = [];
        for (const op of ops) {
          const m = op.kind === 'createVm' ? undefined : vms[op.vm];
          if (op.kind !== 'createVm' && m === undefined) continue;
          const want = expected(m, op);
          let got: Errno | undefined;
          switch (op.kind) {
            case 'createVm': {
              const vm = kvm.createVm(op.sw ? 'sw-protected' : 'default');
              vms.push({ vm, open: true, vcpuIds: new Set(), slots: new Map(), sw: op.sw });
              continue;
            }
            case 'closeVm':
              got = tryKvm(() => m!.vm.close());
              if (want === undefined) m!.open = false;
              break;
            case 'createVcpu':
              got = tryKvm(() => m!.vm.createVcpu(op.id));
              if (got === undefined) m!.vcpuIds.add(op.id);
              break;
            case 'setSlot':
              got = tryKvm(() =>
                m!.vm.setUserMemoryRegion({
                  slot: op.slot,
                  flags: 0,
                  guestPhysAddr: BigInt(op.page) * 4096n,
                  memorySize: BigInt(op.pages) * 4096n,
                  userspace: backing(m!.vm.fd, op.slot, op.pages),
                }),
              );
              if (got === undefined) m!.slots.set(op.slot, [op.page, op.pages]);
              break;
            case 'deleteSlot':
              got = tryKvm(() =>
                m!.vm.setUserMemoryRegion({
                  slot: op.slot,
                  flags: 0,
                  guestPhysAddr: 0n,
                  memorySize: 0n,
                  userspace: undefined,
                }),
              );
              if (got === undefined) m!.slots.delete(op.slot);
              break;
            case 'setAttr':
              got = tryKvm(() =>
                m!.vm.setMemoryAttributes({
                  address: BigInt(op.page) * 4096n,
                  size: BigInt(op.pages) * 4096n,
                  attributes: op.private ? 8n : 0n,
                }),
              );
              break;
          }
          expect(got, JSON.stringify(op)).toBe(want);
        }
        const live = vms.filter((v) => v.open);
        const stats = simStats(kvm);
        expect(stats.liveVms).toBe(live.length);
        expect(stats.liveVcpus).toBe(live.reduce((n, v) => n + v.vcpuIds.size, 0));
        expect(stats.memslots).toBe(live.reduce((n, v) => n + v.slots.size, 0));
        for (const v of live) v.vm.close();
        expect(simStats(kvm)).toEqual({
          openFds: 1,
          liveVms: 0,
          liveVcpus: 0,
          gmemFiles: 0,
          gmemBytes: 0,
          memslots: 0,
        });
      }),
      { numRuns: 300 },
    );
  });
});
