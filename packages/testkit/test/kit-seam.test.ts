// The kit's per-type seam: one table per launch flow, chosen from coco's traits; a TestVm whose
// state tests can read but not write; contract VMs the kit did not make are refused unless adopted.
import { VM_TYPE_TRAITS, VM_TYPES } from '@kvmtest/coco';
import { createSimKvm } from '@kvmtest/kvm-sim';
import { expect, test } from 'vitest';
import { KIT_TABLES, kitOpsFor } from '../src/internal/kit/registry.js';
import {
  adoptVm,
  sevInit,
  TestkitError,
  trySevInit,
  vmCreate,
  vmCreateBarebones,
  vmLaunch,
} from '../src/index.js';

test('every VM type gets the table of its launch flow, and every flow has a table', () => {
  for (const t of VM_TYPES) expect(kitOpsFor(t), t).toBe(KIT_TABLES[VM_TYPE_TRAITS[t].launchFlow]);
  expect(Object.keys(KIT_TABLES).sort()).toEqual(['none', 'sev', 'snp', 'tdx']);
  expect(kitOpsFor('sev-es').name).toBe('sev');
  expect(kitOpsFor('sw-protected').name).toBe('default');
});

test('a kit VM shows its launch state and policy read-only', () => {
  const kvm = createSimKvm({ host: 'mainline-amd' });
  using vm = vmCreate('sev-es', { kvm });
  expect(vm.policy).toBe(VM_TYPE_TRAITS['sev-es'].defaultPolicy);
  expect(vm.launchStage).toBe('none');
  expect(() => {
    (vm as unknown as { launchStage: string }).launchStage = 'finished';
  }).toThrow(TypeError);
  expect(() => {
    (vm as unknown as { policy: number }).policy = 0;
  }).toThrow(TypeError);
  vm.addVcpu(0);
  vmLaunch(vm);
  expect(vm.launchStage).toBe('finished');
  expect(vm.ptProtected).toBe(true);
});

test('a contract VM the kit did not make is refused by name, and accepted once adopted', () => {
  const kvm = createSimKvm({ host: 'mainline-amd' });
  using raw = kvm.createVm('default');
  let err: unknown;
  try {
    sevInit(raw);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(TestkitError);
  expect((err as TestkitError).code).toBe('NOT_A_KIT_VM');
  expect((err as Error).message).toMatch(/was not made by the kit.*adoptVm/);
  const vm = adoptVm(raw);
  expect(adoptVm(raw)).toBe(vm);
  expect(vm.barebones).toBe(true);
  sevInit(raw);
  // sev_guest_init(): a second legacy INIT finds the VM already active.
  expect(trySevInit(raw)).toBe('EINVAL');
});

test('adoptVm refuses what is not a contract VM, and returns the kit VM of one the kit made', () => {
  expect(() => adoptVm({} as never)).toThrow(TypeError);
  using vm = vmCreateBarebones('default', { kvm: createSimKvm() });
  expect(adoptVm(vm.raw)).toBe(vm);
});
