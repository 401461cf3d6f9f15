import { SevLaunchDigest, sevLaunchMeasureBlob } from '@kvmtest/coco';
import { SEV_CMD, SEV_GUEST_STATE, SEV_RET, type SevCommand, tryKvm } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { FakeHost, type FakeVm, launchedVm, POLICY, ptr } from './fakes.test-support.js';
import { SIM_SEV_API } from './firmware.js';
import { buildVmsa } from './vmsa.js';

function status(vm: FakeVm) {
  const data = { handle: -1, policy: -1, state: -1 };
  vm.cmd(SEV_CMD.GUEST_STATUS, data);
  return data;
}

function started(h: FakeHost, es = false, policy = es ? POLICY.ES : 0): FakeVm {
  const vm = h.createVm();
  vm.cmd(es ? SEV_CMD.ES_INIT : SEV_CMD.INIT);
  vm.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy });
  return vm;
}

describe('LAUNCH_START (arch/x86/kvm/svm/sev.c: sev_launch_start())', () => {
  it('LAUNCH_START 1st check: not an SEV guest → ENOTTY (arch/x86/kvm/svm/sev.c: sev_launch_start())', () => {
    const h = new FakeHost();
    expect(tryKvm(() => h.createVm().cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy: 0 }))).toBe('ENOTTY');
  });

  it('LAUNCH_START gives a handle, GUEST_STATUS says LAUNCH_UPDATE with the policy (arch/x86/kvm/svm/sev.c: sev_launch_start(), sev_guest_status(); tools/testing/selftests/kvm/lib/x86/sev.c: sev_vm_launch())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.INIT);
    const data = { handle: 0, policy: POLICY.NODBG };
    vm.cmd(SEV_CMD.LAUNCH_START, data);
    expect(data.handle).toBeGreaterThan(0);
    expect(vm.sev.handle).toBe(data.handle);
    expect(vm.sev.fd).toBe(h.sevFd);
    expect(status(vm)).toEqual({
      handle: data.handle,
      policy: POLICY.NODBG,
      state: SEV_GUEST_STATE.LAUNCH_UPDATE,
    });
  });

  it('LAUNCH_START: data NULL → EFAULT, nothing reaches the firmware (arch/x86/kvm/svm/sev.c: sev_launch_start())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.INIT);
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_START, undefined))).toBe('EFAULT');
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy: 2 ** 32 }))).toBe('EFAULT');
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy: 0, dh: [1] }))).toBe('EFAULT');
    expect(h.platform.firmware.issued).not.toContain('LAUNCH_START');
  });

  it.each([
    ['empty DH blob', { dh: new Uint8Array(0) }],
    ['DH blob over 16 KiB', { dh: new Uint8Array(0x4001) }],
    ['empty session blob', { session: new Uint8Array(0) }],
    ['session blob over 16 KiB', { session: new Uint8Array(0x4001) }],
  ])(
    'LAUNCH_START psp_copy_user_blob: %s → EINVAL, no handle (arch/x86/kvm/svm/sev.c: sev_launch_start(); drivers/crypto/ccp/sev-dev.c: psp_copy_user_blob())',
    (_n, blobs) => {
      const h = new FakeHost();
      const vm = h.createVm();
      vm.cmd(SEV_CMD.INIT);
      expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy: 0, ...blobs }))).toBe('EINVAL');
      expect(vm.sev.handle).toBe(0);
      expect(h.platform.firmware.contextCount).toBe(0);
    },
  );

  it('LAUNCH_START: blobs of 1 byte and of exactly 16 KiB are accepted (arch/x86/kvm/svm/sev.c: sev_launch_start())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.INIT);
    vm.cmd(SEV_CMD.LAUNCH_START, {
      handle: 0,
      policy: 0,
      dh: new Uint8Array(1),
      session: new Uint8Array(0x4000),
    });
    expect(vm.sev.handle).not.toBe(0);
  });

  it.each([
    ['not open', 999],
    ['open but not /dev/sev', -1],
  ])(
    'sev_fd %s → EBADF, error untouched, no context (arch/x86/kvm/svm/sev.c: __sev_issue_cmd())',
    (_n, fd) => {
      const h = new FakeHost();
      const vm = h.createVm();
      vm.cmd(SEV_CMD.INIT);
      const c: SevCommand = {
        id: SEV_CMD.LAUNCH_START,
        data: { handle: 0, policy: 0 },
        sevFd: fd < 0 ? h.otherFd : fd,
      };
      c.error = 5;
      expect(tryKvm(() => vm.op(c))).toBe('EBADF');
      expect(c.error).toBe(5);
      expect(h.platform.firmware.contextCount).toBe(0);
    },
  );

  it('LAUNCH_START: the handle copy-back failing unbinds the ASID and decommissions → EFAULT (arch/x86/kvm/svm/sev.c: sev_launch_start())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.INIT);
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_START, Object.freeze({ handle: 0, policy: 0 })))).toBe(
      'EFAULT',
    );
    expect(vm.sev.handle).toBe(0);
    expect(h.platform.firmware.contextCount).toBe(0);
    expect(h.platform.firmware.boundAsidCount).toBe(0);
  });

  it('a second LAUNCH_START on the same VM fails in ACTIVATE (ASID_OWNED) and leaves the first context (arch/x86/kvm/svm/sev.c: sev_launch_start())', () => {
    const h = new FakeHost();
    const vm = started(h);
    const first = vm.sev.handle;
    const c: SevCommand = { id: SEV_CMD.LAUNCH_START, data: { handle: 0, policy: 0 }, sevFd: h.sevFd };
    expect(tryKvm(() => vm.op(c))).toBe('EIO');
    expect(c.error).toBe(SEV_RET.ASID_OWNED);
    expect(vm.sev.handle).toBe(first);
    expect(h.platform.firmware.handles()).toEqual([first]);
  });

  it('LAUNCH_START sharing the key of a guest whose policy has NOKS → EIO POLICY_FAILURE (arch/x86/kvm/svm/sev.c: sev_launch_start())', () => {
    const h = new FakeHost();
    const a = started(h, false, POLICY.NOKS);
    const b = h.createVm();
    b.cmd(SEV_CMD.INIT);
    const c: SevCommand = {
      id: SEV_CMD.LAUNCH_START,
      data: { handle: a.sev.handle, policy: 0 },
      sevFd: h.sevFd,
    };
    expect(tryKvm(() => b.op(c))).toBe('EIO');
    expect(c.error).toBe(SEV_RET.POLICY_FAILURE);
    const c2: SevCommand = { id: SEV_CMD.LAUNCH_START, data: { handle: 4242, policy: 0 }, sevFd: h.sevFd };
    expect(tryKvm(() => b.op(c2))).toBe('EIO');
    expect(c2.error).toBe(SEV_RET.INVALID_GUEST);
  });

  it('an ES policy on a plain-SEV ASID is refused by ACTIVATE (INVALID_ASID) (arch/x86/kvm/svm/sev.c: sev_launch_start())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.INIT);
    const c: SevCommand = {
      id: SEV_CMD.LAUNCH_START,
      data: { handle: 0, policy: POLICY.ES },
      sevFd: h.sevFd,
    };
    expect(tryKvm(() => vm.op(c))).toBe('EIO');
    expect(c.error).toBe(SEV_RET.INVALID_ASID);
    expect(h.platform.firmware.contextCount).toBe(0);
  });
});

