// Model-based property test: random sequences of TD flow steps (Documentation/virt/kvm/x86/intel-tdx.rst creation flow) against a
// small reference model of the rules; every step's errno must match, and closing leaks nothing.

import { TDCALL_LEAF, encodeTdxIoRequest } from '@kvmtest/coco';
import {
  CAP,
  type Errno,
  isKvmError,
  MEMORY_ATTRIBUTE,
  TDX_CMD,
  tryKvm,
  type Vcpu,
  type Vm,
} from '@kvmtest/kvm';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createSimKvm, simStats } from '../../index.js';
import type { SimKvm } from '../kvm.js';
import {
  addPrivateSlot,
  createTdVm,
  finalize,
  initMemRegion,
  initVcpu,
  tdVcpuAdd,
  tdxCmd,
} from './harness.test-support.js';
import { keyIdPool } from './state.js';
import { gpawCpuid } from './harness.test-support.js';

type Step =
  | { k: 'caps' }
  | { k: 'split' }
  | { k: 'initVm'; gpaw: 48 | 50 }
  | { k: 'createVcpu'; id: number }
  | { k: 'initVcpu'; id: number }
  | { k: 'initMem'; id: number; page: number }
  | { k: 'finalize' }
  | { k: 'run'; id: number };

const PAGES = 8;
/** Pages 0..5 carry the PRIVATE attribute; 6 and 7 do not. */
const PRIVATE_PAGES = 6;

const id = fc.integer({ min: 0, max: 1 });
const step: fc.Arbitrary<Step> = fc.oneof(
  { arbitrary: fc.constant<Step>({ k: 'caps' }), weight: 1 },
  { arbitrary: fc.constant<Step>({ k: 'split' }), weight: 1 },
  {
    arbitrary: fc.constantFrom(48, 48, 48, 50).map<Step>((gpaw) => ({ k: 'initVm', gpaw: gpaw as 48 | 50 })),
    weight: 2,
  },
  { arbitrary: id.map<Step>((i) => ({ k: 'createVcpu', id: i })), weight: 3 },
  { arbitrary: id.map<Step>((i) => ({ k: 'initVcpu', id: i })), weight: 3 },
  {
    arbitrary: fc
      .record({ id, page: fc.integer({ min: 0, max: PAGES - 1 }) })
      .map<Step>((r) => ({ k: 'initMem', ...r })),
    weight: 5,
  },
  { arbitrary: fc.constant<Step>({ k: 'finalize' }), weight: 2 },
  { arbitrary: id.map<Step>((i) => ({ k: 'run', id: i })), weight: 2 },
);

/** Most sequences start from a canonical prefix, so the later states are reached often. */
const PREFIXES: Step[][] = [
  [],
  [{ k: 'split' }, { k: 'initVm', gpaw: 48 }, { k: 'createVcpu', id: 0 }, { k: 'initVcpu', id: 0 }],
  [
    { k: 'split' },
    { k: 'initVm', gpaw: 48 },
    { k: 'createVcpu', id: 0 },
    { k: 'createVcpu', id: 1 },
    { k: 'initVcpu', id: 0 },
    { k: 'finalize' },
  ],
];
const flow = fc
  .tuple(fc.constantFrom(...PREFIXES), fc.array(step, { maxLength: 30 }))
  .map(([prefix, rest]) => [...prefix, ...rest]);

/** The reference model: the rules of Documentation/virt/kvm/x86/intel-tdx.rst and nothing else. */
class Model {
  state: 'U' | 'I' | 'R' = 'U';
  split = false;
  readonly vcpus = new Map<number, { init: boolean }>();
  readonly added = new Set<number>();

