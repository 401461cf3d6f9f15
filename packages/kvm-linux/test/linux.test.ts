// The linux backend on the real /dev/kvm: errnos the kernel gives, and tiny real-mode guests.

import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CAP, DEVICE_ATTR, type Exit, isKvmError, KvmError, MEM_FLAG, tryKvm } from '@kvmtest/kvm';
/** Runs `fixtures/<name>` in a child Node process (from source); its outcome, whole, for assertions. */
function runFixture(name: string, timeout: number) {
  const r = spawnSync(
    process.execPath,
    ['--conditions=@kvmtest/source', '--import', 'tsx', join(import.meta.dirname, 'fixtures', name)],
    { encoding: 'utf8', timeout },
  );
  return { error: r.error, status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

import { afterEach, describe, expect, it } from 'vitest';
import { type LinuxKvm, type LinuxVm, openLinuxKvm } from '../src/index.js';
import { CODE, kvmAvailable, realModeGuest } from './helpers.js';

/** The host's /dev/kvm is PVM when the CPU has neither VMX nor SVM (see the README). */
const pvm = !/^flags\s*:.*\b(vmx|svm)\b/m.test(readFileSync('/proc/cpuinfo', 'utf8'));

const opened: { kvm: LinuxKvm }[] = [];
afterEach(() => {
  for (const o of opened.splice(0)) o.kvm.close();
});
function guest(code: readonly number[], runTimeoutMs?: number) {
  const g = realModeGuest(code, runTimeoutMs === undefined ? {} : { runTimeoutMs });
  opened.push(g);
  return g;
}
function emptyVm(): { kvm: LinuxKvm; vm: LinuxVm; mem: Uint8Array } {
  const kvm = openLinuxKvm();
  opened.push({ kvm });
  return { kvm, vm: kvm.createVm(), mem: kvm.allocateUserMemory(0x10000).bytes };
}
function expectExit<R extends Exit['reason']>(e: Exit, reason: R): Extract<Exit, { reason: R }> {
  expect(e.reason).toBe(reason);
  return e as Extract<Exit, { reason: R }>;
}

describe('openLinuxKvm', () => {
  it('names ENOENT when the device does not exist', () => {
    const e = (() => {
      try {
        openLinuxKvm({ path: '/nonexistent/kvm' });
      } catch (err) {
        return err;
      }
    })();
    expect(isKvmError(e, 'ENOENT')).toBe(true);
    expect(String(e)).toMatch(/does not exist/);
  });

  it('names EACCES when the process may not open the device (run as nobody)', (ctx) => {
    const mode = statSync('/dev/kvm', { throwIfNoEntry: false })?.mode ?? 0;
    // Only checkable as root (to drop to uid 65534) on a device others may not open.
    if (process.getuid?.() !== 0 || (mode & 0o006) !== 0) ctx.skip();
    const r = spawnSync(
      process.execPath,
      [
        '--conditions=@kvmtest/source',
        '--import',
        'tsx',
        join(import.meta.dirname, 'fixtures', 'open-kvm.ts'),
      ],
      { encoding: 'utf8', uid: 65534, gid: 65534, timeout: 20_000 },
    );
    // The child could not even start as nobody (a checkout others cannot read): nothing to check.
    if (r.status !== 0 || r.stdout === '') ctx.skip();
    expect(r.stdout).toMatch(/^EACCES: .*may not open it/);
  });

  it('names ENOTTY when the path is not a KVM device', () => {
    expect(() => openLinuxKvm({ path: '/dev/null' })).toThrow(/ENOTTY.*not a KVM device/);
  });
});

describe.skipIf(!kvmAvailable)('system and VM ioctls on /dev/kvm', () => {
  it('answers the API version and capabilities on both descriptors', () => {
    const { kvm, vm } = emptyVm();
    expect(kvm.getApiVersion()).toBe(12);
    expect(kvm.checkExtension(CAP.USER_MEMORY)).toBe(1);
    expect(kvm.checkExtension(CAP.IMMEDIATE_EXIT)).toBe(1);
    expect(kvm.checkExtension(CAP.MAX_VCPU_ID)).toBeGreaterThan(0);
    expect(vm.checkExtension(CAP.MAX_VCPUS)).toBeGreaterThan(0);
    // KVM_CAP_VM_TYPES is a bitmask with bit 0 (DEFAULT) set where the kernel knows the cap.
    const types = kvm.checkExtension(CAP.VM_TYPES);
    if (types !== 0) expect(types & 1).toBe(1);
    expect(kvm.checkExtension(0xffff_fff0)).toBe(0);
  });

  it('returns KVM_GET_SUPPORTED_CPUID entries and takes them back through SET/GET_CPUID2', () => {
    const { kvm, vm } = emptyVm();
    const cpuid = kvm.getSupportedCpuid();
    const leaf0 = cpuid.find((e) => e.function === 0);
    expect(leaf0).toBeDefined();
    const vcpu = vm.createVcpu(0);
    vcpu.setCpuid(cpuid);
    expect(vcpu.getCpuid().length).toBe(cpuid.length);
  });

  it('fails VM types the host lacks with EINVAL, and /dev/sev or SEV attributes with the kernel errno', () => {
    const { kvm } = emptyVm();
    const types = kvm.checkExtension(CAP.VM_TYPES);
    if ((types & (1 << 2)) === 0) expect(tryKvm(() => kvm.createVm('sev'))).toBe('EINVAL');
    expect(tryKvm(() => kvm.createVm(99))).toBe('EINVAL');
    const vm = kvm.createVm(0);
    expect(vm.type).toBe('default');
    expect(kvm.isFdOpen(vm.fd)).toBe(true);
    const sev = tryKvm(() => kvm.openSevDevice());
    expect(sev === undefined || sev === 'ENOENT' || sev === 'EACCES').toBe(true);
    expect(
      tryKvm(() => kvm.getDeviceAttr(DEVICE_ATTR.X86_GRP_SEV, DEVICE_ATTR.X86_SEV_VMSA_FEATURES)),
    ).not.toBe('EFAULT');
  });

  it('gives the kernel errnos for memslot rules', () => {
    const { vm, mem } = emptyVm();
    const region =
      (slot: number, gpa: bigint, bytes: Uint8Array, flags = 0) =>
      () =>
        vm.setUserMemoryRegion({
          slot,
          flags,
          guestPhysAddr: gpa,
          memorySize: BigInt(bytes.length),
          userspace: bytes,
        });
    expect(tryKvm(region(0, 0n, mem, 1 << 5))).toBe('EINVAL'); // unknown flag
    expect(tryKvm(region(0, 0x800n, mem.subarray(0, 0x1000)))).toBe('EINVAL'); // GPA not page-aligned
    expect(tryKvm(region(0, 0n, mem.subarray(8, 0x1008)))).toBe('EINVAL'); // userspace_addr not page-aligned
    expect(tryKvm(region(40000, 0x100000n, mem.subarray(0, 0x1000)))).toBe('EINVAL'); // slot id too big
    expect(tryKvm(region(1 << 16, 0x100000n, mem.subarray(0, 0x1000)))).toBe('EINVAL'); // no SMM address space here
    expect(tryKvm(region(0, 0n, mem.subarray(0, 0x8000)))).toBeUndefined();
    expect(tryKvm(region(1, 0x4000n, mem.subarray(0x8000)))).toBe('EEXIST'); // overlaps slot 0
    expect(tryKvm(region(1, 0x8000n, mem.subarray(0x8000), MEM_FLAG.READONLY))).toBeUndefined();
    expect(tryKvm(region(1, 0x8000n, mem.subarray(0x8000)))).toBe('EINVAL'); // READONLY cannot be toggled
    expect(
      tryKvm(() =>
        vm.setUserMemoryRegion({
          slot: 5,
          flags: 0,
          guestPhysAddr: 0n,
          memorySize: 0n,
          userspace: undefined,
        }),
      ),
    ).toBe('EINVAL'); // deleting a slot that does not exist
    expect(tryKvm(region(2, 0x100000n, new Uint8Array(4096)))).toBe('EFAULT'); // not backend memory
  });

  it('uses KVM_SET_USER_MEMORY_REGION where the kernel lacks REGION2 (GUEST_MEMFD then refused by the kernel)', () => {
    const { kvm, vm, mem } = emptyVm();
    (kvm as { hasUserMemory2: boolean }).hasUserMemory2 = false; // as on a kernel before 6.8
    const region = { slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x10000n, userspace: mem };
    expect(tryKvm(() => vm.setUserMemoryRegion(region))).toBeUndefined();
    expect(
      tryKvm(() =>
        vm.setUserMemoryRegion({ ...region, slot: 1, flags: MEM_FLAG.GUEST_MEMFD, guestPhysAddr: 0x100000n }),
      ),
    ).toBe('EINVAL');
    expect(vm.hostBytes(0x1000n, 4)?.byteOffset).toBe(0x1000);
  });

  it('gives EEXIST for a duplicate vCPU id and EINVAL for an id at KVM_CAP_MAX_VCPU_ID', () => {
    const { kvm, vm } = emptyVm();
    vm.createVcpu(0);
    expect(tryKvm(() => vm.createVcpu(0))).toBe('EEXIST');
    expect(tryKvm(() => vm.createVcpu(kvm.checkExtension(CAP.MAX_VCPU_ID)))).toBe('EINVAL');
    expect(vm.vcpus.map((v) => v.id)).toEqual([0]);
  });

  it('answers guest_memfd, memory attributes, encryption ops and unknown caps with the kernel errno', () => {
    const { kvm, vm, mem } = emptyVm();
    if (kvm.checkExtension(CAP.GUEST_MEMFD) === 0)
      expect(tryKvm(() => vm.createGuestMemfd(0x1000n))).toBe('ENOTTY');
    if (kvm.checkExtension(CAP.MEMORY_ATTRIBUTES) === 0)
      expect(['ENOTTY', 'EINVAL']).toContain(
        tryKvm(() => vm.setMemoryAttributes({ address: 0n, size: 0x1000n, attributes: 8n })),
      );
    expect(vm.getMemoryAttributes(0n)).toBe(0n);
    if ((kvm.checkExtension(CAP.VM_TYPES) & ~1) === 0) {
      expect(tryKvm(() => vm.memEncryptOp(undefined))).toBe('ENOTTY');
      expect(tryKvm(() => vm.memEncryptOp({ id: 0 }))).toBe('ENOTTY');
      expect(tryKvm(() => vm.memEncryptRegRegion({ addr: { buffer: mem, offset: 0 }, size: 4096n }))).toBe(
        'ENOTTY',
      );
    }
    expect(tryKvm(() => vm.enableCap(0xffff))).toBe('EINVAL');
  });

  it('round-trips registers, partial sregs (read-modify-write) and an MSR', () => {
    const { vm } = emptyVm();
    const vcpu = vm.createVcpu(0);
    const regs = vcpu.getRegs();
    expect(regs.rip).toBe(0xfff0n); // the reset vector's IP
    vcpu.setRegs({ ...regs, rax: 0x1234_5678_9abc_def0n, rflags: 0x202n });
    expect(vcpu.getRegs().rax).toBe(0x1234_5678_9abc_def0n);
    const before = vcpu.getSregsRaw();
    const s = vcpu.getSregs();
    vcpu.setSregs({ ...s, cr2: 0xdead_b000n });
    expect(vcpu.getSregs().cr2).toBe(0xdead_b000n);
    const after = vcpu.getSregsRaw();
    expect(after.subarray(0, 224)).toEqual(before.subarray(0, 224)); // segments and tables kept
    vcpu.setMsr(0x174, 0x10n); // IA32_SYSENTER_CS
    expect(vcpu.getMsr(0x174)).toBe(0x10n);
    expect(tryKvm(() => vcpu.getMsr(0x1234_5678))).toBe('EINVAL');
  });
});

describe.skipIf(!kvmAvailable)('real-mode guests', () => {
  it('OUT, IN with host data read back, HLT', async () => {
    // mov dx,0x10; mov al,0x42; out dx,al; in al,dx; mov [0x2000],al; hlt
    const { vcpu, mem } = guest([0xba, 0x10, 0x00, 0xb0, 0x42, 0xee, 0xec, 0xa2, 0x00, 0x20, 0xf4]);
    const out = expectExit(await vcpu.run(), 'io');
    expect(out).toMatchObject({ direction: 'out', port: 0x10, size: 1, count: 1 });
    expect([...out.data]).toEqual([0x42]);
    const inn = expectExit(await vcpu.run(), 'io');
    expect(inn).toMatchObject({ direction: 'in', port: 0x10, size: 1, count: 1 });
    inn.data[0] = 0x99;
    expect(vcpu.exit).toBe(inn);
    expectExit(await vcpu.run(), 'hlt');
    expect(mem[0x2000]).toBe(0x99);
    expect(vcpu.getRegs().rip).toBe(BigInt(CODE + 11));
  });

  it('MMIO write and read outside every memslot, the read completed with host data', async () => {
    // mov ax,0x2000; mov es,ax; mov byte [es:0],0x55; mov al,[es:1]; mov [0x3000],al; hlt
    const code = [0xb8, 0x00, 0x20, 0x8e, 0xc0, 0x26, 0xc6, 0x06, 0x00, 0x00, 0x55, 0x26, 0xa0, 0x01, 0x00];
    const { vcpu, mem } = guest([...code, 0xa2, 0x00, 0x30, 0xf4]);
    const w = expectExit(await vcpu.run(), 'mmio');
    expect(w).toMatchObject({ gpa: 0x20000n, isWrite: true, len: 1 });
    expect([...w.data]).toEqual([0x55]);
    const r = expectExit(await vcpu.run(), 'mmio');
    expect(r).toMatchObject({ gpa: 0x20001n, isWrite: false, len: 1 });
    r.data[0] = 0xa7;
    expectExit(await vcpu.run(), 'hlt');
    expect(mem[0x3000]).toBe(0xa7);
  });

  it('a write to a read-only memslot exits as MMIO; a read of it does not exit', async () => {
    // mov ax,0x1000; mov es,ax; mov al,[es:0x10]; mov [es:0],al; hlt  (ES base 0x10000: the RO slot)
    const { kvm, vm, vcpu } = guest([
      0xb8, 0x00, 0x10, 0x8e, 0xc0, 0x26, 0xa0, 0x10, 0x00, 0x26, 0xa2, 0x00, 0x00, 0xf4,
    ]);
    const ro = kvm.allocateUserMemory(0x1000).bytes;
    ro[0x10] = 0x77;
    vm.setUserMemoryRegion({
      slot: 1,
      flags: MEM_FLAG.READONLY,
      guestPhysAddr: 0x10000n,
      memorySize: 0x1000n,
      userspace: ro,
    });
    const w = expectExit(await vcpu.run(), 'mmio');
    expect(w).toMatchObject({ gpa: 0x10000n, isWrite: true, len: 1 });
    expect([...w.data]).toEqual([0x77]);
    expectExit(await vcpu.run(), 'hlt');
    expect(ro[0]).toBe(0);
  });

  it('immediate_exit fails KVM_RUN with EINTR and leaves the previous exit untouched', async () => {
    const { vcpu } = guest([0xf4, 0xf4]);
    const hlt = await vcpu.run();
    await expect(vcpu.run({ immediateExit: true })).rejects.toThrow(/EINTR/);
    expect(vcpu.exit).toBe(hlt);
    expectExit(await vcpu.run(), 'hlt');
  });

  it('a kicked vCPU fails its next KVM_RUN with EINTR, once, and then runs on', async () => {
    const { vcpu } = guest([0xf4, 0xf4]);
    const hlt = await vcpu.run();
    vcpu.kick();
    await expect(vcpu.run()).rejects.toThrow(/EINTR/);
    expect(vcpu.exit).toBe(hlt);
    expectExit(await vcpu.run(), 'hlt');
  });

  it('an endless loop ends in a watchdog timeout naming the vCPU and the deadline', async () => {
    const { vcpu } = guest([0xeb, 0xfe], 200);
    const err = await vcpu.run().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KvmError);
    expect((err as KvmError).code).toBe('EINTR');
    expect((err as KvmError).details).toMatchObject({ watchdog: true, vcpu: 0, timeoutMs: 200 });
    expect(String(err)).toMatch(/vCPU 0 .*200 ms deadline/);
    expect(vcpu.exit).toEqual({ reason: 'intr', budgetExhausted: true });
  });

  it('a guest stuck in VMCALL ends in a timeout too (per-run deadline)', async () => {
    const { vcpu } = guest([0x0f, 0x01, 0xc1, 0xf4]);
    const err = await vcpu.run({ timeoutMs: 150 } as never).catch((e: unknown) => e);
    // PVM (no vmx/svm in the CPU flags) never completes VMCALL: the watchdog ends the run. On
    // mainline KVM the hypercall returns -KVM_ENOSYS in RAX and the HLT follows.
    if (pvm) {
      expect(err).toBeInstanceOf(KvmError);
      expect((err as KvmError).details).toMatchObject({ watchdog: true, timeoutMs: 150 });
    } else expect((err as Exit).reason).toBe('hlt');
  });

  it('a process whose guest never exits ends anyway: the run times out and nothing keeps it alive', () => {
    // spawnSync's own timeout would show as `error`; the whole result is shown on a failure.
    expect(runFixture('stuck-guest.ts', 20_000)).toMatchObject({
      error: undefined,
      status: 0,
      stdout: expect.stringMatching(/caught: .*watchdog: vCPU 0 .*100 ms deadline/),
    });
  });

  it('a worker thread may run vCPUs too; process.exit() during its 60 s run does not wait for the deadline', () => {
    // `error`: killed by spawnSync's timeout (the exit waited for the worker); `signal`: SIGUSR2 killed it.
    expect(runFixture('worker-guest.ts', 30_000)).toMatchObject({
      error: undefined,
      status: 0,
      signal: null,
      stdout: expect.stringMatching(
        /caught in worker: .*watchdog: vCPU 0 .*300 ms deadline(.|\n)*second run/,
      ),
    });
  });

  it('two vCPUs of one VM run one at a time, each its own code', async () => {
    const { vm, mem } = guest([0xb0, 0x01, 0xe6, 0x20, 0xf4]); // mov al,1; out 0x20,al; hlt
    mem.set([0xb0, 0x02, 0xe6, 0x21, 0xf4], 0x1800); // mov al,2; out 0x21,al; hlt
    const v1 = vm.createVcpu(1);
    const s = vm.vcpus[0]!.getSregsRaw();
    v1.setSregsRaw(s);
    v1.setRegs({ ...v1.getRegs(), rip: 0x1800n, rflags: 2n });
    const a = expectExit(await vm.vcpus[0]!.run(), 'io');
    const b = expectExit(await v1.run(), 'io');
    expect([a.port, a.data[0], b.port, b.data[0]]).toEqual([0x20, 1, 0x21, 2]);
  });

  it('a vCPU whose VM fd is closed keeps running (the kernel keeps the VM while a vCPU fd is open)', async () => {
    const { kvm, vm, vcpu, mem } = guest([0xb0, 0x07, 0xe6, 0x20, 0xf4]);
    kvm.closeFd(vm.fd);
    expect(vm.closed).toBe(true);
    expect(tryKvm(() => vm.checkExtension(CAP.USER_MEMORY))).toBe('EBADF');
    const e = expectExit(await vcpu.run(), 'io');
    expect(e.data[0]).toBe(7);
    expect(vm.hostBytes(BigInt(CODE), 1)?.[0]).toBe(mem[CODE]);
    kvm.closeFd(vcpu.fd);
    expect(vm.hostBytes(BigInt(CODE), 1)).toBeUndefined(); // the VM is gone: its memory is let go
  });

  it('a closed VM and its vCPUs fail with EBADF', async () => {
    const { kvm, vm, vcpu } = guest([0xf4]);
    const vmFd = vm.fd;
    const vcpuFd = vcpu.fd;
    vm.close();
    expect(vm.closed).toBe(true);
    expect(kvm.isFdOpen(vmFd)).toBe(false);
    expect(kvm.isFdOpen(vcpuFd)).toBe(false);
    expect(tryKvm(() => vm.checkExtension(CAP.USER_MEMORY))).toBe('EBADF');
    expect(tryKvm(() => vm.createVcpu(1))).toBe('EBADF');
    expect(tryKvm(() => vcpu.getRegs())).toBe('EBADF');
    await expect(vcpu.run()).rejects.toThrow(/EBADF/);
    expect(tryKvm(() => vm.close())).toBe('EBADF');
    expect(tryKvm(() => kvm.closeFd(vmFd))).toBe('EBADF');
  });
});