describe('LAUNCH_UPDATE_DATA (arch/x86/kvm/svm/sev.c: sev_launch_update_data()) and real encryption', () => {
  it('LAUNCH_UPDATE_DATA: len 0 → EINVAL (arch/x86/kvm/svm/sev.c: sev_launch_update_data())', () => {
    const h = new FakeHost();
    const vm = started(h);
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: ptr(new Uint8Array(8)), len: 0 }))).toBe(
      'EINVAL',
    );
  });

  it('LAUNCH_UPDATE_DATA: NULL uaddr or a range past the mapping fails to pin → ENOMEM (arch/x86/kvm/svm/sev.c: sev_launch_update_data())', () => {
    const h = new FakeHost();
    const vm = started(h);
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: undefined, len: 16 }))).toBe('ENOMEM');
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: ptr(new Uint8Array(8)), len: 16 }))).toBe(
      'ENOMEM',
    );
  });

  it('LAUNCH_UPDATE_DATA: over RLIMIT_MEMLOCK → ENOMEM, memory untouched (arch/x86/kvm/svm/sev.c: sev_launch_update_data())', () => {
    const h = new FakeHost({ memlockLimitPages: 2 });
    const vm = started(h);
    const mem = new Uint8Array(3 * 4096).fill(7);
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: ptr(mem), len: mem.length }))).toBe(
      'ENOMEM',
    );
    expect(mem.every((b) => b === 7)).toBe(true);
    vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: ptr(mem), len: 2 * 4096 });
    expect(vm.sev.pagesLocked).toBe(0);
  });

  it('LAUNCH_UPDATE_DATA: not an SEV guest → ENOTTY; malformed data → EFAULT (arch/x86/kvm/svm/sev.c: sev_launch_update_data())', () => {
    const h = new FakeHost();
    expect(tryKvm(() => h.createVm().cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: undefined, len: 1 }))).toBe(
      'ENOTTY',
    );
    const vm = started(h);
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: 5, len: 1 }))).toBe('EFAULT');
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, undefined))).toBe('EFAULT');
  });

  it('LAUNCH_UPDATE_DATA before LAUNCH_START uses the stored fd 0, which is not /dev/sev → EBADF (arch/x86/kvm/svm/sev.c: sev_launch_update_data())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.INIT);
    const mem = new Uint8Array(64);
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: ptr(mem), len: 64 }))).toBe('EBADF');
    expect(mem.every((b) => b === 0)).toBe(true);
  });

  it('LAUNCH_UPDATE_DATA encrypts in place: the host sees ciphertext, the guest key decrypts it (arch/x86/kvm/svm/sev.c: sev_launch_update_data())', () => {
    const h = new FakeHost();
    const vm = started(h);
    const mem = vm.addSlot(0x10000n, 8192);
    for (let i = 0; i < mem.length; i++) mem[i] = i & 0xff;
    const plain = mem.slice();
    vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: ptr(mem, 100), len: 5000 });
    expect(mem.subarray(0, 100)).toEqual(plain.subarray(0, 100));
    expect(mem.subarray(5100)).toEqual(plain.subarray(5100));
    let same = 0;
    for (let i = 100; i < 5100; i++) if (mem[i] === plain[i]) same++;
    expect(same).toBeLessThan(60);
    const dbg = new Uint8Array(5000);
    vm.cmd(SEV_CMD.DBG_DECRYPT, { src: ptr(mem, 100), dst: ptr(dbg), len: 5000 });
    expect(dbg).toEqual(plain.subarray(100, 5100));
  });

  it('LAUNCH_UPDATE_DATA after LAUNCH_MEASURE → EIO INVALID_GUEST_STATE, memory untouched (arch/x86/kvm/svm/sev.c: sev_launch_update_data())', () => {
    const h = new FakeHost();
    const vm = started(h);
    vm.cmd(SEV_CMD.LAUNCH_MEASURE, { uaddr: ptr(new Uint8Array(64)), len: 64 });
    const mem = new Uint8Array(32).fill(1);
    const c: SevCommand = {
      id: SEV_CMD.LAUNCH_UPDATE_DATA,
      data: { uaddr: ptr(mem), len: 32 },
      sevFd: h.sevFd,
    };
    expect(tryKvm(() => vm.op(c))).toBe('EIO');
    expect(c.error).toBe(SEV_RET.INVALID_GUEST_STATE);
    expect(mem.every((b) => b === 1)).toBe(true);
  });
});

