import { CAP, CR, SEV_CMD, tryKvm, zeroRegs } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { createSimKvm, simStats } from '../src/index.js';
import type { SimVm } from '../src/internal/vm.js';
import { vmVcpuAdd } from './helpers.js';

describe('KVM_CREATE_VCPU (kvm_main.c kvm_vm_ioctl_create_vcpu)', () => {
  it('rejects an id at or above KVM_MAX_VCPU_IDS, and a negative id, with EINVAL', () => {
    const vm = createSimKvm().createVm();
    expect(tryKvm(() => vm.createVcpu(4096))).toBe('EINVAL');
    expect(tryKvm(() => vm.createVcpu(-1))).toBe('EINVAL');
    expect(vm.createVcpu(4095).id).toBe(4095);
  });
  it('rejects a duplicate id with EEXIST', () => {
    const vm = createSimKvm().createVm();
    vm.createVcpu(3);
    expect(tryKvm(() => vm.createVcpu(3))).toBe('EEXIST');
  });
  it('rejects a vCPU beyond KVM_MAX_VCPUS with EINVAL, before the duplicate check', () => {
    const vm = createSimKvm({ maxVcpus: 2 }).createVm();
    vm.createVcpu(0);
    vm.createVcpu(1);
    expect(tryKvm(() => vm.createVcpu(2))).toBe('EINVAL');
    expect(tryKvm(() => vm.createVcpu(0))).toBe('EINVAL');
  });
  it('creates KVM_CAP_MAX_VCPUS vCPUs (kvm_create_max_vcpus)', () => {
    const kvm = createSimKvm();
    const vm = kvm.createVm();
    const max = kvm.checkExtension(CAP.MAX_VCPUS);
    for (let i = 0; i < max; i++) vm.createVcpu(kvm.checkExtension(CAP.MAX_VCPU_ID) - max + i);
    expect(vm.vcpus.length).toBe(max);
    vm.close();
    expect(simStats(kvm).openFds).toBe(1);
  });
  it('throws TypeError for a non-integer id', () => {
    expect(() => createSimKvm().createVm().createVcpu(1.5)).toThrow(TypeError);
  });
  it('honours KVM_CAP_MAX_VCPU_ID set on the VM (x86 kvm_arch_vcpu_precreate)', () => {
    const vm = createSimKvm().createVm();
    vm.enableCap(CAP.MAX_VCPU_ID, [4]);
    expect(tryKvm(() => vm.createVcpu(4))).toBe('EINVAL');
    vm.createVcpu(3);
    expect(tryKvm(() => vm.enableCap(CAP.MAX_VCPU_ID, [8]))).toBe('EINVAL');
    expect(tryKvm(() => vm.enableCap(CAP.MAX_VCPU_ID, [4]))).toBeUndefined();
    expect(tryKvm(() => createSimKvm().createVm().enableCap(CAP.MAX_VCPU_ID, [16385]))).toBe('EINVAL');
  });
  // arch/x86/kvm/x86.c: kvm_arch_vcpu_precreate() sets an unset max_vcpu_ids to KVM_MAX_VCPU_IDS;
  // kvm_vm_ioctl_enable_cap() then accepts that value again and refuses any other.
  it('KVM_CAP_MAX_VCPU_ID after the first vCPU accepts the value in force (KVM_MAX_VCPU_IDS) and refuses others', () => {
    const kvm = createSimKvm();
    const max = kvm.checkExtension(CAP.MAX_VCPU_ID);
    const vm = kvm.createVm();
    vm.createVcpu(0);
    expect(tryKvm(() => vm.enableCap(CAP.MAX_VCPU_ID, [max]))).toBeUndefined();
    expect(tryKvm(() => vm.enableCap(CAP.MAX_VCPU_ID, [max - 1]))).toBe('EINVAL');
  });
});

