// The SEV model through the real simulator API (createSimKvm → Vm → Vcpu), as the selftests use it.

import { encodeIoioExitInfo, Ghcb, SEV_MSR, SVM_EXIT } from '@kvmtest/coco';
import { PageTables, PhysicalMemory } from '@kvmtest/guest-memory';
import {
  CAP,
  CR,
  type Exit,
  type Kvm,
  SEV_CMD,
  SEV_GUEST_STATE,
  type SevCommand,
  tryKvm,
  VECTOR,
  type Vm,
} from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import type { ArchKvm } from '../arch/ops.js';
import { createSimKvm } from '../sim.js';
import { sevPlatform } from './arch-ops.js';

const NR_VCPUS = 4;
const POLICY_ES = 4;

function sevCmd(vm: Vm, sevFd: number, id: number, data?: unknown): SevCommand {
  const c: SevCommand = { id, data, sevFd, error: 0 };
  vm.memEncryptOp(c);
  return c;
}

function status(vm: Vm, sevFd: number) {
  const st = { handle: 0, policy: 0, state: 0 };
  sevCmd(vm, sevFd, SEV_CMD.GUEST_STATUS, st);
  return st;
}

/** sev_migrate_tests.c sev_vm_create(): a barebones VM, legacy INIT, 4 vCPUs, launch, VMSA twice for ES. */
function sevVmCreate(kvm: Kvm, sevFd: number, es: boolean): Vm {
  const vm = kvm.createVm('default');
  const mem = new Uint8Array(0x4000).fill(0xa5);
  vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x4000n, userspace: mem });
  sevCmd(vm, sevFd, es ? SEV_CMD.ES_INIT : SEV_CMD.INIT);
  for (let i = 0; i < NR_VCPUS; i++) vm.createVcpu(i);
  const start = { handle: 0, policy: es ? POLICY_ES : 0 };
  sevCmd(vm, sevFd, SEV_CMD.LAUNCH_START, start);
  expect(status(vm, sevFd)).toEqual({
    handle: start.handle,
    policy: start.policy,
    state: SEV_GUEST_STATE.LAUNCH_UPDATE,
  });
  sevCmd(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: { buffer: mem, offset: 0 }, len: mem.length });
  if (es) {
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_VMSA);
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_VMSA);
  }
  return vm;
}

function auxVm(kvm: Kvm, vcpus: boolean): Vm {
  const vm = kvm.createVm('default');
  if (vcpus) for (let i = 0; i < NR_VCPUS; i++) vm.createVcpu(i);
  return vm;
}

const move = (dst: Vm, src: Vm) => tryKvm(() => dst.enableCap(CAP.VM_MOVE_ENC_CONTEXT_FROM, [src]));
const copy = (dst: Vm, src: Vm) => tryKvm(() => dst.enableCap(CAP.VM_COPY_ENC_CONTEXT_FROM, [src]));

function leaks(kvm: Kvm) {
  return sevPlatform(kvm as unknown as ArchKvm).leakReport();
}