describe('LAUNCH_MEASURE and the launch digest (arch/x86/kvm/svm/sev.c: sev_launch_measure())', () => {
  it('LAUNCH_MEASURE: len 0 queries the length: EIO INVALID_LEN, len = 48, state unchanged (arch/x86/kvm/svm/sev.c: sev_launch_measure())', () => {
    const h = new FakeHost();
    const vm = started(h);
    const data = { uaddr: undefined, len: 0 };
    const c: SevCommand = { id: SEV_CMD.LAUNCH_MEASURE, data, sevFd: h.sevFd };
    expect(tryKvm(() => vm.op(c))).toBe('EIO');
    expect(c.error).toBe(SEV_RET.INVALID_LEN);
    expect(data.len).toBe(48);
    expect(status(vm).state).toBe(SEV_GUEST_STATE.LAUNCH_UPDATE);
  });

  it('LAUNCH_MEASURE: len over 16 KiB with a buffer → EINVAL before the firmware (arch/x86/kvm/svm/sev.c: sev_launch_measure())', () => {
    const h = new FakeHost();
    const vm = started(h);
    const buf = new Uint8Array(0x5000);
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_MEASURE, { uaddr: ptr(buf), len: 0x4001 }))).toBe('EINVAL');
    expect(status(vm).state).toBe(SEV_GUEST_STATE.LAUNCH_UPDATE);
  });

  it('LAUNCH_MEASURE: a too-small buffer → EIO INVALID_LEN, len not written back (arch/x86/kvm/svm/sev.c: sev_launch_measure())', () => {
    const h = new FakeHost();
    const vm = started(h);
    const data = { uaddr: ptr(new Uint8Array(16)), len: 16 };
    const c: SevCommand = { id: SEV_CMD.LAUNCH_MEASURE, data, sevFd: h.sevFd };
    expect(tryKvm(() => vm.op(c))).toBe('EIO');
    expect(c.error).toBe(SEV_RET.INVALID_LEN);
    expect(data.len).toBe(16);
  });

  it('the measurement is HMAC(TIK) over the launch digest of every UPDATE_DATA and UPDATE_VMSA, in order (arch/x86/kvm/svm/sev.c: sev_launch_update_vmsa(), sev_launch_measure())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    const mem = vm.addSlot(0x200000n, 4096 * 3);
    mem.fill(0x11, 0, 4096);
    mem.fill(0x22, 4096);
    vm.cmd(SEV_CMD.ES_INIT);
    const v0 = vm.addVcpu(0);
    const v1 = vm.addVcpu(1);
    v0.r.rip = 0xfff0n;
    v1.r.rax = 7n;
    const session = new Uint8Array(0x70);
    for (let i = 0; i < 16; i++) session[i] = i + 1;
    vm.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy: POLICY.ES, session });
    const expected = new SevLaunchDigest();
    expected.updateData(0x200000n, mem.slice(0, 4096));
    vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: ptr(mem), len: 4096 });
    expected.updateData(0x201000n, mem.slice(4096, 4096 + 100));
    vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: ptr(mem, 4096), len: 100 });
    expected.updateVmsa(0, buildVmsa(v0.r, v0.s, 0x400n, 0n));
    expected.updateVmsa(1, buildVmsa(v1.r, v1.s, 0x400n, 0n));
    vm.cmd(SEV_CMD.LAUNCH_UPDATE_VMSA);
    const out = new Uint8Array(256);
    const data = { uaddr: ptr(out), len: 256 };
    vm.cmd(SEV_CMD.LAUNCH_MEASURE, data);
    expect(data.len).toBe(48);
    const mnonce = out.slice(32, 48);
    const blob = sevLaunchMeasureBlob(expected.digest(), mnonce, session.slice(0, 16), {
      ...SIM_SEV_API,
      policy: POLICY.ES,
    });
    expect(out.slice(0, 48)).toEqual(blob);
    expect(out.slice(48).every((b) => b === 0)).toBe(true);
    expect(status(vm).state).toBe(SEV_GUEST_STATE.LAUNCH_SECRET);
  });

  it('LAUNCH_MEASURE twice → the second is EIO INVALID_GUEST_STATE (already LAUNCH_SECRET) (arch/x86/kvm/svm/sev.c: sev_launch_measure())', () => {
    const h = new FakeHost();
    const vm = started(h);
    vm.cmd(SEV_CMD.LAUNCH_MEASURE, { uaddr: ptr(new Uint8Array(48)), len: 48 });
    const c: SevCommand = {
      id: SEV_CMD.LAUNCH_MEASURE,
      data: { uaddr: ptr(new Uint8Array(48)), len: 48 },
      sevFd: h.sevFd,
    };
    expect(tryKvm(() => vm.op(c))).toBe('EIO');
    expect(c.error).toBe(SEV_RET.INVALID_GUEST_STATE);
  });

  it('LAUNCH_MEASURE: the measurement buffer not writable → EFAULT after the firmware ran (arch/x86/kvm/svm/sev.c: sev_launch_measure())', () => {
    const h = new FakeHost();
    const vm = started(h);
    const small = new Uint8Array(10);
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_MEASURE, { uaddr: ptr(small, 5), len: 48 }))).toBe('EFAULT');
  });
});