describe('KVM_ENABLE_CAP (arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap())', () => {
  it('rejects non-zero flags with EINVAL before anything cap-specific', () => {
    expect(
      tryKvm(() =>
        createSimKvm()
          .createVm()
          .enableCap(CAP.EXIT_HYPERCALL, [1 << 12], 1),
      ),
    ).toBe('EINVAL');
  });
  it('accepts EXIT_HYPERCALL with bit 12 only; other bits -> EINVAL', () => {
    const vm = createSimKvm().createVm();
    expect(tryKvm(() => vm.enableCap(CAP.EXIT_HYPERCALL, [1 << 12]))).toBeUndefined();
    expect(tryKvm(() => vm.enableCap(CAP.EXIT_HYPERCALL, [1 << 11]))).toBe('EINVAL');
    expect(tryKvm(() => vm.enableCap(CAP.EXIT_HYPERCALL, [0]))).toBeUndefined();
  });
  it('answers COPY/MOVE_ENC_CONTEXT_FROM with EINVAL when the vendor op is absent (arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap())', () => {
    const kvm = createSimKvm({ vendor: 'intel' });
    const src = kvm.createVm();
    const dst = kvm.createVm();
    expect(tryKvm(() => dst.enableCap(CAP.VM_MOVE_ENC_CONTEXT_FROM, [src]))).toBe('EINVAL');
    expect(tryKvm(() => dst.enableCap(CAP.VM_COPY_ENC_CONTEXT_FROM, [src.fd]))).toBe('EINVAL');
  });
  it('rejects an unknown capability with EINVAL and malformed args with TypeError', () => {
    const vm = createSimKvm().createVm();
    expect(tryKvm(() => vm.enableCap(12345))).toBe('EINVAL');
    expect(() => vm.enableCap(CAP.EXIT_HYPERCALL, ['x' as never])).toThrow(TypeError);
    expect(() => vm.enableCap(CAP.EXIT_HYPERCALL, [1, 2, 3, 4, 5])).toThrow(RangeError);
  });
  // arch/x86/kvm/ioapic.h: MAX_NR_RESERVED_IOAPIC_PINS is KVM_MAX_IRQ_ROUTES (4096).
  it('KVM_CAP_SPLIT_IRQCHIP takes up to MAX_NR_RESERVED_IOAPIC_PINS (KVM_MAX_IRQ_ROUTES, 4096) reserved pins', () => {
    expect(tryKvm(() => createSimKvm().createVm().enableCap(CAP.SPLIT_IRQCHIP, [4096]))).toBeUndefined();
    expect(tryKvm(() => createSimKvm().createVm().enableCap(CAP.SPLIT_IRQCHIP, [49]))).toBeUndefined();
    expect(tryKvm(() => createSimKvm().createVm().enableCap(CAP.SPLIT_IRQCHIP, [4097]))).toBe('EINVAL');
  });
  it('enables a split irqchip once, and only before vCPUs exist (EEXIST otherwise)', () => {
    const vm = createSimKvm().createVm();
    expect(tryKvm(() => vm.enableCap(CAP.SPLIT_IRQCHIP, [24]))).toBeUndefined();
    expect(tryKvm(() => vm.enableCap(CAP.SPLIT_IRQCHIP, [24]))).toBe('EEXIST');
    const vm2 = createSimKvm().createVm();
    vm2.createVcpu(0);
    expect(tryKvm(() => vm2.enableCap(CAP.SPLIT_IRQCHIP, [24]))).toBe('EEXIST');
  });
});

describe('KVM_MEMORY_ENCRYPT_OP and REG/UNREG_REGION without a vendor op (arch/x86/kvm/x86.c: kvm_arch_vm_ioctl())', () => {
  it('answers ENOTTY on the VM fd, for a NULL argument too', () => {
    // A host without SEV (sev_enabled false, checked first in arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl()) has no SEV vendor op on its DEFAULT VMs.
    const vm = createSimKvm({ vmTypes: ['default', 'sw-protected'] }).createVm();
    expect(tryKvm(() => vm.memEncryptOp({ id: SEV_CMD.INIT }))).toBe('ENOTTY');
    expect(tryKvm(() => vm.memEncryptOp(undefined))).toBe('ENOTTY');
    const addr = { buffer: new Uint8Array(4096), offset: 0 };
    expect(tryKvm(() => vm.memEncryptRegRegion({ addr, size: 4096n }))).toBe('ENOTTY');
    expect(tryKvm(() => vm.memEncryptUnregRegion({ addr, size: 4096n }))).toBe('ENOTTY');
  });
  it('answers ENOTTY on an AMD vCPU fd and EINVAL on an Intel non-TD vCPU', () => {
    const cmd = { id: 2, flags: 0, hwError: 0n };
    expect(tryKvm(() => createSimKvm().createVm().createVcpu(0).memEncryptOp(cmd))).toBe('ENOTTY');
    expect(tryKvm(() => createSimKvm({ vendor: 'intel' }).createVm().createVcpu(0).memEncryptOp(cmd))).toBe(
      'EINVAL',
    );
  });
});