describe('SEV through the simulator API (tools/testing/selftests/kvm/x86/sev_migrate_tests.c)', () => {
  it('KVM_CAP_VM_TYPES offers sev and sev-es; /dev/sev opens (arch/x86/kvm/svm/sev.c: sev_set_cpu_caps())', () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const mask = kvm.checkExtension(CAP.VM_TYPES);
    expect(mask & (1 << 2)).not.toBe(0);
    expect(mask & (1 << 3)).not.toBe(0);
    expect(kvm.openSevDevice()).toBeGreaterThan(2);
    expect(kvm.checkExtension(CAP.VM_MOVE_ENC_CONTEXT_FROM)).toBe(1);
  });

  it.each([false, true])(
    'test_sev_migrate_from(es=%s): a chain of moves, then migrating back → EIO (tools/testing/selftests/kvm/x86/sev_migrate_tests.c)',
    (es) => {
      const kvm = createSimKvm({ vendor: 'amd' });
      const sevFd = kvm.openSevDevice();
      const src = sevVmCreate(kvm, sevFd, es);
      const dst = [auxVm(kvm, true), auxVm(kvm, true), auxVm(kvm, true)];
      expect(move(dst[0]!, src)).toBeUndefined();
      expect(move(dst[1]!, dst[0]!)).toBeUndefined();
      expect(move(dst[2]!, dst[1]!)).toBeUndefined();
      expect(move(src, dst[2]!)).toBe('EIO');
      // virt/kvm/kvm_main.c: kvm_vm_ioctl(): every later ioctl on the dead VM is EIO.
      expect(tryKvm(() => src.createVcpu(9))).toBe('EIO');
      expect(tryKvm(() => src.vcpus[0]!.getRegs())).toBe('EIO');
      for (const v of [src, ...dst]) v.close();
      expect(leaks(kvm)).toMatchObject({ ownedAsids: [], firmwareContexts: [], boundAsids: 0 });
    },
  );

  it('the parameter checks of tools/testing/selftests/kvm/x86/sev_migrate_tests.c: test_sev_migrate_parameters()', () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const sevVm = sevVmCreate(kvm, sevFd, false);
    const sevEsVm = sevVmCreate(kvm, sevFd, true);
    const noVcpu = auxVm(kvm, false);
    const noSev = auxVm(kvm, true);
    const esNoVmsa = kvm.createVm('default');
    sevCmd(esNoVmsa, sevFd, SEV_CMD.ES_INIT);
    esNoVmsa.createVcpu(1);
    expect(move(noVcpu, noSev)).toBe('EINVAL');
    expect(move(sevVm, sevEsVm)).toBe('EINVAL');
    expect(move(sevEsVm, sevVm)).toBe('EINVAL');
    expect(move(noVcpu, sevEsVm)).toBe('EINVAL');
    expect(move(noVcpu, esNoVmsa)).toBe('EINVAL');
    for (const v of [sevVm, sevEsVm, noVcpu, noSev, esNoVmsa]) v.close();
    expect(leaks(kvm).ownedAsids).toEqual([]);
  });

  it.each([false, true])(
    'test_sev_mirror(es=%s): allowed commands only (tools/testing/selftests/kvm/x86/sev_migrate_tests.c)',
    (es) => {
      const kvm = createSimKvm({ vendor: 'amd' });
      const sevFd = kvm.openSevDevice();
      const src = sevVmCreate(kvm, sevFd, es);
      const dst = auxVm(kvm, false);
      expect(copy(dst, src)).toBeUndefined();
      for (let i = 0; i < NR_VCPUS; i++) dst.createVcpu(i);
      if (es) sevCmd(dst, sevFd, SEV_CMD.LAUNCH_UPDATE_VMSA);
      for (let id = 0; id < SEV_CMD.NR_MAX; id++) {
        if ([4, 16, 17, 18].includes(id)) continue;
        expect(
          tryKvm(() => dst.memEncryptOp({ id, sevFd })),
          `id ${id}`,
        ).toBe('EINVAL');
      }
      expect(status(dst, sevFd).handle).not.toBe(0);
      dst.close();
      src.close();
      expect(leaks(kvm).ownedAsids).toEqual([]);
    },
  );

  it('the parameter checks of tools/testing/selftests/kvm/x86/sev_migrate_tests.c: test_sev_mirror_parameters()', () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const sevVm = sevVmCreate(kvm, sevFd, false);
    const sevEsVm = sevVmCreate(kvm, sevFd, true);
    const withVcpu = auxVm(kvm, true);
    const noVcpu = auxVm(kvm, false);
    expect(copy(sevVm, sevVm)).toBe('EINVAL');
    expect(copy(noVcpu, withVcpu)).toBe('EINVAL');
    expect(copy(withVcpu, sevVm)).toBe('EINVAL');
    expect(copy(sevVm, sevEsVm)).toBe('EINVAL');
    expect(copy(sevEsVm, sevVm)).toBe('EINVAL');
    for (const v of [sevVm, sevEsVm, withVcpu, noVcpu]) v.close();
  });

  it('a closed source, a VM of another process, /dev/sev → EBADF; nothing changes (arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from(), sev_vm_copy_enc_context_from())', () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const src = sevVmCreate(kvm, sevFd, false);
    const closed = sevVmCreate(kvm, sevFd, false);
    const dst = auxVm(kvm, true);
    const mirror = auxVm(kvm, false);
    // Closed after the others exist, so its descriptor number is not reused by them.
    closed.close();
    const other = createSimKvm({ vendor: 'amd' });
    for (let i = 0; i < 30; i++) other.createVm();
    const foreign = other.createVm(); // its fd number is not open in `kvm`
    expect(kvm.isFdOpen(foreign.fd)).toBe(false);
    for (const s of [closed, foreign]) {
      expect(move(dst, s)).toBe('EBADF');
      expect(copy(mirror, s)).toBe('EBADF');
    }
    expect(tryKvm(() => dst.enableCap(CAP.VM_MOVE_ENC_CONTEXT_FROM, [sevFd]))).toBe('EBADF');
    expect(tryKvm(() => mirror.enableCap(CAP.VM_COPY_ENC_CONTEXT_FROM, [sevFd]))).toBe('EBADF');
    // arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap(): flags ≠ 0 → EINVAL before anything SEV-specific.
    expect(tryKvm(() => dst.enableCap(CAP.VM_MOVE_ENC_CONTEXT_FROM, [src], 1))).toBe('EINVAL');
    expect(move(dst, src)).toBeUndefined();
    for (const v of [src, dst, mirror]) v.close();
    expect(leaks(kvm).ownedAsids).toEqual([]);
  });

  it('test_sev_move_copy: both free orders leave no ASID behind (tools/testing/selftests/kvm/x86/sev_migrate_tests.c)', () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    {
      const sevVm = sevVmCreate(kvm, sevFd, false);
      const [dst, dst2, dst3] = [auxVm(kvm, true), auxVm(kvm, true), auxVm(kvm, true)];
      const [mirror, dstMirror, dst2Mirror, dst3Mirror] = [1, 2, 3, 4].map(() => auxVm(kvm, false)) as [
        Vm,
        Vm,
        Vm,
        Vm,
      ];
      expect(copy(mirror, sevVm)).toBeUndefined();
      expect(move(dstMirror, mirror)).toBeUndefined();
      expect(move(dst, sevVm)).toBeUndefined();
      expect(move(dst2, dst)).toBeUndefined();
      expect(move(dst2Mirror, dstMirror)).toBeUndefined();
      expect(move(dst3Mirror, dst2Mirror)).toBeUndefined();
      expect(move(dst3, dst2)).toBeUndefined();
      for (const v of [dst, sevVm, dst3, dst2, dst3Mirror, dst2Mirror, dstMirror, mirror]) v.close();
    }
    {
      const sevVm = sevVmCreate(kvm, sevFd, false);
      const dst = auxVm(kvm, true);
      const mirror = auxVm(kvm, false);
      const dstMirror = auxVm(kvm, false);
      expect(copy(mirror, sevVm)).toBeUndefined();
      expect(move(dstMirror, mirror)).toBeUndefined();
      expect(move(dst, sevVm)).toBeUndefined();
      for (const v of [mirror, dstMirror, dst, sevVm]) v.close();
    }
    expect(leaks(kvm)).toEqual({
      ownedAsids: [],
      firmwareContexts: [],
      boundAsids: 0,
      snpContexts: [],
      rmpAssigned: 0,
      liveVms: 0,
    });
  });
});