describe('LAUNCH_FINISH, GUEST_STATUS, LAUNCH_SECRET (arch/x86/kvm/svm/sev.c: sev_launch_secret(), sev_launch_finish(), sev_guest_status())', () => {
  it('LAUNCH_FINISH from LAUNCH_UPDATE or LAUNCH_SECRET → RUNNING; again → INVALID_GUEST_STATE (arch/x86/kvm/svm/sev.c: sev_launch_finish())', () => {
    const h = new FakeHost();
    const a = started(h);
    a.cmd(SEV_CMD.LAUNCH_FINISH);
    expect(status(a).state).toBe(SEV_GUEST_STATE.RUNNING);
    const c: SevCommand = { id: SEV_CMD.LAUNCH_FINISH, sevFd: h.sevFd };
    expect(tryKvm(() => a.op(c))).toBe('EIO');
    expect(c.error).toBe(SEV_RET.INVALID_GUEST_STATE);
    const b = started(h);
    b.cmd(SEV_CMD.LAUNCH_MEASURE, { uaddr: ptr(new Uint8Array(48)), len: 48 });
    b.cmd(SEV_CMD.LAUNCH_FINISH);
    expect(status(b).state).toBe(SEV_GUEST_STATE.RUNNING);
  });

  it('LAUNCH_FINISH / GUEST_STATUS: not an SEV guest → ENOTTY (arch/x86/kvm/svm/sev.c: sev_launch_finish(), sev_guest_status())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_FINISH))).toBe('ENOTTY');
    expect(tryKvm(() => vm.cmd(SEV_CMD.GUEST_STATUS, {}))).toBe('ENOTTY');
  });

  it('GUEST_STATUS before LAUNCH_START goes out on fd 0 → EBADF (arch/x86/kvm/svm/sev.c: sev_guest_status())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.INIT);
    expect(tryKvm(() => vm.cmd(SEV_CMD.GUEST_STATUS, {}))).toBe('EBADF');
  });

  it('GUEST_STATUS: data NULL or read-only → EFAULT after the firmware answered (arch/x86/kvm/svm/sev.c: sev_guest_status())', () => {
    const h = new FakeHost();
    const vm = started(h);
    expect(tryKvm(() => vm.cmd(SEV_CMD.GUEST_STATUS, undefined))).toBe('EFAULT');
    expect(tryKvm(() => vm.cmd(SEV_CMD.GUEST_STATUS, Object.freeze({})))).toBe('EFAULT');
  });

  it('LAUNCH_SECRET: only in LAUNCH_SECRET; injects the secret encrypted into guest memory (arch/x86/kvm/svm/sev.c: sev_launch_secret())', () => {
    const h = new FakeHost();
    const vm = started(h);
    const mem = new Uint8Array(4096);
    const secret = new Uint8Array(32).fill(0xab);
    const hdr = new Uint8Array(52);
    const early: SevCommand = {
      id: SEV_CMD.LAUNCH_SECRET,
      data: { hdr, guest: ptr(mem, 64), guestLen: 32, trans: secret },
      sevFd: h.sevFd,
    };
    expect(tryKvm(() => vm.op(early))).toBe('EIO');
    expect(early.error).toBe(SEV_RET.INVALID_GUEST_STATE);
    vm.cmd(SEV_CMD.LAUNCH_MEASURE, { uaddr: ptr(new Uint8Array(48)), len: 48 });
    vm.cmd(SEV_CMD.LAUNCH_SECRET, { hdr, guest: ptr(mem, 64), guestLen: 32, trans: secret });
    expect(mem.subarray(64, 96)).not.toEqual(secret);
    const out = new Uint8Array(32);
    vm.cmd(SEV_CMD.DBG_DECRYPT, { src: ptr(mem, 64), dst: ptr(out), len: 32 });
    expect(out).toEqual(secret);
  });

  it.each([
    ['guest_len 0', { guestLen: 0 }, 'EINVAL'],
    ['empty trans blob', { trans: new Uint8Array(0) }, 'EINVAL'],
    ['trans blob over 16 KiB', { trans: new Uint8Array(0x4001), guestLen: 32 }, 'EINVAL'],
    ['empty hdr blob', { hdr: new Uint8Array(0) }, 'EINVAL'],
    ['NULL guest pointer', { guest: undefined }, 'ENOMEM'],
    ['hdr not bytes', { hdr: 'x' }, 'EFAULT'],
  ] as const)('LAUNCH_SECRET: %s → %s (arch/x86/kvm/svm/sev.c: sev_launch_secret())', (_n, over, code) => {
    const h = new FakeHost();
    const vm = started(h);
    vm.cmd(SEV_CMD.LAUNCH_MEASURE, { uaddr: ptr(new Uint8Array(48)), len: 48 });
    const mem = new Uint8Array(4096);
    const data = {
      hdr: new Uint8Array(52),
      guest: ptr(mem),
      guestLen: 32,
      trans: new Uint8Array(32),
      ...over,
    };
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_SECRET, data))).toBe(code);
    expect(mem.every((b) => b === 0)).toBe(true);
  });
});