describe('register state (x86.c kvm_arch_vcpu_ioctl_get/set_regs, sregs)', () => {
  // arch/x86/kvm/x86.c: kvm_vcpu_reset() runs in KVM_CREATE_VCPU, before any KVM_SET_CPUID2.
  it('kvm_vcpu_reset: a new vCPU starts at RIP 0xfff0, RDX 0x600, RFLAGS 0x2, CR0 0x60000010', () => {
    for (const type of ['default', 'sev', 'sev-es', 'sev-snp'] as const) {
      const v = createSimKvm().createVm(type).createVcpu(0);
      expect(v.getRegs(), type).toEqual({ ...zeroRegs(), rip: 0xfff0n, rdx: 0x600n, rflags: 2n });
      expect(v.getSregs(), type).toMatchObject({ cr0: 0x60000010n, cr2: 0n, cr3: 0n, cr4: 0n, efer: 0n });
      expect(v.getSregs().cs, type).toMatchObject({ selector: 0xf000, base: 0xffff_0000n, limit: 0xffff });
    }
  });
  it('round-trips registers and sregs', () => {
    const v = vmVcpuAdd(createSimKvm().createVm(), 0);
    const r = { ...zeroRegs(), rax: 1n, rip: 0x1000n };
    v.setRegs(r);
    expect(v.getRegs()).toEqual(r);
    const s = {
      cr0: CR.CR0_PE | CR.CR0_PG,
      cr2: 0n,
      cr3: 0x1000n,
      cr4: CR.CR4_PAE,
      efer: CR.EFER_LME | CR.EFER_LMA,
    };
    v.setSregs(s);
    expect(v.getSregs()).toMatchObject(s);
  });
  it('rejects sregs that kvm_is_valid_sregs refuses with EINVAL, changing nothing', () => {
    const v = createSimKvm().createVm().createVcpu(0);
    const before = v.getSregs();
    const bad = { cr0: CR.CR0_PE | CR.CR0_PG, cr2: 0n, cr3: 0n, cr4: 0n, efer: CR.EFER_LME | CR.EFER_LMA };
    expect(tryKvm(() => v.setSregs(bad))).toBe('EINVAL');
    expect(tryKvm(() => v.setSregs({ ...bad, cr4: CR.CR4_PAE, efer: CR.EFER_LME }))).toBe('EINVAL');
    expect(tryKvm(() => v.setSregs({ ...before, efer: CR.EFER_LMA }))).toBe('EINVAL');
    expect(v.getSregs()).toEqual(before);
  });
  // arch/x86/kvm/x86.c: kvm_is_valid_sregs() -> kvm_is_valid_cr4(), kvm_is_valid_cr0(); EFER only for LMA.
  it('kvm_is_valid_sregs: KVM_SET_SREGS rejects invalid CR0, CR4 and EFER.LMA with EINVAL, changing nothing', () => {
    const v = vmVcpuAdd(createSimKvm().createVm(), 0);
    const before = v.getSregs();
    const bad: [string, Partial<typeof before>][] = [
      ['CR0 bit 32', { cr0: before.cr0 | (1n << 32n) }],
      ['CR0 bit 63', { cr0: before.cr0 | (1n << 63n) }],
      ['CR0.NW without CD', { cr0: CR.CR0_ET | CR.CR0_NW }],
      ['CR0.PG without PE', { cr0: CR.CR0_ET | CR.CR0_PG }],
      ['CR4 reserved bit 15', { cr4: 1n << 15n }],
      ['CR4 reserved bit 63', { cr4: 1n << 63n }],
      ['CR4.VMXE on AMD (CPUID.1.ECX.VMX clear)', { cr4: CR.CR4_VMXE }],
      ['CR4.PCIDE without CPUID PCID', { cr4: CR.CR4_PCIDE }],
      ['EFER.LMA without LME and PG', { efer: CR.EFER_LMA }],
    ];
    for (const [what, patch] of bad)
      expect(
        tryKvm(() => v.setSregs({ ...before, ...patch })),
        what,
      ).toBe('EINVAL');
    expect(v.getSregs()).toEqual(before);
    // Valid: CD|NW, PE without PG, a CR4 feature the CPUID has (LA57), EFER.SCE/NXE/LME without paging.
    expect(tryKvm(() => v.setSregs({ ...before, cr0: before.cr0 | CR.CR0_PE }))).toBeUndefined();
    expect(tryKvm(() => v.setSregs({ ...before, cr4: CR.CR4_LA57 | CR.CR4_PAE }))).toBeUndefined();
    expect(
      tryKvm(() => v.setSregs({ ...before, efer: CR.EFER_SCE | CR.EFER_NXE | CR.EFER_LME })),
    ).toBeUndefined();
  });
  // cpuid.c kvm_vcpu_after_set_cpuid() computes cr4_guest_rsvd_bits from the CPUID KVM_SET_CPUID2
  // set; __set_sregs_common() checks EFER against nothing (no kvm_valid_efer(); measured on /dev/kvm).
  it('cr4_guest_rsvd_bits follow the CPUID KVM_SET_CPUID2 set (no LA57 there -> EINVAL); EFER is not checked against it', () => {
    const kvm = createSimKvm();
    const v = kvm.createVm().createVcpu(0);
    const before = v.getSregs();
    v.setCpuid(kvm.getSupportedCpuid().filter((e) => e.function !== 0x8000_0001 && e.function !== 7));
    expect(tryKvm(() => v.setSregs({ ...before, cr4: CR.CR4_LA57 }))).toBe('EINVAL');
    expect(tryKvm(() => v.setSregs({ ...before, efer: CR.EFER_LME }))).toBeUndefined();
    expect(tryKvm(() => v.setSregs({ ...before, efer: CR.EFER_NXE }))).toBeUndefined();
    expect(tryKvm(() => v.setSregs({ ...before, efer: 1n << 2n }))).toBeUndefined();
    expect(v.getSregs().efer).toBe(1n << 2n);
  });
  it('kvm_is_valid_cr4 before any KVM_SET_CPUID2: only bits KVM does not support are reserved (cr4_guest_rsvd_bits still 0)', () => {
    const withLa57 = createSimKvm().createVm().createVcpu(0);
    const before = withLa57.getSregs();
    expect(tryKvm(() => withLa57.setSregs({ ...before, cr4: CR.CR4_LA57 }))).toBeUndefined();
    expect(tryKvm(() => withLa57.setSregs({ ...before, cr4: CR.CR4_OSXSAVE }))).toBeUndefined();
    const noLa57 = createSimKvm({ host: 'pvm' }).createVm().createVcpu(0);
    expect(tryKvm(() => noLa57.setSregs({ ...before, cr4: CR.CR4_LA57 }))).toBe('EINVAL');
    // Once set, even an empty CPUID makes every feature bit reserved.
    withLa57.setSregs(before);
    withLa57.setCpuid([]);
    expect(tryKvm(() => withLa57.setSregs({ ...before, cr4: CR.CR4_OSXSAVE }))).toBe('EINVAL');
  });
  it('throws TypeError for a register that is not a bigint', () => {
    const v = createSimKvm().createVm().createVcpu(0);
    expect(() => v.setRegs({ ...zeroRegs(), rax: 1 as never })).toThrow(TypeError);
  });
});