describe('ASIDs from the simulated CPUID (arch/x86/kvm/svm/sev.c: sev_hardware_setup())', () => {
  it('SimConfig cpu.minSevAsid / maxSevAsid size the pools; exhaustion → EBUSY; all back after close (arch/x86/kvm/svm/sev.c: sev_asid_new())', () => {
    const kvm = createSimKvm({ vendor: 'amd', cpu: { minSevAsid: 3, maxSevAsid: 4 } });
    const sevFd = kvm.openSevDevice();
    const init2 = { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 };
    for (let round = 0; round < 3; round++) {
      const es = [kvm.createVm('sev-es'), kvm.createVm('sev-es')];
      for (const v of es) sevCmd(v, sevFd, SEV_CMD.INIT2, init2);
      const third = kvm.createVm('sev-es');
      expect(tryKvm(() => sevCmd(third, sevFd, SEV_CMD.INIT2, init2))).toBe('EBUSY');
      const sev = [kvm.createVm('sev'), kvm.createVm('sev')];
      for (const v of sev) sevCmd(v, sevFd, SEV_CMD.INIT2, init2);
      expect(tryKvm(() => sevCmd(kvm.createVm('default'), sevFd, SEV_CMD.INIT))).toBe('EBUSY');
      expect(leaks(kvm).ownedAsids).toEqual([1, 2, 3, 4]);
      for (const v of [...es, third, ...sev]) v.close();
      expect(leaks(kvm).ownedAsids).toEqual([]);
    }
  });

  it('min_sev_asid 1 leaves no SEV-ES ASIDs: the sev-es VM type is not offered (arch/x86/kvm/svm/sev.c: sev_hardware_setup())', () => {
    const kvm = createSimKvm({ vendor: 'amd', cpu: { minSevAsid: 1, maxSevAsid: 8 } });
    expect(kvm.checkExtension(CAP.VM_TYPES) & (1 << 3)).toBe(0);
    expect(tryKvm(() => kvm.createVm('sev-es'))).toBe('EINVAL');
    const sevFd = kvm.openSevDevice();
    expect(tryKvm(() => sevCmd(kvm.createVm('default'), sevFd, SEV_CMD.ES_INIT))).toBe('ENOTTY');
  });
});

