// Creation tiers, disposal, globals, address translation, exception routing, image reload, runs.
import { codeSegment64, dataSegment64, type Guest, unusableSegment, VECTOR } from '@kvmtest/kvm';
import { getUcall, UCALL, UcallError, ucallInit, ucallPoolOf } from '@kvmtest/ucall';
import { describe, expect, test } from 'vitest';
import {
  addrGva2Gpa,
  addrGva2Hva,
  assertExitReason,
  defineGuest,
  getKvm,
  guestDone,
  guestSync,
  KsftSkip,
  kvmFromEnv,
  lastUcall,
  readGuestGlobal,
  runUcall,
  runUcallExpect,
  setDefaultKvm,
  TestAssertionError,
  TestkitError,
  vcpuRun,
  vmCreate,
  vmCreateBarebones,
  vmCreateWithOneVcpu,
  vmCreateWithVcpus,
  vmInstallExceptionHandler,
  vmReloadImage,
  vmVaddrAlloc,
  vmVaddrAllocShared,
  writeGuestGlobal,
} from '../src/index.js';

describe('backend', () => {
  test('the default backend is the simulator; linux opens /dev/kvm or skips; unknown names are clear errors', () => {
    expect(getKvm().backend).toBe('sim');
    expect(kvmFromEnv({}).backend).toBe('sim');
    let linux: { backend: string; close?(): void } | undefined;
    try {
      linux = kvmFromEnv({ KVMTEST_BACKEND: 'linux' });
    } catch (e) {
      // No usable /dev/kvm here: a skip that names the errno, never a crash.
      expect(e).toBeInstanceOf(KsftSkip);
      expect((e as KsftSkip).reason).toMatch(/ENOENT|EACCES|ENOTTY/);
    }
    if (linux !== undefined) {
      expect(linux.backend).toBe('linux');
      linux.close?.();
    }
    expect(['sim', 'linux']).toContain(kvmFromEnv({ KVMTEST_BACKEND: 'auto' }).backend);
    expect(() => kvmFromEnv({ KVMTEST_BACKEND: 'qemu' })).toThrow(/names no backend \(known: sim, linux\)/);
  });

  test('a Kvm can be passed explicitly or installed as the default', () => {
    const kvm = kvmFromEnv({});
    using vm = vmCreateBarebones('default', { kvm });
    expect(vm.kvm).toBe(kvm);
    const prev = setDefaultKvm(kvm);
    try {
      expect(getKvm()).toBe(kvm);
    } finally {
      setDefaultKvm(prev);
    }
  });
});