describe('LAUNCH_UPDATE_VMSA (arch/x86/kvm/svm/sev.c: sev_launch_update_vmsa())', () => {
  it('LAUNCH_UPDATE_VMSA: not an SEV-ES guest → ENOTTY (arch/x86/kvm/svm/sev.c: sev_launch_update_vmsa())', () => {
    const h = new FakeHost();
    expect(tryKvm(() => started(h).cmd(SEV_CMD.LAUNCH_UPDATE_VMSA))).toBe('ENOTTY');
    expect(tryKvm(() => h.createVm().cmd(SEV_CMD.LAUNCH_UPDATE_VMSA))).toBe('ENOTTY');
  });

  it('LAUNCH_UPDATE_VMSA: marks every vCPU protected; a second call goes to the firmware again and succeeds (arch/x86/kvm/svm/sev.c: sev_launch_update_vmsa())', () => {
    const h = new FakeHost();
    const vm = launchedVm(h, true);
    expect(vm.list.every((v) => h.platform.isGuestStateProtected(v))).toBe(true);
    expect(h.platform.firmware.issued.filter((c) => c === 'LAUNCH_UPDATE_VMSA')).toHaveLength(8);
  });

  it('LAUNCH_UPDATE_VMSA: a vCPU with guest_debug → EINVAL; vCPUs before it stay protected (arch/x86/kvm/svm/sev.c: sev_launch_update_vmsa())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.ES_INIT);
    vm.addVcpu(0);
    vm.addVcpu(1).guestDebug = true;
    vm.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy: POLICY.ES });
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_UPDATE_VMSA))).toBe('EINVAL');
    expect(vm.list.map((v) => v.sev.guestStateProtected)).toEqual([true, false]);
  });

  it('LAUNCH_UPDATE_VMSA: DR7 with bits beyond DR7_FIXED_1 → EINVAL (arch/x86/kvm/svm/sev.c: sev_launch_update_vmsa())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.ES_INIT);
    vm.addVcpu(0).dr7 = 0x401n;
    vm.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy: POLICY.ES });
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_UPDATE_VMSA))).toBe('EINVAL');
    expect(vm.list[0]!.sev.guestStateProtected).toBe(false);
  });

  it('LAUNCH_UPDATE_VMSA with a policy lacking ES → EIO POLICY_FAILURE, vCPU not protected (arch/x86/kvm/svm/sev.c: sev_launch_update_vmsa())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.ES_INIT);
    vm.addVcpu(0);
    vm.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy: 0 });
    const c: SevCommand = { id: SEV_CMD.LAUNCH_UPDATE_VMSA, sevFd: h.sevFd };
    expect(tryKvm(() => vm.op(c))).toBe('EIO');
    expect(c.error).toBe(SEV_RET.POLICY_FAILURE);
    expect(vm.list[0]!.sev.guestStateProtected).toBe(false);
  });
});

