// A TD from its shape's type alone (selftests' TDX series; arch/x86/kvm/vmx/tdx.c: tdx_td_init(), tdx_td_finalize()): the kit
// creates and initializes it (CAPABILITIES, split irqchip, INIT_VM, vCPUs + INIT_VCPU), launches it
// before the first run (PRIVATE attributes, measured INIT_MEM_REGION, FINALIZE) and its guest boots
// from the boot parameters — paging off to long mode — before running the test's program.
import { TdxMrtd } from '@kvmtest/coco';
import { CR, KvmError } from '@kvmtest/kvm';
import { tdxReport, tdxVcpuReport } from '@kvmtest/kvm-sim';
import { UCALL } from '@kvmtest/ucall';
import { describe, expect, test } from 'vitest';
import {
  defineGuest,
  guestDone,
  guestSync,
  lastUcall,
  runUcall,
  sevLaunchStart,
  TD_BOOT_PARAMETERS_GPA,
  TD_BOOT_PARAMS_LAYOUT,
  TestkitError,
  type TestVm,
  vmCreate,
  vmCreateWithOneVcpu,
  vmCreateWithVcpus,
  vmLaunch,
  vmTdxLaunch,
  writeGuestGlobal,
} from '../src/index.js';

/** The MRTD a launch of `vm` must produce: TDH.MEM.PAGE.ADD + TDH.MR.EXTEND of every private page, in launch order. */
function expectedMrtd(vm: TestVm): Uint8Array {
  const m = new TdxMrtd();
  const { space } = vm;
  for (const region of space.memory.regions())
    for (const r of space.allocator.protectedRanges(region.slot))
      for (let i = 0; i < r.pages; i++) {
        const gpa = r.gpa + BigInt(i) * 4096n;
        const off = region.offsetOf(gpa);
        m.addPage(gpa).extendPage(gpa, region.backing.slice(off, off + 4096));
      }
  return m.digest();
}

function privatePages(vm: TestVm): number {
  const { space } = vm;
  let n = 0;
  for (const region of space.memory.regions())
    for (const r of space.allocator.protectedRanges(region.slot)) n += r.pages;
  return n;
}

// The guest reports the control state its boot code loaded: CR0, CR3, CR4 and its stack pointer.
const bootReport = async (g: Parameters<typeof guestDone>[0]) => {
  await guestSync(g, g.readCr!(0), g.readCr!(3), g.readCr!(4), g.regs.rsp);
  await guestDone(g);
};

describe('a TD created from its type alone (vmCreateWithOneVcpu(guest, { type: "tdx" }))', () => {
  test('creation runs INIT_VM and INIT_VCPU; the launch before the first run measures every private page and finalizes', async () => {
    using vm = vmCreateWithOneVcpu(bootReport, { type: 'tdx' });
    const vcpu = vm.vcpus[0]!;
    const before = tdxReport(vm.raw)!;
    expect(before.state).toBe('initialized');
    expect([before.gpaw, before.sharedBit]).toEqual([48, 47]);
    expect(tdxVcpuReport(vcpu)).toMatchObject({ initialized: true, index: 0 });
    // The expected MRTD is computed over the host's staging copy, exactly what INIT_MEM_REGION copies.
    const mrtd = expectedMrtd(vm);
    const pages = privatePages(vm);
    expect((await runUcall(vcpu)).cmd).toBe(UCALL.SYNC);
    const after = tdxReport(vm.raw)!;
    expect(after.state).toBe('runnable');
    expect(after.finalized).toBe(true);
    expect(after.pagesAdded).toBe(pages);
    expect(after.pagesMeasured).toBe(pages);
    expect(Buffer.from(after.mrtd!).toString('hex')).toBe(Buffer.from(mrtd).toString('hex'));
    expect(vm.launchStage).toBe('finished');
  });

  test('two TDs of the same guest get the same MRTD; a different global value gives another one', async () => {
    const guest = defineGuest(guestDone, { globals: { knob: 0n } });
    const launched = (knob: bigint) => {
      const vm = vmCreateWithOneVcpu(guest, 'tdx');
      writeGuestGlobal(vm, 'knob', knob);
      vmLaunch(vm);
      const m = Buffer.from(tdxReport(vm.raw)!.mrtd!).toString('hex');
      vm.close();
      return m;
    };
    expect(launched(1n)).toBe(launched(1n));
    expect(launched(2n)).not.toBe(launched(1n));
  });

  test('the guest boots itself: paging on with the kit page tables (CR0.PG|PE|NE|WP, CR4.PAE|MCE) and its own stack', async () => {
    using vm = vmCreateWithOneVcpu(bootReport, 'tdx');
    const uc = await runUcall(vm.vcpus[0]!);
    const [cr0, cr3, cr4, rsp] = uc.args;
    expect(cr0).toBe(CR.CR0_PE | CR.CR0_NE | CR.CR0_ET | CR.CR0_WP | CR.CR0_PG);
    expect(cr3).toBe(vm.space.pageTables.root);
    expect(cr4).toBe(CR.CR4_PAE | CR.CR4_MCE);
    expect(rsp! % 8n).toBe(0n);
    expect(rsp! > 0xab6000n).toBe(true);
    expect((await runUcall(vm.vcpus[0]!)).cmd).toBe(UCALL.DONE);
  });

  test('a 5-level shape gets GPAW 52 (S-bit 51) and the guest runs with CR4.LA57', async () => {
    using vm = vmCreateWithOneVcpu(bootReport, { type: 'tdx', mode: '5-level' });
    expect(tdxReport(vm.raw)).toMatchObject({ gpaw: 52, sharedBit: 51 });
    const uc = await runUcall(vm.vcpus[0]!);
    expect(uc.args[2]! & CR.CR4_LA57).toBe(CR.CR4_LA57);
  });

  test('the boot parameters are private, measured and identity-mapped at TD_BOOT_PARAMETERS_GPA', () => {
    using vm = vmCreateWithVcpus(2, bootReport, 'tdx');
    const { space } = vm;
    expect(space.isPrivate(TD_BOOT_PARAMETERS_GPA)).toBe(true);
    expect(space.gvaToGpa(TD_BOOT_PARAMETERS_GPA)).toBe(TD_BOOT_PARAMETERS_GPA);
    expect(space.pageTables.walk(TD_BOOT_PARAMETERS_GPA)).toMatchObject({ ok: true, tagged: false });
    const region = space.memory.findRegion(TD_BOOT_PARAMETERS_GPA)!;
    const view = new DataView(region.backing.buffer, region.backing.byteOffset);
    expect(view.getUint32(TD_BOOT_PARAMS_LAYOUT.nrVcpus, true)).toBe(2);
    expect(view.getBigUint64(TD_BOOT_PARAMS_LAYOUT.cr3, true)).toBe(space.pageTables.root);
    const second = TD_BOOT_PARAMS_LAYOUT.perVcpu + TD_BOOT_PARAMS_LAYOUT.perVcpuSize;
    expect(view.getBigUint64(second + TD_BOOT_PARAMS_LAYOUT.vcpuId, true)).toBe(1n);
  });

  test('the ucall pool is shared: its leaf PTEs carry the S-bit and the GPA the guest sends is untagged', async () => {
    using vm = vmCreateWithOneVcpu(bootReport, 'tdx');
    const pool = vm.ucallPool!;
    const walk = vm.space.pageTables.walk(pool.gva);
    expect(walk).toMatchObject({ ok: true, tagged: true });
    expect(vm.space.isPrivate(pool.gpa)).toBe(false);
    const vcpu = vm.vcpus[0]!;
    await runUcall(vcpu);
    const uc = lastUcall(vcpu)!;
    expect(uc.gpa).toBe(pool.slotGpa(uc.slot!));
    expect(uc.gpa >> 47n).toBe(0n);
  });
});