describe('creation tiers', () => {
  test('a barebones VM is only the VM object; `using` closes it', () => {
    let raw: { closed: boolean } | undefined;
    {
      using vm = vmCreateBarebones();
      raw = vm.raw;
      expect(vm.barebones).toBe(true);
      expect(vm.ucallPool).toBeUndefined();
      const vcpu = vm.addVcpu(0);
      expect(vm.vcpus).toEqual([vcpu]);
      expect(() => vm.addVcpu(1, async () => {})).toThrow(/barebones VM has no memory/);
    }
    expect(raw.closed).toBe(true);
  });

  test('vmCreate builds slot 0, the image and the pool but no vCPUs; page tables map the image', () => {
    using vm = vmCreate('default', { nrVcpus: 2 });
    expect(vm.vcpus).toHaveLength(0);
    expect(vm.ucallPool).toBeDefined();
    const region = vm.space.memory.getRegion(0)!;
    expect(region.gpa).toBe(0n);
    const gva = vm.image.globalGva('ucall_pool');
    expect(addrGva2Gpa(vm, gva)).toBe(vm.image.symbol('ucall_pool').gpa);
    expect(vm.image.readGlobalU64('ucall_pool')).toBe(vm.ucallPool!.gva);
  });

  test('vCPUs get 64-bit paging state with CR3 at the page-table root and a stack', () => {
    using vm = vmCreateWithVcpus(2, async () => {}, { type: 'default', mode: '4-level' });
    const [a, b] = vm.vcpus;
    const sregs = a!.getSregs();
    expect(sregs.cr3).toBe(vm.space.pageTables.root);
    expect(sregs.cr0 & (1n << 31n)).not.toBe(0n);
    expect(sregs.efer & (1n << 10n)).not.toBe(0n);
    const rspA = a!.getRegs().rsp;
    const rspB = b!.getRegs().rsp;
    expect(rspA).not.toBe(rspB);
    expect(rspA >= 0xab6000n).toBe(true);
    expect(() => vm.addVcpu(1)).toThrow(/vCPU 1 already exists/);
  });

  // tools/testing/selftests/kvm/lib/x86/processor.c: vcpu_init_sregs().
  test('vcpu_init_sregs: vCPUs get a flat 64-bit CS at KERNEL_CS, flat DS/ES/GS at KERNEL_DS and an unusable LDTR', () => {
    using vm = vmCreateWithOneVcpu(async () => {}, { type: 'default', mode: '4-level' });
    const s = vm.vcpus[0]!.getSregs();
    expect(s.cs).toEqual(codeSegment64(0x08));
    expect(s.cs).toMatchObject({ l: 1, type: 11, base: 0n, limit: 0xffff_ffff, present: 1 });
    for (const d of [s.ds, s.es, s.gs]) expect(d).toEqual(dataSegment64(0x10));
    expect(s.ldt).toEqual(unusableSegment());
  });

  test('a 5-level shape runs with CR4.LA57 and a 5-level page-table root', async () => {
    using vm = vmCreateWithOneVcpu(
      async (g) => {
        await guestSync(g, 5n);
        await guestDone(g);
      },
      { type: 'default', mode: '5-level' },
    );
    expect(vm.vcpus[0]!.getSregs().cr4 & (1n << 12n)).not.toBe(0n);
    expect(vm.space.pageTables.params.levels).toBe(5);
    expect((await runUcall(vm.vcpus[0]!)).args[0]).toBe(5n);
    await runUcallExpect(vm.vcpus[0]!, UCALL.DONE);
  });

  test('a VM refuses more vCPUs than its ucall pool has slots, naming the option', () => {
    using vm = vmCreate('default', { ucallSlots: 1 });
    vm.addVcpu(0);
    expect(() => vm.addVcpu(1)).toThrow(/ucall pool has 1 slot\(s\)/);
  });

  test('a VM with ucall: false has no pool; runUcall refuses and vcpuRun reports the exit', async () => {
    using vm = vmCreateWithOneVcpu(async (g) => g.hlt(), 'default', { ucall: false });
    expect(vm.ucallPool).toBeUndefined();
    await expect(runUcall(vm.vcpus[0]!)).rejects.toThrow(/no ucall pool \(created with ucall: false\)/);
    const exit = await vcpuRun(vm.vcpus[0]!);
    expect(exit.reason).toBe('hlt');
    assertExitReason(vm.vcpus[0]!, 'hlt');
    expect(() => assertExitReason(vm.vcpus[0]!, 'io')).toThrow(TestAssertionError);
    expect(() => assertExitReason(vm.vcpus[0]!, 'io')).toThrow(
      /Wanted KVM exit reason: 2 \(io\), got: 5 \(hlt\)/,
    );
  });

  test('the MMIO ucall transport works where a test asks for it', async () => {
    using vm = vmCreateWithOneVcpu(
      async (g) => {
        await guestSync(g, 3n, 4n);
        await guestDone(g);
      },
      'default',
      { ucallTransport: 'mmio' },
    );
    const vcpu = vm.vcpus[0]!;
    const uc = await runUcall(vcpu);
    expect(vcpu.exit?.reason).toBe('mmio');
    expect(uc.args.slice(0, 2)).toEqual([3n, 4n]);
    await runUcallExpect(vcpu, UCALL.DONE);
  });

  test('a guest that stops without a ucall is a clear error naming the exit', async () => {
    using vm = vmCreateWithOneVcpu(async (g) => g.hlt(), 'default');
    const e = await runUcall(vm.vcpus[0]!).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(TestkitError);
    expect((e as TestkitError).code).toBe('NOT_A_UCALL');
    expect((e as Error).message).toMatch(/vCPU 0 of the default VM exited with hlt instead of a ucall/);
  });

  test('a guest that never exits ends in a clear report, not a hung host', async () => {
    using vm = vmCreateWithOneVcpu(async (g) => {
      for (;;) g.readU64(g.global('ucall_pool'));
    }, 'default');
    await expect(runUcall(vm.vcpus[0]!)).rejects.toThrow(
      /exited with intr \(guest budget spent\) instead of a ucall/,
    );
  });

  test('a forged ucall GPA is reported by the host decode', async () => {
    using vm = vmCreateWithOneVcpu(async (g) => {
      await g.out(0x1000, 4, 0x1234);
    }, 'default');
    await expect(runUcall(vm.vcpus[0]!)).rejects.toThrow(UcallError);
  });

  test('vcpuRun decodes the ucall once and keeps it for lastUcall', async () => {
    using vm = vmCreateWithOneVcpu(async (g) => {
      await guestSync(g, 7n);
      await guestDone(g);
    }, 'default');
    const vcpu = vm.vcpus[0]!;
    const exit = await vcpuRun(vcpu);
    expect(exit.reason).toBe('io');
    expect(lastUcall(vcpu)?.args[0]).toBe(7n);
    await runUcallExpect(vcpu, UCALL.DONE);
  });

  test('invalid options are refused before any VM exists', () => {
    expect(() => vmCreate('default', { nrVcpus: 0 })).toThrow(/use vmCreateBarebones\(\)/);
    expect(() => vmCreate('nope' as never)).toThrow(/unknown VM type "nope"/);
    expect(() => vmCreate('default', { globals: { ucall_pool: 1n } })).toThrow(/reserved/);
    expect(() => vmCreateWithVcpus(0, undefined)).toThrow(/vCPU count 0/);
  });
});