describe('CPUID and MSRs', () => {
  // arch/x86/kvm/x86.c: kvm_arch_vcpu_create() leaves vcpu->arch.cpuid_entries empty, and
  // arch/x86/kvm/cpuid.c: kvm_vcpu_ioctl_get_cpuid2() copies out cpuid_nent entries (measured: 0 on /dev/kvm).
  it('kvm_arch_vcpu_create: a new vCPU has no CPUID entries (KVM_GET_CPUID2 returns 0)', () => {
    for (const host of ['mainline-intel', 'mainline-amd', 'pvm'] as const) {
      const kvm = createSimKvm({ host });
      expect(kvm.getSupportedCpuid().length, host).toBeGreaterThan(0);
      const vm = kvm.createVm();
      expect(vm.createVcpu(0).getCpuid(), host).toEqual([]);
      // Setting one vCPU's CPUID gives the next vCPU nothing.
      vm.vcpus[0]!.setCpuid(kvm.getSupportedCpuid());
      expect(vm.createVcpu(1).getCpuid(), host).toEqual([]);
    }
  });
  it('accepts KVM_SET_CPUID2 before the first run and KVM_GET_CPUID2 returns what was set', () => {
    const kvm = createSimKvm();
    const v = kvm.createVm().createVcpu(0);
    v.setCpuid(kvm.getSupportedCpuid());
    expect(v.getCpuid()).toEqual(kvm.getSupportedCpuid());
    v.setCpuid([{ function: 0, index: 0, flags: 0, eax: 1, ebx: 2, ecx: 3, edx: 4 }]);
    expect(v.getCpuid()).toEqual([{ function: 0, index: 0, flags: 0, eax: 1, ebx: 2, ecx: 3, edx: 4 }]);
  });
  it('rejects more than KVM_MAX_CPUID_ENTRIES with E2BIG', () => {
    const v = createSimKvm().createVm().createVcpu(0);
    const e = Array.from({ length: 257 }, (_, i) => ({
      function: i,
      index: 0,
      flags: 0,
      eax: 0,
      ebx: 0,
      ecx: 0,
      edx: 0,
    }));
    expect(tryKvm(() => v.setCpuid(e))).toBe('E2BIG');
  });
  it('rejects a different CPUID after KVM_RUN with EINVAL but accepts the same one (cpuid.c kvm_set_cpuid)', async () => {
    const v = vmVcpuAdd(createSimKvm().createVm(), 0);
    v.setEntry(async () => {});
    await v.run();
    expect(tryKvm(() => v.setCpuid(v.getCpuid()))).toBeUndefined();
    expect(tryKvm(() => v.setCpuid([]))).toBe('EINVAL');
  });
  it('kvm_cpuid_check_equal: a vCPU that ran with no CPUID accepts only the empty table again', async () => {
    const kvm = createSimKvm();
    const v = kvm.createVm().createVcpu(0);
    v.setEntry(async () => {});
    await v.run();
    expect(tryKvm(() => v.setCpuid([]))).toBeUndefined();
    expect(tryKvm(() => v.setCpuid(kvm.getSupportedCpuid()))).toBe('EINVAL');
    expect(v.getCpuid()).toEqual([]);
  });
  it('reads and writes modelled MSRs; an unknown MSR fails with EINVAL (0 of 1 processed)', () => {
    const v = createSimKvm().createVm().createVcpu(0);
    v.setMsr(0xc0000082, 0xffffffff81000000n);
    expect(v.getMsr(0xc0000082)).toBe(0xffffffff81000000n);
    expect(v.getMsr(0x1b) & 0x100n).toBe(0x100n); // BSP
    expect(tryKvm(() => v.getMsr(0x12345))).toBe('EINVAL');
    expect(tryKvm(() => v.setMsr(0x12345, 0n))).toBe('EINVAL');
  });
});

