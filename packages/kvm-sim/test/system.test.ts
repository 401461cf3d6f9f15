import { CAP, DEVICE_ATTR, ERRNO, MEMORY_ATTRIBUTE, tryKvm } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { createSimKvm, SIM_CONFIG_DEFAULTS, simStats } from '../src/index.js';

describe('KVM_CHECK_EXTENSION on /dev/kvm (x86.c kvm_vm_ioctl_check_extension, kvm_main.c generic)', () => {
  const kvm = createSimKvm();
  it('answers 1 for USER_MEMORY, USER_MEMORY2, IMMEDIATE_EXIT and MEMORY_FAULT_INFO', () => {
    for (const c of [CAP.USER_MEMORY, CAP.USER_MEMORY2, CAP.IMMEDIATE_EXIT, CAP.MEMORY_FAULT_INFO])
      expect(kvm.checkExtension(c)).toBe(1);
  });
  it('answers 1 for COPY/MOVE_ENC_CONTEXT_FROM unconditionally (arch/x86/kvm/x86.c: kvm_vm_ioctl_check_extension())', () => {
    expect(kvm.checkExtension(CAP.VM_COPY_ENC_CONTEXT_FROM)).toBe(1);
    expect(kvm.checkExtension(CAP.VM_MOVE_ENC_CONTEXT_FROM)).toBe(1);
  });
  it('answers the forwardable-hypercall bitmask 1<<12 for EXIT_HYPERCALL (arch/x86/kvm/x86.c: kvm_vm_ioctl_check_extension())', () => {
    expect(kvm.checkExtension(CAP.EXIT_HYPERCALL)).toBe(1 << 12);
  });
  it('answers the default-config x86 limits: KVM_MAX_VCPUS 1024, KVM_MAX_VCPU_IDS 4×, 32764 user memslots', () => {
    expect(kvm.checkExtension(CAP.MAX_VCPUS)).toBe(1024);
    expect(kvm.checkExtension(CAP.MAX_VCPU_ID)).toBe(4096);
    expect(kvm.checkExtension(CAP.NR_MEMSLOTS)).toBe(32764);
    expect(kvm.checkExtension(CAP.NR_VCPUS)).toBe(SIM_CONFIG_DEFAULTS.onlineCpus);
  });
  it('answers PRIVATE for MEMORY_ATTRIBUTES and 1 for GUEST_MEMFD on /dev/kvm (kvm_supported_mem_attributes(NULL))', () => {
    expect(kvm.checkExtension(CAP.MEMORY_ATTRIBUTES)).toBe(Number(MEMORY_ATTRIBUTE.PRIVATE));
    expect(kvm.checkExtension(CAP.GUEST_MEMFD)).toBe(1);
  });
  it('answers 0 for an unknown capability and for the caps the simulator does not model', () => {
    expect(kvm.checkExtension(9999)).toBe(0);
    expect(kvm.checkExtension(CAP.PRE_FAULT_MEMORY)).toBe(0);
  });
  it('rejects a non-integer capability with a TypeError naming the argument', () => {
    expect(() => kvm.checkExtension('3' as unknown as number)).toThrow(/cap must be an integer/);
  });
});

describe('KVM_CAP_VM_TYPES and KVM_CREATE_VM (x86.c kvm_arch_init_vm)', () => {
  it('advertises every type whose model is available (all six on the default host)', () => {
    expect(createSimKvm().checkExtension(CAP.VM_TYPES)).toBe(0b11_1111);
    expect(createSimKvm({ vmTypes: ['default', 'sw-protected'] }).checkExtension(CAP.VM_TYPES)).toBe(0b11);
  });
  it('creates a VM by name or by kernel number', () => {
    const kvm = createSimKvm();
    expect(kvm.createVm().type).toBe('default');
    expect(kvm.createVm(1).type).toBe('sw-protected');
  });
  it('fails with EINVAL for an unsupported or unknown type number', () => {
    const kvm = createSimKvm({ vmTypes: ['default', 'sw-protected'] });
    expect(tryKvm(() => kvm.createVm('sev'))).toBe('EINVAL');
    expect(tryKvm(() => kvm.createVm(7))).toBe('EINVAL');
    expect(tryKvm(() => kvm.createVm(40))).toBe('EINVAL');
    expect(tryKvm(() => createSimKvm({ vmTypes: ['default'] }).createVm('sw-protected'))).toBe('EINVAL');
  });
  it('throws TypeError for a type that is neither a known name nor an integer', () => {
    const kvm = createSimKvm();
    expect(() => kvm.createVm('bogus' as 'default')).toThrow(TypeError);
    expect(() => kvm.createVm(1.5)).toThrow(TypeError);
  });
  it('restricts a vendor-specific host to real combinations', () => {
    expect(() => createSimKvm({ vendor: 'intel', vmTypes: ['sev'] })).toThrow(RangeError);
    expect(() => createSimKvm({ vendor: 'amd', vmTypes: ['tdx'] })).toThrow(RangeError);
    expect(() => createSimKvm({ vendor: 'arm' as 'amd' })).toThrow(TypeError);
  });
});