describe('SEV guests through the simulator API', () => {
  const C_BIT = 51;
  const DATA_GPA = 0x20_0000n;
  const DATA_GVA = 0x40_0000n;

  function sevGuestVm(kvm: Kvm, type: 'sev' | 'sev-es', sharedGhcbGpa?: bigint) {
    const vm = kvm.createVm(type);
    const size = 4 << 20;
    const mem = new Uint8Array(size);
    vm.setUserMemoryRegion({
      slot: 0,
      flags: 0,
      guestPhysAddr: 0n,
      memorySize: BigInt(size),
      userspace: mem,
    });
    const phys = new PhysicalMemory();
    phys.addRegion({ slot: 0, gpa: 0n, size: BigInt(size), backing: mem });
    let next = 0x10_0000n;
    const pt = new PageTables(phys, { levels: 4, physBits: 52, tagBit: C_BIT }, () => {
      const p = next;
      next += 4096n;
      return p;
    });
    pt.map(DATA_GVA, DATA_GPA, 4096n, { tagged: true });
    if (sharedGhcbGpa !== undefined) pt.map(DATA_GVA + 0x1000n, sharedGhcbGpa, 4096n, { tagged: false });
    return { vm, mem, pt };
  }

  function vcpuOf(vm: Vm, cr3: bigint, program: Parameters<ReturnType<Vm['createVcpu']>['setEntry']>[0]) {
    const v = vm.createVcpu(vm.vcpus.length);
    // vm_vcpu_add() -> vcpu_init_cpuid(): long-mode sregs need CPUID LM (a new vCPU has no CPUID).
    v.setCpuid(vm.kvm.getSupportedCpuid());
    v.setSregs({
      cr0: CR.CR0_PE | CR.CR0_PG | CR.CR0_WP,
      cr2: 0n,
      cr3,
      cr4: CR.CR4_PAE,
      efer: CR.EFER_LME | CR.EFER_LMA | CR.EFER_NXE,
    });
    v.setEntry(program);
    return v;
  }

  it('an SEV guest reads its encrypted memory in plaintext; the host sees ciphertext; after MOVE the destination still decrypts (arch/x86/kvm/svm/sev.c: sev_launch_update_data(), sev_migrate_from())', async () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const { vm, mem, pt } = sevGuestVm(kvm, 'sev');
    new DataView(mem.buffer).setBigUint64(Number(DATA_GPA) + 8, 0x0123456789abcdefn, true);
    sevCmd(vm, sevFd, SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
    const seen: bigint[] = [];
    vcpuOf(vm, pt.root, async (g) => {
      seen.push(g.readU64(DATA_GVA + 8n));
      g.writeU64(DATA_GVA + 16n, 42n);
    });
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_START, { handle: 0, policy: 0 });
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: { buffer: mem, offset: 0 }, len: 3 << 20 });
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_FINISH);
    expect(new DataView(mem.buffer).getBigUint64(Number(DATA_GPA) + 8, true)).not.toBe(0x0123456789abcdefn);
    expect((await vm.vcpus[0]!.run()).reason).toBe('hlt');
    expect(seen).toEqual([0x0123456789abcdefn]);
    expect(new DataView(mem.buffer).getBigUint64(Number(DATA_GPA) + 16, true)).not.toBe(42n);

    // Destination: same memory, same page tables; the key moves with the context.
    const dst = kvm.createVm('sev');
    dst.setUserMemoryRegion({
      slot: 0,
      flags: 0,
      guestPhysAddr: 0n,
      memorySize: BigInt(mem.length),
      userspace: mem,
    });
    const dstSeen: bigint[] = [];
    vcpuOf(dst, pt.root, async (g) => {
      dstSeen.push(g.readU64(DATA_GVA + 8n), g.readU64(DATA_GVA + 16n));
    });
    expect(move(dst, vm)).toBeUndefined();
    const de = await dst.vcpus[0]!.run();
    expect(
      de,
      JSON.stringify(de, (_k, v) => (typeof v === 'bigint' ? v.toString(16) : v)),
    ).toMatchObject({ reason: 'hlt' });
    expect(dstSeen).toEqual([0x0123456789abcdefn, 42n]);
    await expect(vm.vcpus[0]!.run()).rejects.toMatchObject({ code: 'EIO' });
    vm.close();
    dst.close();
    expect(leaks(kvm).ownedAsids).toEqual([]);
  });

  // arch/x86/kvm/svm/sev.c: sev_migrate_from() moves each vCPU's VMSA to the destination vCPU.
  it('sev_migrate_from: SEV-ES destination vCPUs run from the moved VMSA (CRs, EFER, GPRs) without the host setting them', async () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const { vm, mem, pt } = sevGuestVm(kvm, 'sev-es');
    new DataView(mem.buffer).setBigUint64(Number(DATA_GPA) + 8, 0xfeedn, true);
    sevCmd(vm, sevFd, SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
    const src = vcpuOf(vm, pt.root, async () => {});
    src.setRegs({ ...src.getRegs(), rbx: 0x1234n, rsi: 0x5678n });
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_START, { handle: 0, policy: POLICY_ES });
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: { buffer: mem, offset: 0 }, len: 3 << 20 });
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_VMSA);
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_FINISH);

    const dst = kvm.createVm('sev-es');
    dst.setUserMemoryRegion({
      slot: 0,
      flags: 0,
      guestPhysAddr: 0n,
      memorySize: BigInt(mem.length),
      userspace: mem,
    });
    const dv = dst.createVcpu(0);
    let seen: bigint[] = [];
    dv.setEntry(async (g) => {
      seen = [g.readCr!(0), g.readCr!(3), g.readCr!(4), g.regs.rbx, g.regs.rsi, g.readU64(DATA_GVA + 8n)];
    });
    expect(move(dst, vm)).toBeUndefined();
    const e = await dv.run();
    expect(
      e.reason,
      JSON.stringify(e, (_k, v) => (typeof v === 'bigint' ? v.toString(16) : v)),
    ).toBe('hlt');
    expect(seen).toEqual([CR.CR0_PE | CR.CR0_PG | CR.CR0_WP, pt.root, CR.CR4_PAE, 0x1234n, 0x5678n, 0xfeedn]);
    vm.close();
    dst.close();
  });

  it('after a move, a destination vCPU with no program of its own goes on with the source guest where it stopped', async () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const { vm, mem, pt } = sevGuestVm(kvm, 'sev');
    sevCmd(vm, sevFd, SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
    const steps: string[] = [];
    vcpuOf(vm, pt.root, async (g) => {
      steps.push(`source vCPU ${g.vcpuId}`);
      await g.hlt();
      g.writeU64(DATA_GVA + 16n, 7n);
      steps.push(`resumed, reads ${g.readU64(DATA_GVA + 16n)}`);
      await g.out(0x80, 1, 1);
    });
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_START, { handle: 0, policy: 0 });
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: { buffer: mem, offset: 0 }, len: 3 << 20 });
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_FINISH);
    expect((await vm.vcpus[0]!.run()).reason).toBe('hlt');
    const dst = kvm.createVm('sev');
    dst.setUserMemoryRegion({
      slot: 0,
      flags: 0,
      guestPhysAddr: 0n,
      memorySize: BigInt(mem.length),
      userspace: mem,
    });
    // Plain SEV: the VMM carries the CPUID and the registers itself (KVM_GET/SET_CPUID2, KVM_GET/SET_SREGS).
    const dv = dst.createVcpu(0);
    dv.setCpuid(vm.vcpus[0]!.getCpuid());
    dv.setSregs(vm.vcpus[0]!.getSregs());
    expect(move(dst, vm)).toBeUndefined();
    expect(await dv.run()).toMatchObject({ reason: 'io', port: 0x80 });
    expect(steps).toEqual(['source vCPU 0', 'resumed, reads 7']);
    vm.close();
    dst.close();
  });

  it('after LAUNCH_UPDATE_VMSA an sev-es VM refuses KVM_GET/SET_REGS with EINVAL; a legacy ES_INIT default VM does not (arch/x86/kvm/svm/sev.c: sev_launch_update_vmsa())', () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const vm = kvm.createVm('sev-es');
    sevCmd(vm, sevFd, SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
    const v = vm.createVcpu(0);
    const regs = v.getRegs();
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_START, { handle: 0, policy: POLICY_ES });
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_VMSA);
    expect(tryKvm(() => v.getRegs())).toBe('EINVAL');
    expect(tryKvm(() => v.setRegs(regs))).toBe('EINVAL');
    const legacy = sevVmCreate(kvm, sevFd, true);
    expect(tryKvm(() => legacy.vcpus[0]!.getRegs())).toBeUndefined();
    vm.close();
    legacy.close();
  });

  it('an SEV-ES guest OUT raises #VC 0x7B; its handler sends it through the GHCB and the host sees an io exit (arch/x86/kvm/svm/svm.c: io_interception())', async () => {
    const kvm = createSimKvm({ vendor: 'amd' });
    const sevFd = kvm.openSevDevice();
    const GHCB_GPA = 0x30_0000n;
    const { vm, mem, pt } = sevGuestVm(kvm, 'sev-es', GHCB_GPA);
    sevCmd(vm, sevFd, SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
    const vcs: number[] = [];
    const statusSeen: bigint[] = [];
    vcpuOf(vm, pt.root, async (g) => {
      statusSeen.push(g.rdmsr(SEV_MSR.MSR_AMD64_SEV));
      g.setExceptionHandler((f) => {
        vcs.push(f.vector, f.errorCode ?? -1);
        return 'skip';
      });
      await g.out(0x1000, 4, 0x1234);
      // The #VC handler's job, done inline: fill the GHCB (shared page) and VMGEXIT.
      const page = g.readBytes(DATA_GVA + 0x1000n, 4096);
      const ghcb = new Ghcb(page);
      ghcb.reset();
      ghcb.set('swExitCode', BigInt(SVM_EXIT.IOIO));
      ghcb.set(
        'swExitInfo1',
        encodeIoioExitInfo({ direction: 'out', size: 4, port: 0x1000, string: false, rep: false }),
      );
      ghcb.set('swExitInfo2', 0n);
      ghcb.set('rax', 0x1234n);
      g.writeBytes(DATA_GVA + 0x1000n, ghcb.bytes);
      g.wrmsr(SEV_MSR.MSR_AMD64_SEV_ES_GHCB, GHCB_GPA);
      await g.vmgexit();
    });
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_START, { handle: 0, policy: POLICY_ES });
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: { buffer: mem, offset: 0 }, len: 3 << 20 });
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_UPDATE_VMSA);
    sevCmd(vm, sevFd, SEV_CMD.LAUNCH_FINISH);
    const e: Exit = await vm.vcpus[0]!.run();
    expect(vcs).toEqual([VECTOR.VC, 0x7b]);
    expect(statusSeen).toEqual([3n]);
    expect(e).toMatchObject({ reason: 'io', direction: 'out', port: 0x1000, size: 4, count: 1 });
    if (e.reason === 'io') expect([...e.data]).toEqual([0x34, 0x12, 0, 0]);
    expect((await vm.vcpus[0]!.run()).reason).toBe('hlt');
    vm.close();
  });
});