  expect(s: Step): Errno | undefined | 'skip' {
    switch (s.k) {
      case 'caps':
        return undefined;
      case 'split':
        // x86.c KVM_CAP_SPLIT_IRQCHIP: an irqchip exists or vCPUs were created -> EEXIST.
        if (this.split || this.vcpus.size > 0) return 'EEXIST';
        this.split = true;
        return undefined;
      case 'initVm':
        if (this.state !== 'U') return 'EINVAL';
        if (s.gpaw !== 48) return 'EINVAL';
        this.state = 'I';
        return undefined;
      case 'createVcpu':
        if (this.state !== 'I') return 'EIO';
        if (!this.split) return 'EINVAL';
        if (this.vcpus.has(s.id)) return 'EEXIST';
        this.vcpus.set(s.id, { init: false });
        return undefined;
      case 'initVcpu': {
        const v = this.vcpus.get(s.id);
        if (v === undefined) return 'skip';
        if (this.state === 'R' || v.init) return 'EINVAL';
        v.init = true;
        return undefined;
      }
      case 'initMem': {
        const v = this.vcpus.get(s.id);
        if (v === undefined) return 'skip';
        if (this.state === 'R' || !v.init) return 'EINVAL';
        if (s.page >= PRIVATE_PAGES) return 'EINVAL';
        if (this.added.has(s.page)) return 'EEXIST';
        this.added.add(s.page);
        return undefined;
      }
      case 'finalize':
        if (this.state !== 'I') return 'EINVAL';
        this.state = 'R';
        return undefined;
      case 'run': {
        const v = this.vcpus.get(s.id);
        if (v === undefined) return 'skip';
        if (!v.init || this.state !== 'R') return 'EINVAL';
        return undefined;
      }
    }
  }
}

async function apply(vm: Vm, vcpus: Map<number, Vcpu>, s: Step): Promise<Errno | undefined | 'skip'> {
  const v = 'id' in s ? vcpus.get(s.id) : undefined;
  switch (s.k) {
    case 'caps':
      return tryKvm(() => vm.memEncryptOp(tdxCmd(TDX_CMD.CAPABILITIES, { nent: 64 })));
    case 'split':
      return tryKvm(() => vm.enableCap(CAP.SPLIT_IRQCHIP, [24]));
    case 'initVm':
      return tryKvm(() =>
        vm.memEncryptOp(tdxCmd(TDX_CMD.INIT_VM, { attributes: 0n, xfam: 0n, cpuid: gpawCpuid(s.gpaw) })),
      );
    case 'createVcpu':
      return tryKvm(() => {
        const c = tdVcpuAdd(vm, s.id);
        c.setEntry(async (g) => {
          await g.tdcall(
            BigInt(TDCALL_LEAF.VP_VMCALL),
            encodeTdxIoRequest({ port: 0x1000, size: 4, write: true, value: 1n }),
          );
        });
        vcpus.set(s.id, c);
      });
    case 'initVcpu':
      return v === undefined ? 'skip' : tryKvm(() => initVcpu(v));
    case 'initMem': {
      if (v === undefined) return 'skip';
      const src = new Uint8Array(4096).fill(s.page + 1);
      return tryKvm(() => initMemRegion(v, BigInt(s.page) * 4096n, src));
    }
    case 'finalize':
      return tryKvm(() => finalize(vm));
    case 'run':
      if (v === undefined) return 'skip';
      try {
        await v.run();
        return undefined;
      } catch (e) {
        if (isKvmError(e)) return e.code;
        throw e;
      }
  }
}

describe('TD flow against a reference model (arch/x86/kvm/vmx/tdx.c)', () => {
  it('every step of a random TD flow fails or succeeds as the rules say, and closing the TD leaks nothing', async () => {
    await fc.assert(
      fc.asyncProperty(flow, async (steps) => {
        const kvm = createSimKvm();
        const vm = createTdVm(kvm);
        const shared = new Uint8Array(PAGES * 4096);
        const gmem = addPrivateSlot(vm, 0, 0n, shared);
        vm.setMemoryAttributes({
          address: 0n,
          size: BigInt(PRIVATE_PAGES * 4096),
          attributes: MEMORY_ATTRIBUTE.PRIVATE,
        });
        const model = new Model();
        const vcpus = new Map<number, Vcpu>();
        for (const s of steps) {
          const want = model.expect(s);
          const got = await apply(vm, vcpus, s);
          expect({ step: s, errno: got }).toEqual({ step: s, errno: want });
        }
        // Private contents never show through the slot's userspace memory.
        expect(shared.every((b) => b === 0)).toBe(true);
        vm.close();
        kvm.closeFd(gmem);
        expect(simStats(kvm)).toMatchObject({
          openFds: 1,
          liveVms: 0,
          liveVcpus: 0,
          gmemFiles: 0,
          gmemBytes: 0,
        });
        expect(keyIdPool(kvm as SimKvm).inUse.size).toBe(0);
      }),
      { numRuns: 300, seed: 0x7d3 },
    );
  });
});