describe('KVM_GET_SUPPORTED_CPUID', () => {
  it('reports MAXPHYADDR in 0x80000008 and the SEV C-bit and ASIDs in 0x8000001F (arch/x86/kvm/cpuid.c: __do_cpuid_func())', () => {
    const cpuid = createSimKvm({ cpu: { maxPhysAddr: 48 } }).getSupportedCpuid();
    expect(cpuid.find((e) => e.function === 0x80000008)!.eax & 0xff).toBe(48);
    const sev = cpuid.find((e) => e.function === 0x8000001f)!;
    expect(sev.ebx & 0x3f).toBe(51);
    expect((sev.ebx >> 6) & 0x3f).toBe(0);
    expect(sev.ecx).toBe(509);
    expect(sev.edx).toBe(100);
  });
  it('has no 0x8000001F leaf on an Intel host', () => {
    const cpuid = createSimKvm({ vendor: 'intel' }).getSupportedCpuid();
    expect(cpuid.some((e) => e.function === 0x8000001f)).toBe(false);
    expect(cpuid[0]!.ebx).toBe(0x756e6547); // "Genu"
  });
  it('returns copies the caller may modify', () => {
    const kvm = createSimKvm();
    kvm.getSupportedCpuid()[0]!.eax = 99;
    expect(kvm.getSupportedCpuid()[0]!.eax).toBe(0xd);
  });
});

describe('KVM_GET_DEVICE_ATTR (arch/x86/kvm/svm/sev.c: sev_dev_get_attr())', () => {
  it('answers the VMSA features of the SEV group (0 while no SEV-ES is available)', () => {
    const noEs = createSimKvm({ vmTypes: ['default', 'sev'] });
    expect(noEs.getDeviceAttr(DEVICE_ATTR.X86_GRP_SEV, DEVICE_ATTR.X86_SEV_VMSA_FEATURES)).toBe(0n);
    expect(createSimKvm().getDeviceAttr(DEVICE_ATTR.X86_GRP_SEV, DEVICE_ATTR.X86_SEV_VMSA_FEATURES)).toBe(
      32n,
    );
  });
  it('fails with ENXIO for an unknown attribute or group, and on an Intel host', () => {
    const kvm = createSimKvm();
    expect(tryKvm(() => kvm.getDeviceAttr(DEVICE_ATTR.X86_GRP_SEV, 5))).toBe('ENXIO');
    expect(tryKvm(() => kvm.getDeviceAttr(7, 0))).toBe('ENXIO');
    expect(tryKvm(() => createSimKvm({ vendor: 'intel' }).getDeviceAttr(1, 0))).toBe('ENXIO');
  });
});

describe('the descriptor table', () => {
  it('fails open("/dev/sev") with ENOENT when the host has no SEV', () => {
    expect(tryKvm(() => createSimKvm({ vmTypes: ['default', 'sw-protected'] }).openSevDevice())).toBe(
      'ENOENT',
    );
  });
  it('hands out the lowest free descriptor, from 3, and reuses closed ones', () => {
    const kvm = createSimKvm();
    const a = kvm.createVm();
    const b = kvm.createVm();
    expect([a.fd, b.fd]).toEqual([4, 5]);
    a.close();
    expect(kvm.isFdOpen(4)).toBe(false);
    expect(kvm.createVm().fd).toBe(4);
  });
  it('fails close() of a descriptor that is not open with EBADF', () => {
    const kvm = createSimKvm();
    const vm = kvm.createVm();
    kvm.closeFd(vm.fd);
    const e = (() => {
      try {
        kvm.closeFd(vm.fd);
      } catch (err) {
        return err as { code: string; errno: number };
      }
    })();
    expect(e).toMatchObject({ code: 'EBADF', errno: ERRNO.EBADF });
  });
  it('fails every /dev/kvm ioctl with EBADF once /dev/kvm itself is closed', () => {
    const kvm = createSimKvm();
    kvm.closeFd(3);
    expect(tryKvm(() => kvm.createVm())).toBe('EBADF');
    expect(tryKvm(() => kvm.checkExtension(CAP.USER_MEMORY))).toBe('EBADF');
  });
  it('reports what a process holds and frees everything when closed', () => {
    const kvm = createSimKvm();
    const vm = kvm.createVm('sw-protected');
    vm.createVcpu(0);
    vm.createGuestMemfd(1n << 20n);
    expect(simStats(kvm)).toMatchObject({ openFds: 4, liveVms: 1, liveVcpus: 1, gmemFiles: 1 });
    vm.close();
    // The guest_memfd still holds the VM (kvm_get_kvm in __kvm_gmem_create).
    expect(simStats(kvm)).toMatchObject({ openFds: 2, liveVms: 1 });
    kvm.closeFd(6);
    expect(simStats(kvm)).toEqual({
      openFds: 1,
      liveVms: 0,
      liveVcpus: 0,
      gmemFiles: 0,
      gmemBytes: 0,
      memslots: 0,
    });
  });
  it('rejects simStats of a Kvm that is not simulated', () => {
    expect(() => simStats({} as never)).toThrow(TypeError);
  });
});