describe('closed and dead objects', () => {
  it('fails every VM and vCPU call with EBADF after close', async () => {
    const vm = createSimKvm().createVm();
    const v = vm.createVcpu(0);
    vm.close();
    expect(vm.closed).toBe(true);
    expect(tryKvm(() => vm.createVcpu(1))).toBe('EBADF');
    expect(tryKvm(() => vm.checkExtension(CAP.USER_MEMORY))).toBe('EBADF');
    expect(tryKvm(() => v.getRegs())).toBe('EBADF');
    await expect(v.run()).rejects.toMatchObject({ code: 'EBADF' });
    expect(tryKvm(() => vm.close())).toBe('EBADF');
  });
  it('closed-vm-ebadf: fails the non-ioctl calls too (guest symbols, memory attributes, entry point)', () => {
    const vm = createSimKvm().createVm();
    const v = vm.createVcpu(0);
    vm.close();
    expect(tryKvm(() => vm.setGuestSymbols(new Map([['x', 0x1000n]])))).toBe('EBADF');
    expect(tryKvm(() => vm.getMemoryAttributes(0n))).toBe('EBADF');
    expect(tryKvm(() => v.setEntry(async () => {}))).toBe('EBADF');
  });
  it('fails a closed vCPU fd with EBADF while its VM works on', () => {
    const kvm = createSimKvm();
    const vm = kvm.createVm();
    const v = vm.createVcpu(0);
    kvm.closeFd(v.fd);
    expect(tryKvm(() => v.getSregs())).toBe('EBADF');
    expect(tryKvm(() => vm.createVcpu(1))).toBeUndefined();
  });
  it('a dead VM fails every VM and vCPU ioctl with EIO, after the fd check (virt/kvm/kvm_main.c: kvm_vm_ioctl())', async () => {
    const vm = createSimKvm().createVm();
    const v = vm.createVcpu(0);
    (vm as SimVm).markDead();
    expect(tryKvm(() => vm.checkExtension(CAP.USER_MEMORY))).toBe('EIO');
    expect(tryKvm(() => vm.createVcpu(1))).toBe('EIO');
    expect(tryKvm(() => vm.enableCap(CAP.EXIT_HYPERCALL, [0]))).toBe('EIO');
    expect(tryKvm(() => vm.memEncryptOp(undefined))).toBe('EIO');
    expect(tryKvm(() => v.getRegs())).toBe('EIO');
    await expect(v.run()).rejects.toMatchObject({ code: 'EIO' });
    vm.close();
    expect(tryKvm(() => vm.createVcpu(1))).toBe('EBADF');
  });
});