describe('DBG_DECRYPT / DBG_ENCRYPT (arch/x86/kvm/svm/sev.c: sev_dbg_crypt())', () => {
  it.each([
    ['len 0', { len: 0 }, 'EINVAL'],
    ['dst NULL', { dst: undefined }, 'EINVAL'],
    ['src NULL', { src: undefined }, 'ENOMEM'],
    ['src not a pointer', { src: 7 }, 'EFAULT'],
  ] as const)('DBG_DECRYPT: %s → %s (arch/x86/kvm/svm/sev.c: sev_dbg_crypt())', (_n, over, code) => {
    const h = new FakeHost();
    const vm = started(h);
    const data = { src: ptr(new Uint8Array(64)), dst: ptr(new Uint8Array(64)), len: 16, ...over };
    expect(tryKvm(() => vm.cmd(SEV_CMD.DBG_DECRYPT, data))).toBe(code);
  });

  it('DBG on a guest whose policy forbids debugging → EIO POLICY_FAILURE (arch/x86/kvm/svm/sev.c: sev_dbg_crypt())', () => {
    const h = new FakeHost();
    const vm = started(h, false, POLICY.NODBG);
    const c: SevCommand = {
      id: SEV_CMD.DBG_DECRYPT,
      data: { src: ptr(new Uint8Array(16)), dst: ptr(new Uint8Array(16)), len: 16 },
      sevFd: h.sevFd,
    };
    expect(tryKvm(() => vm.op(c))).toBe('EIO');
    expect(c.error).toBe(SEV_RET.POLICY_FAILURE);
  });

  it('DBG_ENCRYPT then DBG_DECRYPT round-trips through the key, across page boundaries and odd alignment (arch/x86/kvm/svm/sev.c: sev_dbg_crypt())', () => {
    const h = new FakeHost();
    const vm = started(h);
    const guest = new Uint8Array(3 * 4096);
    const plain = new Uint8Array(5000);
    for (let i = 0; i < plain.length; i++) plain[i] = (i * 7 + 3) & 0xff;
    vm.cmd(SEV_CMD.DBG_ENCRYPT, { src: ptr(plain), dst: ptr(guest, 4001), len: 5000 });
    expect(guest.subarray(4001, 9001)).not.toEqual(plain);
    const back = new Uint8Array(5000);
    vm.cmd(SEV_CMD.DBG_DECRYPT, { src: ptr(guest, 4001), dst: ptr(back), len: 5000 });
    expect(back).toEqual(plain);
  });

  it('DBG: the destination too short → EFAULT (arch/x86/kvm/svm/sev.c: sev_dbg_crypt())', () => {
    const h = new FakeHost();
    const vm = started(h);
    expect(
      tryKvm(() =>
        vm.cmd(SEV_CMD.DBG_DECRYPT, { src: ptr(new Uint8Array(64)), dst: ptr(new Uint8Array(8)), len: 16 }),
      ),
    ).toBe('EFAULT');
  });
});

