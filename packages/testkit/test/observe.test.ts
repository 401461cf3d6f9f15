import { CAP } from '@kvmtest/kvm';
import { describe, expect, test } from 'vitest';
import {
  KsftSkip,
  backendFromEnv,
  backendNamed,
  defineGuest,
  firstDifference,
  guestDone,
  kvmFromEnv,
  observationValue,
  observe,
  observeErrno,
  observeKvm,
  parseBackendSpec,
  runUcall,
  simHostFromEnv,
  simHostLike,
  startObservations,
  takeObservations,
  vmCreateWithOneVcpu,
} from '../src/index.js';

describe('observations', () => {
  test('values are canonical and bigint-safe: sorted keys, 12n, bytes as hex', () => {
    expect(observationValue({ b: 1n, a: [1, 'x', null, undefined, true] })).toBe(
      '{"a":[1,"x",null,undefined,true],"b":1n}',
    );
    expect(observationValue(new Uint8Array([0, 0xab]))).toBe('bytes:00ab');
    expect(observationValue(-0)).toBe('0');
    expect(observationValue(1n)).not.toBe(observationValue(1));
    expect(() => observationValue(new Map() as never)).toThrow(/Map object is not an observable value/);
  });

  test('observe records only while a recording runs, in call order', () => {
    observe('ignored', 1);
    startObservations();
    expect(observe('a', 5n)).toBe(5n);
    expect(observeErrno('b', () => kvmFromEnv({}).createVm(99))).toBe('EINVAL');
    observeErrno('c', () => {});
    expect(takeObservations()).toEqual([
      { name: 'a', value: '5n' },
      { name: 'b', value: '"EINVAL"' },
      { name: 'c', value: '"ok"' },
    ]);
    expect(takeObservations()).toEqual([]);
  });

  test('firstDifference names the first differing observation, or a side that ended early', () => {
    const a = [
      { name: 'x', value: '1' },
      { name: 'y', value: '2' },
    ];
    expect(firstDifference(a, a)).toBeUndefined();
    expect(firstDifference(a, [a[0]!, { name: 'y', value: '3' }])).toEqual({
      index: 1,
      name: 'y',
      left: '2',
      right: '3',
    });
    expect(firstDifference(a, [a[0]!])).toEqual({ index: 1, name: 'y', left: '2', right: undefined });
    expect(firstDifference([a[0]!], [{ name: 'z', value: '1' }])).toEqual({
      index: 0,
      name: 'x',
      left: 'x = 1',
      right: 'z = 1',
    });
  });

  test('observeKvm records each errno a VM or vCPU call fails with and each exit, keeping object identity', async () => {
    const kvm = observeKvm(kvmFromEnv({}));
    const guest = defineGuest(async (g) => {
      await g.hlt();
      await guestDone(g);
    });
    startObservations();
    const vm = vmCreateWithOneVcpu(guest, 'default', { kvm });
    try {
      expect(() => vm.raw.createVcpu(0)).toThrow(/EEXIST/);
      const vcpu = vm.vcpus[0]!;
      const exit = await vcpu.run();
      expect(exit.reason).toBe('hlt');
      await runUcall(vcpu);
    } finally {
      vm.close();
    }
    const obs = takeObservations();
    expect(obs[0]).toEqual({ name: 'errno vm.createVcpu', value: '"EEXIST"' });
    expect(obs[1]).toEqual({ name: 'exit', value: '{"reason":"hlt"}' });
    expect(obs[2]).toEqual({
      name: 'exit',
      value: '{"count":1,"direction":"out","port":4096,"reason":"io","size":4}',
    });
  });
});

test('observeKvm on objects that refuse wrapping records that automatic observations are missing', () => {
  const kvm = kvmFromEnv({});
  const frozenVm = kvm.createVm();
  Object.defineProperty(frozenVm, 'setUserMemoryRegion', {
    value: frozenVm.setUserMemoryRegion,
    writable: false,
  });
  const fake = Object.create(kvm, { createVm: { value: () => frozenVm, writable: true } }) as typeof kvm;
  observeKvm(fake);
  startObservations();
  fake.createVm();
  const obs = takeObservations();
  expect(obs[0]).toEqual({
    name: 'automatic observations',
    value: '"unavailable: vm.setUserMemoryRegion of SimVm cannot be wrapped"',
  });
  frozenVm.close();
});

describe('backend specs', () => {
  test('sim, sim:<preset>, linux and auto parse; anything else names the known ones', () => {
    expect(parseBackendSpec('sim:pvm')).toEqual({ kind: 'sim', host: 'pvm' });
    expect(parseBackendSpec(' auto ')).toEqual({ kind: 'auto' });
    expect(() => parseBackendSpec('sim:nosuch')).toThrow(
      /names no backend \(known: sim, linux\); also auto, and sim:<preset> with preset mainline-amd, mainline-intel, pvm/,
    );
  });

  test('sim:<preset> and KVMTEST_SIM_HOST shape the simulator, and the choice is named', () => {
    const pvm = backendNamed('sim:pvm');
    expect(pvm.name).toBe('sim:pvm');
    expect(pvm.kvm.checkExtension(CAP.VM_TYPES)).toBe(1);
    const env = backendFromEnv({ KVMTEST_BACKEND: 'sim', KVMTEST_SIM_HOST: 'mainline-intel' });
    expect(env.name).toBe('sim:mainline-intel');
    expect(env.kvm.checkExtension(CAP.VM_TYPES)).toBe(0b10_0001);
    const json = backendFromEnv({ KVMTEST_SIM_HOST: '{"host":"pvm","maxVcpus":8,"maxVcpuId":32}' });
    expect(json.kvm.checkExtension(CAP.MAX_VCPUS)).toBe(8);
    expect(() => simHostFromEnv({ KVMTEST_SIM_HOST: 'qemu' })).toThrow(/names no simulated host/);
  });

  test('linux opens or is a skip naming why; auto takes it when it opens, else sim with the reason', () => {
    let linux: ReturnType<typeof backendNamed> | undefined;
    let err: unknown;
    try {
      linux = backendNamed('linux');
    } catch (e) {
      err = e;
    }
    const auto = backendNamed('auto', {});
    if (linux !== undefined) {
      expect(linux.kvm.backend).toBe('linux');
      expect(auto).toMatchObject({ name: 'linux', reason: 'auto: /dev/kvm opened' });
    } else {
      expect(err).toBeInstanceOf(KsftSkip);
      expect(auto.name).toBe('sim');
      expect(auto.reason).toBe(`auto: linux unavailable (${(err as KsftSkip).reason})`);
    }
  });

  test('simHostLike gives the sim config answering like a Kvm', () => {
    const m = simHostLike(backendNamed('sim:mainline-amd').kvm);
    expect(m.preset).toBe('mainline-amd');
    expect(m.notes).toEqual([]);
  });
});