describe('the host cannot reach a launched TD’s private memory or registers', () => {
  test('writeGuestGlobal writes the staging copy before the launch and is refused after it', async () => {
    const guest = defineGuest(
      async (g) => {
        await guestSync(g, g.readU64(g.global('value')));
        await guestDone(g);
      },
      { globals: { value: 0n } },
    );
    using vm = vmCreateWithOneVcpu(guest, 'tdx');
    writeGuestGlobal(vm, 'value', 0x5eedn);
    expect((await runUcall(vm.vcpus[0]!)).args[0]).toBe(0x5eedn);
    const e = (() => {
      try {
        writeGuestGlobal(vm, 'value', 1n);
      } catch (x) {
        return x as TestkitError;
      }
    })();
    expect(e).toBeInstanceOf(TestkitError);
    expect(e?.code).toBe('LAUNCHED');
    expect(e?.message).toMatch(/guest_memfd, which the host can neither read nor write/);
  });

  test('KVM_GET_REGS / KVM_SET_SREGS on a TD vCPU are EINVAL (protected state: x86.c kvm_arch_vcpu_ioctl_get_regs())', () => {
    using vm = vmCreateWithOneVcpu(guestDone, 'tdx');
    const vcpu = vm.vcpus[0]!;
    expect(() => vcpu.getRegs()).toThrow(KvmError);
    expect(() => vcpu.setSregs({ cr0: 0n, cr2: 0n, cr3: 0n, cr4: 0n, efer: 0n })).toThrow(/EINVAL|protected/);
  });
});

describe('launch rules the kit enforces for a TD', () => {
  test('a TD without vCPUs cannot launch: KVM_TDX_INIT_MEM_REGION is a vCPU ioctl', () => {
    using vm = vmCreate('tdx');
    const e = (() => {
      try {
        vmTdxLaunch(vm);
      } catch (x) {
        return x as TestkitError;
      }
    })();
    expect(e?.code).toBe('NO_VCPU');
  });

  test('SEV launch commands on a TD are refused by name, not sent to the kernel', () => {
    using vm = vmCreateWithOneVcpu(guestDone, 'tdx');
    expect(() => sevLaunchStart(vm)).toThrow(/SEV launch commands do not apply to a TD/);
  });

  test('vCPUs cannot be added once the launch has begun (the TD is finalized)', async () => {
    using vm = vmCreateWithOneVcpu(guestDone, 'tdx', { nrVcpus: 2 });
    await runUcall(vm.vcpus[0]!);
    expect(() => vm.addVcpu(1, guestDone)).toThrow(/launch has begun/);
  });
});
