// A VM type the code base has never heard of, added the way docs/architecture.md ("How to add a VM
// type") says: a traits row in coco, a table in the simulator's arch registry, and the kit table of
// its launch flow. Nothing else changes — ucall and the kit read the traits and never compare type
// names — so the new type is created, gets a vCPU and reports through ucall like any other.
// Both registrations are test-only (vi.mock); real types are added in the source tables.
import { UCALL, transportFor } from '@kvmtest/ucall';
import { expect, test, vi } from 'vitest';
import { createSimKvm } from '@kvmtest/kvm-sim';
import {
  defineGuest,
  guestDone,
  guestSync,
  runUcall,
  supportedVmTypes,
  vmCreateWithOneVcpu,
  writeGuestGlobal,
} from '../src/index.js';

const MADE_UP = 'made-up' as never;

// 1. coco: the traits row (here: a private-memory type without a launch, KVM_CREATE_VM number 24).
vi.mock('@kvmtest/coco', async (importOriginal) => {
  const coco = await importOriginal<typeof import('@kvmtest/coco')>();
  const name = 'made-up';
  const numbers: Record<string, number> = { ...coco.VM_TYPE_NUMBER, [name]: 24 };
  const types = [...coco.VM_TYPES, name];
  const isVmType = (v: unknown) => typeof v === 'string' && Object.hasOwn(numbers, v);
  return {
    ...coco,
    VM_TYPE_NUMBER: numbers,
    VM_TYPES: types,
    VM_TYPE_TRAITS: { ...coco.VM_TYPE_TRAITS, [name]: { ...coco.VM_TYPE_TRAITS['sw-protected'] } },
    isVmType,
    vmTypeFromNumber: (n: number) => types.find((t) => numbers[t] === n),
    vmShape: (shape: { type?: string; mode?: string } = {}) =>
      shape.type === name
        ? Object.freeze({ type: name, mode: shape.mode ?? '4-level' })
        : coco.vmShape(shape as never),
  };
});

// 2. kvm-sim: the type's arch table, through the simulator's one registry (here: sw-protected's).
vi.mock('../../kvm-sim/src/internal/arch-registry.ts', async (importOriginal) => {
  const d = await importOriginal<typeof import('../../kvm-sim/src/internal/arch-registry.js')>();
  return {
    ...d,
    hostArchOps: (cfg: Parameters<typeof d.hostArchOps>[0]) =>
      new Map(
        cfg.vmTypes.map((t) => [t, d.selectArchOps((t as string) === 'made-up' ? 'sw-protected' : t, cfg)]),
      ),
  };
});

// 3. testkit: its launch flow ('none') already has a kit table (kit/default.ts); nothing to add.

const guest = defineGuest(
  async (g) => {
    await guestSync(g, g.readU64(g.global('expected')));
    await guestDone(g);
  },
  { globals: { expected: 0n } },
);

test('a made-up VM type is created, runs a guest and reports through ucall from its traits alone', async () => {
  const kvm = createSimKvm();
  expect(supportedVmTypes(kvm)).toContain(MADE_UP);
  expect(transportFor(MADE_UP)).toBe('pio');
  using vm = vmCreateWithOneVcpu(guest, MADE_UP, { kvm });
  expect(vm.type).toBe(MADE_UP);
  expect(vm.raw.type).toBe(MADE_UP);
  expect(vm.traits.privateMemoryInGuestMemfd).toBe(true);
  expect(vm.launchPending).toBe(false);
  writeGuestGlobal(vm, 'expected', 0x1234n);
  const vcpu = vm.vcpus[0]!;
  const sync = await runUcall(vcpu);
  expect(sync.cmd).toBe(UCALL.SYNC);
  expect(sync.args[0]).toBe(0x1234n);
  expect((await runUcall(vcpu)).cmd).toBe(UCALL.DONE);
});
