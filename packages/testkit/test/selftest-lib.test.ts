// The selftest library helpers ports rely on: vm_mem_add, addr_gpa2hva, vcpu_args_set,
// kvm_has_device_attr, kvm_cpu_has / this_cpu_has, and one numeric type for launch policies.
import { SEV_POLICY_BIT, X86_FEATURE } from '@kvmtest/coco';
import { DEVICE_ATTR, KvmError, MEM_FLAG } from '@kvmtest/kvm';
import { UCALL } from '@kvmtest/ucall';
import { describe, expect, test } from 'vitest';
import {
  addrGpa2Hva,
  getKvm,
  guestDone,
  guestSync,
  kvmCpuHas,
  kvmHasDeviceAttr,
  runUcall,
  runUcallExpect,
  SNP_DEFAULT_POLICY,
  TestkitError,
  thisCpuHas,
  vcpuArgsSet,
  vcpuCpuidHas,
  vmCreate,
  vmCreateWithOneVcpu,
  vmMemAdd,
  vmSevCreateWithOneVcpu,
  vmSevLaunch,
  vmSnpLaunch,
} from '../src/index.js';
import { requireType } from './helpers.js';

describe('vm_mem_add: a memslot in one call', () => {
  test('adds the slot with a guest_memfd of its own, reachable through addr_gpa2hva; the fd closes with the VM', (ctx) => {
    requireType(ctx, 'sw-protected');
    const vm = vmCreate('sw-protected');
    const m = vmMemAdd(vm, { slot: 1, gpa: 0x1000_0000n, pages: 4, guestMemfd: true });
    expect(m.size).toBe(4n * 4096n);
    expect(m.hva.length).toBe(4 * 4096);
    expect(m.guestMemfd).toBeDefined();
    expect(vm.kvm.isFdOpen(m.guestMemfd!)).toBe(true);
    const p = addrGpa2Hva(vm, 0x1000_0000n + 0x1008n);
    expect(p.buffer).toBe(m.hva);
    expect(p.offset).toBe(0x1008);
    // The slot is KVM's: an overlapping one is refused as the kernel refuses it.
    expect(() => vmMemAdd(vm, { slot: 2, gpa: 0x1000_1000n, size: 4096 })).toThrow(KvmError);
    vm.close();
    expect(vm.kvm.isFdOpen(m.guestMemfd!)).toBe(false);
  });

  test('a read-only slot without guest_memfd; bad sizes are refused before any ioctl', () => {
    using vm = vmCreate('default');
    const m = vmMemAdd(vm, { slot: 3, gpa: 0x2000_0000n, size: 8192n, flags: MEM_FLAG.READONLY });
    expect(m.guestMemfd).toBeUndefined();
    expect(vm.space.memory.findRegion(0x2000_1000n)?.slot).toBe(3);
    expect(() => vmMemAdd(vm, { slot: 4, gpa: 0x3000_0000n, size: 100 })).toThrow(TestkitError);
    expect(() => vmMemAdd(vm, { slot: 4, gpa: 0x3000_0800n, size: 4096 })).toThrow(TestkitError);
    expect(() => addrGpa2Hva(vm, 0x7000_0000n)).toThrow(/not backed by any memslot/);
  });
});

test('vcpu_args_set: the guest finds its arguments in RDI, RSI, RDX, RCX, R8, R9', async () => {
  using vm = vmCreateWithOneVcpu(async (g) => {
    const r = g.regs;
    await guestSync(g, r.rdi, r.rsi, r.rdx, r.rcx, r.r8, r.r9);
    await guestDone(g);
  });
  const vcpu = vm.vcpus[0]!;
  vcpuArgsSet(vcpu, 1n, 2, 3n, 4, 5n, 0xffff_ffff_ffff_ffffn);
  const uc = await runUcall(vcpu);
  expect(uc.args.slice(0, 6)).toEqual([1n, 2n, 3n, 4n, 5n, 0xffff_ffff_ffff_ffffn]);
  expect(() => vcpuArgsSet(vcpu, 1, 2, 3, 4, 5, 6, 7)).toThrow(TestkitError);
  expect(() => vcpuArgsSet(vcpu, -1)).toThrow(TestkitError);
});

test('kvm_has_device_attr: true for an attribute KVM answers, false for ENXIO', (ctx) => {
  requireType(ctx, 'sev');
  expect(kvmHasDeviceAttr(DEVICE_ATTR.X86_GRP_SEV, DEVICE_ATTR.X86_SEV_VMSA_FEATURES)).toBe(true);
  expect(kvmHasDeviceAttr(DEVICE_ATTR.X86_GRP_SEV, 0x7777)).toBe(false);
});

test('kvm_cpu_has / vcpu_cpuid_has / this_cpu_has read the named X86_FEATURE bits', async () => {
  const kvm = getKvm();
  expect(kvmCpuHas(X86_FEATURE.LM)).toBe(true);
  expect(kvmCpuHas(X86_FEATURE.NX, kvm)).toBe(true);
  const hasSev = kvmCpuHas(X86_FEATURE.SEV);
  using vm = vmCreateWithOneVcpu(async (g) => {
    await guestSync(g, thisCpuHas(g, X86_FEATURE.LM) ? 1 : 0, thisCpuHas(g, X86_FEATURE.SEV) ? 1 : 0);
    await guestDone(g);
  });
  expect(vcpuCpuidHas(vm.vcpus[0]!, X86_FEATURE.LM)).toBe(true);
  const uc = await runUcall(vm.vcpus[0]!);
  expect(uc.args.slice(0, 2)).toEqual([1n, hasSev ? 1n : 0n]);
});

describe('one numeric type for launch policies', () => {
  test('vmSevLaunch takes a bigint policy, vmSnpLaunch a number', async (ctx) => {
    requireType(ctx, 'sev-es');
    requireType(ctx, 'sev-snp');
    {
      using vm = vmSevCreateWithOneVcpu('sev-es', guestDone);
      vmSevLaunch(vm, { policy: 1n << BigInt(SEV_POLICY_BIT.ES) });
      await runUcallExpect(vm.vcpus[0]!, UCALL.DONE);
    }
    {
      using vm = vmCreateWithOneVcpu(guestDone, 'sev-snp');
      vmSnpLaunch(vm, { policy: Number(SNP_DEFAULT_POLICY) });
      await runUcallExpect(vm.vcpus[0]!, UCALL.DONE);
    }
    using bad = vmSevCreateWithOneVcpu('sev', guestDone);
    expect(() => vmSevLaunch(bad, { policy: 1n << 40n })).toThrow(TestkitError);
  });
});