describe('guest memory and globals', () => {
  test('globals are per VM: two VMs of one image hold different values', async () => {
    const guest = defineGuest(
      async (g) => {
        await guestSync(g, g.readU64(g.global('value')));
      },
      { globals: { value: 1n } },
    );
    using a = vmCreateWithOneVcpu(guest, 'default');
    using b = vmCreateWithOneVcpu(guest, 'default');
    writeGuestGlobal(b, 'value', 2n);
    expect(readGuestGlobal(a, 'value')).toBe(1n);
    expect((await runUcall(a.vcpus[0]!)).args[0]).toBe(1n);
    expect((await runUcall(b.vcpus[0]!)).args[0]).toBe(2n);
    expect(() => writeGuestGlobal(a, 'missing', 1n)).toThrow(
      /"missing" is not declared .* \(declared: value\)/,
    );
  });

  test('vmVaddrAlloc memory is reachable by the guest; shared memory is visible to the host', async () => {
    using vm = vmCreateWithOneVcpu(
      defineGuest(
        async (g) => {
          const p = g.readU64(g.global('buf'));
          g.writeU64(p, g.readU64(p) + 1n);
          await guestDone(g);
        },
        { globals: { buf: 0n } },
      ),
      'default',
    );
    const gva = vmVaddrAllocShared(vm, 4096);
    const priv = vmVaddrAlloc(vm, 100n);
    expect(priv).not.toBe(gva);
    writeGuestGlobal(vm, 'buf', gva);
    const hva = addrGva2Hva(vm, gva);
    new DataView(hva.buffer.buffer, hva.buffer.byteOffset + hva.offset, 8).setBigUint64(0, 41n, true);
    await runUcallExpect(vm.vcpus[0]!, UCALL.DONE);
    expect(new DataView(hva.buffer.buffer, hva.buffer.byteOffset + hva.offset, 8).getBigUint64(0, true)).toBe(
      42n,
    );
    expect(() => vmVaddrAlloc(vm, 0)).toThrow(/size 0 must be a positive integer/);
  });
});

