// Confidential VMs: the launch runs by itself before the first run, C-bit tagging, what is refused
// once the VM is launched, the step-by-step launch helpers and the kernel-shaped SEV helpers.
import { SEV_GUEST_STATE } from '@kvmtest/kvm';
import { UCALL } from '@kvmtest/ucall';
import { describe, expect, test } from 'vitest';
import {
  addrGva2Gpa,
  defineGuest,
  guestDone,
  guestSync,
  runUcall,
  runUcallExpect,
  sevGuestStatus,
  sevInit2,
  sevLaunchFinish,
  sevLaunchMeasure,
  sevLaunchStart,
  sevLaunchUpdate,
  TestkitError,
  trySevInit2,
  trySevMigrateFrom,
  trySevMirrorFrom,
  vmCreate,
  vmCreateBarebones,
  vmCreateWithOneVcpu,
  vmSevCreateWithOneVcpu,
  vmSevLaunch,
  vmVaddrAlloc,
  writeGuestGlobal,
} from '../src/index.js';
import { requireType } from './helpers.js';

const guest = defineGuest(
  async (g) => {
    await guestSync(g, g.readU64(g.global('expected')));
    await guestDone(g);
  },
  { globals: { expected: 0n } },
);

describe.each(['sev', 'sev-es'] as const)('%s VMs', (type) => {
  test('launch happens before the first run, after globals written at creation', async (ctx) => {
    requireType(ctx, type);
    using vm = vmCreateWithOneVcpu(guest, type);
    expect(vm.launchPending).toBe(true);
    writeGuestGlobal(vm, 'expected', 42n);
    const uc = await runUcall(vm.vcpus[0]!);
    expect([uc.cmd, uc.args[0]]).toEqual([UCALL.SYNC, 42n]);
    expect(vm.launchPending).toBe(false);
    expect(sevGuestStatus(vm).state).toBe(SEV_GUEST_STATE.RUNNING);
    await runUcallExpect(vm.vcpus[0]!, UCALL.DONE);
  });

  test('private leaves carry the C-bit, the shared ucall pool does not', (ctx) => {
    requireType(ctx, type);
    using vm = vmCreate(type);
    const tag = vm.space.tag!;
    expect(tag.setWhen).toBe('private');
    const image = vm.space.pageTables.walk(vm.image.globalGva('exception_handlers'));
    const pool = vm.space.pageTables.walk(vm.ucallPool!.gva);
    expect(image.ok && image.tagged).toBe(true);
    expect(pool.ok && pool.tagged).toBe(false);
  });

  test('after launch the page tables and private memory are off limits', async (ctx) => {
    requireType(ctx, type);
    using vm = vmCreateWithOneVcpu(guest, type);
    const gva = vm.image.globalGva('expected');
    expect(addrGva2Gpa(vm, gva)).toBe(vm.image.symbol('expected').gpa);
    await runUcall(vm.vcpus[0]!);
    expect(() => addrGva2Gpa(vm, gva)).toThrow(/Walking page tables of protected guests is impossible/);
    expect(() => writeGuestGlobal(vm, 'expected', 1n)).toThrow(/write globals before the first run/);
    expect(() => vmVaddrAlloc(vm, 4096)).toThrow(TestkitError);
    expect(() => vm.addVcpu(1)).toThrow(/launch has begun/);
  });

  test('the launch steps can be called one by one; the kit does not launch twice', async (ctx) => {
    requireType(ctx, type);
    using vm = vmSevCreateWithOneVcpu(type, guest);
    sevLaunchStart(vm);
    expect(sevGuestStatus(vm).state).toBe(SEV_GUEST_STATE.LAUNCH_UPDATE);
    sevLaunchUpdate(vm);
    const m = sevLaunchMeasure(vm);
    expect(m.length).toBeGreaterThan(0);
    sevLaunchFinish(vm);
    expect(vm.launchPending).toBe(false);
    expect((await runUcall(vm.vcpus[0]!)).cmd).toBe(UCALL.SYNC);
  });

  test('vmSevLaunch returns the measurement and the VM then runs without a second launch', async (ctx) => {
    requireType(ctx, type);
    using vm = vmSevCreateWithOneVcpu(type, guest);
    const m = vmSevLaunch(vm);
    expect(m.length).toBeGreaterThan(0);
    expect(sevGuestStatus(vm).state).toBe(SEV_GUEST_STATE.RUNNING);
    expect((await runUcall(vm.vcpus[0]!)).cmd).toBe(UCALL.SYNC);
  });

  test('INIT2 happened at creation: a second one fails with EINVAL', (ctx) => {
    requireType(ctx, type);
    using vm = vmCreate(type);
    expect(trySevInit2(vm)).toBe('EINVAL');
    expect(() => sevInit2(vm)).toThrow(/KVM_SEV_INIT2 failed, rc: -1 errno: 22 \(EINVAL\)/);
  });

  test('barebones VMs: move the encryption context, then the source is dead', (ctx) => {
    requireType(ctx, type);
    using src = vmCreateBarebones(type);
    using dst = vmCreateBarebones(type);
    sevInit2(src);
    expect(trySevMigrateFrom(dst, src)).toBeUndefined();
    expect(trySevMigrateFrom(src, dst)).toBe('EIO');
  });
});

test('encryption-context moves and mirrors between plain VMs fail with EINVAL', (ctx) => {
  using a = vmCreateBarebones('default');
  using b = vmCreateBarebones('default');
  const errno = trySevMigrateFrom(a, b);
  if (errno === 'ENOTTY' || errno === 'EOPNOTSUPP')
    ctx.skip('the backend does not model KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM');
  expect(errno).toBe('EINVAL');
  expect(trySevMigrateFrom(a, a)).toBe('EINVAL');
  expect(trySevMirrorFrom(a, b)).toBe('EINVAL');
});

test('SNP VMs are created and launched by the kit; the legacy SEV launch helpers refuse them (EPERM: svm/sev.c sev_mem_enc_ioctl())', async () => {
  using vm = vmCreateWithOneVcpu(guestDone, 'sev-snp');
  expect(vm.launchStage).toBe('none');
  const e = (() => {
    try {
      sevLaunchStart(vm);
    } catch (x) {
      return x;
    }
  })();
  expect(e).toBeInstanceOf(TestkitError);
  expect((e as TestkitError).code).toBe('WRONG_VM_TYPE');
  expect((await runUcall(vm.vcpus[0]!)).cmd).toBe(UCALL.DONE);
  expect(vm.launchStage).toBe('finished');
});