describe('GET_ATTESTATION_REPORT (arch/x86/kvm/svm/sev.c: sev_get_attestation_report())', () => {
  it('GET_ATTESTATION_REPORT: query mode, >16 KiB, and a report with the launch digest (arch/x86/kvm/svm/sev.c: sev_get_attestation_report())', () => {
    const h = new FakeHost();
    const vm = started(h);
    vm.cmd(SEV_CMD.LAUNCH_MEASURE, { uaddr: ptr(new Uint8Array(48)), len: 48 });
    const q = { mnonce: new Uint8Array(16), uaddr: undefined, len: 0 };
    const c: SevCommand = { id: SEV_CMD.GET_ATTESTATION_REPORT, data: q, sevFd: h.sevFd };
    expect(tryKvm(() => vm.op(c))).toBe('EIO');
    expect(c.error).toBe(SEV_RET.INVALID_LEN);
    expect(q.len).toBe(208);
    const big = new Uint8Array(0x5000);
    expect(
      tryKvm(() =>
        vm.cmd(SEV_CMD.GET_ATTESTATION_REPORT, { mnonce: new Uint8Array(16), uaddr: ptr(big), len: 0x4001 }),
      ),
    ).toBe('EINVAL');
    const out = new Uint8Array(208);
    const mnonce = new Uint8Array(16).fill(9);
    vm.cmd(SEV_CMD.GET_ATTESTATION_REPORT, { mnonce, uaddr: ptr(out), len: 208 });
    expect(out.subarray(0, 16)).toEqual(mnonce);
    expect(out.subarray(16, 48)).toEqual(new SevLaunchDigest().digest());
  });

  it('GET_ATTESTATION_REPORT: not an SEV guest → ENOTTY; wrong mnonce size → EFAULT (arch/x86/kvm/svm/sev.c: sev_get_attestation_report())', () => {
    const h = new FakeHost();
    expect(tryKvm(() => h.createVm().cmd(SEV_CMD.GET_ATTESTATION_REPORT, {}))).toBe('ENOTTY');
    const vm = started(h);
    expect(tryKvm(() => vm.cmd(SEV_CMD.GET_ATTESTATION_REPORT, { mnonce: new Uint8Array(3), len: 0 }))).toBe(
      'EFAULT',
    );
  });
});
