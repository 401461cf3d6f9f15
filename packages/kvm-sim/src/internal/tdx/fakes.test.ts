// Rules the real flow cannot reach (a vCPU cannot exist before INIT_VM), checked through small
// fakes of the seam views (arch/x86/kvm/vmx/tdx.c: tdx_vm_ioctl()).

import { TDX_CMD, tryKvm } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import type { ArchKvm, ArchVcpu, ArchVm } from '../arch/ops.js';
import { resolveConfig } from '../config.js';
import { gpawCpuid, tdxCmd } from './harness.test-support.js';
import { tdxArchOps } from './ops.js';
import { tdxReport } from './report.js';

function fakeVm(createdVcpus: number, splitIrqchip?: boolean): ArchVm {
  const states = new Map<string, unknown>();
  const kvm: ArchKvm = {
    config: resolveConfig(),
    fdKind: () => undefined,
    vmByFd: () => undefined,
    typeAvailable: () => true,
    hostState: <T>(key: string, init: () => T) => {
      if (!states.has(key)) states.set(key, init());
      return states.get(key) as T;
    },
  };
  const vm = {
    kvm,
    type: 'tdx',
    typeNumber: 5,
    fd: 3,
    arch: undefined,
    hasPrivateMem: false,
    hasProtectedState: false,
    createdVcpus,
    vcpus: [],
    dead: false,
    markDead() {},
    hypercallExitEnabled: () => false,
    memslots: () => [],
    memslotAt: () => undefined,
    hostPtrTarget: () => undefined,
    memoryAttributes: () => 0n,
    flushTlbs() {},
    ...(splitIrqchip === undefined ? {} : { hasSplitIrqchip: splitIrqchip }),
  } satisfies ArchVm & { hasSplitIrqchip?: boolean };
  return vm;
}

const ops = tdxArchOps(resolveConfig());
const initVmCmd = () => tdxCmd(TDX_CMD.INIT_VM, { attributes: 0n, xfam: 0n, cpuid: gpawCpuid(48) });

describe('TDX rules behind the seam (fakes)', () => {
  it('vmInit marks the VM as having private memory and protected state (tdx_vm_init)', () => {
    const vm = fakeVm(0);
    ops.vmInit(vm);
    expect([vm.hasPrivateMem, vm.hasProtectedState]).toEqual([true, true]);
    expect(tdxReport(vm)?.state).toBe('uninitialized');
  });

  it('INIT_VM with vCPUs already created (creation in flight) is EBUSY, and the TD stays UNINITIALIZED (setup_tdparams)', () => {
    const vm = fakeVm(1);
    ops.vmInit(vm);
    expect(tryKvm(() => ops.memEncryptOp!(vm, initVmCmd()))).toBe('EBUSY');
    expect(tdxReport(vm)?.state).toBe('uninitialized');
  });

  it('a vCPU-scope command on a TD without an HKID is EINVAL (tdx_vcpu_ioctl)', () => {
    const vm = fakeVm(0);
    ops.vmInit(vm);
    const vcpu: ArchVcpu = { vm, id: 0, fd: 4, arch: undefined };
    ops.vcpuCreated!(vcpu);
    expect(tryKvm(() => ops.vcpuMemEncryptOp!(vcpu, tdxCmd(TDX_CMD.INIT_VCPU)))).toBe('EINVAL');
  });

  it('vcpuPrecreate applies the split-irqchip rule only when the core says whether one exists', () => {
    const known = fakeVm(0, false);
    ops.vmInit(known);
    ops.memEncryptOp!(known, initVmCmd());
    expect(tryKvm(() => ops.vcpuPrecreate!(known, 0))).toBe('EINVAL');
    const unknown = fakeVm(0);
    ops.vmInit(unknown);
    ops.memEncryptOp!(unknown, initVmCmd());
    expect(tryKvm(() => ops.vcpuPrecreate!(unknown, 0))).toBeUndefined();
  });

  it('MOVE/COPY_ENC_CONTEXT_FROM and REG/UNREG_REGION ops are absent, so the core answers EINVAL / ENOTTY (arch/x86/kvm/vmx/main.c: vt_x86_ops)', () => {
    expect(ops.vmCopyEncContextFrom).toBeUndefined();
    expect(ops.vmMoveEncContextFrom).toBeUndefined();
    expect(ops.memEncryptRegRegion).toBeUndefined();
    expect(ops.memEncryptUnregRegion).toBeUndefined();
  });

  it('the tag bit is the S-bit, GPAW − 1, once INIT_VM ran, and absent before', () => {
    const vm = fakeVm(0);
    ops.vmInit(vm);
    expect(ops.tagBit!(vm)).toBeUndefined();
    ops.memEncryptOp!(vm, initVmCmd());
    expect(ops.tagBit!(vm)).toBe(47);
  });
});