describe('exception handlers', () => {
  test('a handler installed for a vector on one VM fixes that VM’s guest; the other VM reports UNHANDLED', async () => {
    const guest = async (g: Guest) => {
      const v = g.readU64(0xbad_0000n); // skipped by the handler: reads as 0
      await guestSync(g, v);
      await guestDone(g);
    };
    using fixed = vmCreateWithOneVcpu(guest, 'default');
    using plain = vmCreateWithOneVcpu(guest, 'default');
    const seen: number[] = [];
    vmInstallExceptionHandler(fixed, VECTOR.PF, (frame) => {
      seen.push(frame.vector);
      return 'skip';
    });
    const uc = await runUcall(fixed.vcpus[0]!);
    expect([uc.cmd, uc.args[0]]).toEqual([UCALL.SYNC, 0n]);
    expect(seen).toEqual([VECTOR.PF]);
    await expect(runUcall(plain.vcpus[0]!)).rejects.toThrow(/Unhandled exception #PF/);
    vmInstallExceptionHandler(fixed, VECTOR.PF, undefined);
    expect(() => vmInstallExceptionHandler(fixed, 256, undefined)).toThrow(
      /vector 256 must be an integer in 0–255/,
    );
  });
});

describe('image reload after ucall init', () => {
  test('reloading the image re-applies the pool and the handler table; a second ucallInit is refused', async () => {
    const guest = defineGuest(
      async (g) => {
        g.readU64(0xbad_0000n);
        await guestSync(g, g.readU64(g.global('value')));
        await guestDone(g);
      },
      { globals: { value: 5n } },
    );
    using vm = vmCreateWithOneVcpu(guest, 'default');
    vmInstallExceptionHandler(vm, VECTOR.PF, () => 'skip');
    writeGuestGlobal(vm, 'value', 9n);
    const before = vm.image.globalGva('ucall_pool');
    vmReloadImage(vm);
    expect(vm.image.globalGva('ucall_pool')).not.toBe(before);
    expect(vm.image.readGlobalU64('ucall_pool')).toBe(vm.ucallPool!.gva);
    // The reload brought the globals back to their initial values, as an ELF reload would.
    expect(readGuestGlobal(vm, 'value')).toBe(5n);
    const uc = await runUcall(vm.vcpus[0]!);
    expect([uc.cmd, uc.args[0]]).toEqual([UCALL.SYNC, 5n]);
    await runUcallExpect(vm.vcpus[0]!, UCALL.DONE);
    expect(() => ucallInit({ vm: vm.raw, space: vm.space, image: vm.image })).toThrow(UcallError);
    expect(ucallPoolOf(vm.raw)).toBe(vm.ucallPool);
  });
});

describe('stale-vcpu-ebadf', () => {
  test("a closed VM's vCPU never decodes the ucall of the VM that came after it", async () => {
    const guestOf = (tag: bigint) => async (g: Guest) => {
      await guestSync(g, tag);
      await guestDone(g);
    };
    const a = vmCreateWithOneVcpu(guestOf(0xaan));
    const va = a.vcpus[0]!;
    expect((await runUcall(va)).args[0]).toBe(0xaan);
    a.close();
    using b = vmCreateWithOneVcpu(guestOf(0xbbn));
    expect((await runUcall(b.vcpus[0]!)).args[0]).toBe(0xbbn);
    expect(() => getUcall(va)).toThrow(expect.objectContaining({ name: 'KvmError', code: 'EBADF' }));
  });
});
