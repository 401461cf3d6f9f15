import { type Errno, SEV_CMD, SEV_RET, type SevCommand, tryKvm } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { FakeHost, type FakeVm, launchedVm, POLICY, ptr } from './fakes.test-support.js';

function running(h: FakeHost, policy = 0): FakeVm {
  const vm = h.createVm();
  vm.cmd(SEV_CMD.INIT);
  vm.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy });
  vm.cmd(SEV_CMD.LAUNCH_FINISH);
  return vm;
}

function fw(vm: FakeVm, id: number, data?: unknown): { code: Errno | undefined; error: number | undefined } {
  const c: SevCommand = { id, data, sevFd: vm.host.sevFd, error: 0 };
  const code = tryKvm(() => vm.op(c));
  return { code, error: c.error };
}

const blob = (n = 16) => new Uint8Array(n).fill(1);

describe('SEND_* (arch/x86/kvm/svm/sev.c: sev_send_start(), sev_send_update_data(), sev_send_finish(), sev_send_cancel())', () => {
  it.each([
    SEV_CMD.SEND_START,
    SEV_CMD.SEND_UPDATE_DATA,
    SEV_CMD.SEND_FINISH,
    SEV_CMD.SEND_CANCEL,
    SEV_CMD.RECEIVE_START,
    SEV_CMD.RECEIVE_FINISH,
  ])(
    'command %i on a VM that is not an SEV guest → ENOTTY (arch/x86/kvm/svm/sev.c: the sev_send_*() and sev_receive_*() handlers)',
    (id) => {
      const h = new FakeHost();
      expect(tryKvm(() => h.createVm().cmd(id, {}))).toBe('ENOTTY');
    },
  );

  it('RECEIVE_UPDATE_DATA: not an SEV guest → EINVAL (the one handler that says EINVAL) (arch/x86/kvm/svm/sev.c: sev_receive_update_data())', () => {
    const h = new FakeHost();
    expect(tryKvm(() => h.createVm().cmd(SEV_CMD.RECEIVE_UPDATE_DATA, {}))).toBe('EINVAL');
  });

  it('SEND_START: session_len 0 queries: the firmware answers INVALID_LEN and the length is written back (arch/x86/kvm/svm/sev.c: sev_send_start())', () => {
    const h = new FakeHost();
    const vm = running(h);
    const data = { policy: 0, session: undefined, sessionLen: 0 };
    const r = fw(vm, SEV_CMD.SEND_START, data);
    expect(r).toEqual({ code: 'EIO', error: SEV_RET.INVALID_LEN });
    expect(data.sessionLen).toBe(0x70);
  });

  it.each([
    ['no PDH', { pdhCert: undefined }],
    ['empty PDH', { pdhCert: new Uint8Array(0) }],
    ['no session buffer', { session: undefined }],
    ['session_len over 16 KiB', { sessionLen: 0x4001 }],
    ['no platform certificates', { platCerts: undefined }],
    ['AMD certificates over 16 KiB', { amdCerts: new Uint8Array(0x4001) }],
  ])('SEND_START: %s → EINVAL (arch/x86/kvm/svm/sev.c: sev_send_start())', (_n, over) => {
    const h = new FakeHost();
    const vm = running(h);
    const data = {
      policy: 0,
      pdhCert: blob(),
      platCerts: blob(),
      amdCerts: blob(),
      session: ptr(new Uint8Array(0x70)),
      sessionLen: 0x70,
      ...over,
    };
    expect(tryKvm(() => vm.cmd(SEV_CMD.SEND_START, data))).toBe('EINVAL');
  });

  it('SEND_START: a full request reaches the firmware, which has no certificate chain (INVALID_CERTIFICATE) (arch/x86/kvm/svm/sev.c: sev_send_start())', () => {
    const h = new FakeHost();
    const vm = running(h);
    const data = {
      policy: 0,
      pdhCert: blob(),
      platCerts: blob(),
      amdCerts: blob(),
      session: ptr(new Uint8Array(0x70)),
      sessionLen: 0x70,
    };
    expect(fw(vm, SEV_CMD.SEND_START, data)).toEqual({ code: 'EIO', error: SEV_RET.INVALID_CERTIFICATE });
  });

  it('SEND_START on a guest that is still launching → EIO INVALID_GUEST_STATE; NOSEND policy → POLICY_FAILURE (arch/x86/kvm/svm/sev.c: sev_send_start())', () => {
    const h = new FakeHost();
    const launching = h.createVm();
    launching.cmd(SEV_CMD.INIT);
    launching.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy: 0 });
    expect(fw(launching, SEV_CMD.SEND_START, { policy: 0, sessionLen: 0 })).toEqual({
      code: 'EIO',
      error: SEV_RET.INVALID_GUEST_STATE,
    });
    expect(fw(running(h, POLICY.NOSEND), SEV_CMD.SEND_START, { policy: 0, sessionLen: 0 })).toEqual({
      code: 'EIO',
      error: SEV_RET.POLICY_FAILURE,
    });
  });

  it.each([
    ['no trans', { trans: undefined }],
    ['no guest', { guest: undefined }],
    ['guest_len 0', { guestLen: 0 }],
    ['no hdr', { hdr: undefined }],
    ['guest_len over a page', { guestLen: 4097 }],
    ['range crossing a page', { guest: ptr(new Uint8Array(8192), 4000), guestLen: 200 }],
  ])('SEND_UPDATE_DATA: %s → EINVAL (arch/x86/kvm/svm/sev.c: sev_send_update_data())', (_n, over) => {
    const h = new FakeHost();
    const vm = running(h);
    const data = {
      hdr: ptr(new Uint8Array(52)),
      hdrLen: 52,
      guest: ptr(new Uint8Array(4096)),
      guestLen: 16,
      trans: ptr(new Uint8Array(16)),
      transLen: 16,
      ...over,
    };
    expect(tryKvm(() => vm.cmd(SEV_CMD.SEND_UPDATE_DATA, data))).toBe('EINVAL');
  });

  it('SEND_UPDATE_DATA / FINISH / CANCEL: the guest is not SENDING → EIO INVALID_GUEST_STATE (arch/x86/kvm/svm/sev.c: sev_send_update_data(), sev_send_finish(), sev_send_cancel())', () => {
    const h = new FakeHost();
    const vm = running(h);
    expect(fw(vm, SEV_CMD.SEND_UPDATE_DATA, { hdrLen: 0, guestLen: 0, transLen: 0 })).toEqual({
      code: 'EIO',
      error: SEV_RET.INVALID_GUEST_STATE,
    });
    expect(fw(vm, SEV_CMD.SEND_FINISH)).toEqual({ code: 'EIO', error: SEV_RET.INVALID_GUEST_STATE });
    expect(fw(vm, SEV_CMD.SEND_CANCEL)).toEqual({ code: 'EIO', error: SEV_RET.INVALID_GUEST_STATE });
  });
});

describe('RECEIVE_* (arch/x86/kvm/svm/sev.c: sev_receive_start(), sev_receive_update_data(), sev_receive_finish())', () => {
  it.each([
    ['no PDH', { pdh: undefined }],
    ['empty session', { session: new Uint8Array(0) }],
    ['PDH over 16 KiB', { pdh: new Uint8Array(0x4001) }],
  ])('RECEIVE_START: %s → EINVAL (arch/x86/kvm/svm/sev.c: sev_receive_start())', (_n, over) => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.INIT);
    expect(
      tryKvm(() =>
        vm.cmd(SEV_CMD.RECEIVE_START, { handle: 0, policy: 0, pdh: blob(), session: blob(), ...over }),
      ),
    ).toBe('EINVAL');
  });

  it('RECEIVE_START: on the caller-supplied sev_fd (bad → EBADF); the firmware rejects the PDH (arch/x86/kvm/svm/sev.c: sev_receive_start())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.INIT);
    const data = { handle: 0, policy: 0, pdh: blob(), session: blob() };
    expect(tryKvm(() => vm.cmd(SEV_CMD.RECEIVE_START, data, h.otherFd))).toBe('EBADF');
    expect(fw(vm, SEV_CMD.RECEIVE_START, data)).toEqual({ code: 'EIO', error: SEV_RET.INVALID_CERTIFICATE });
    expect(vm.sev.handle).toBe(0);
  });

  it.each([
    ['no hdr', { hdr: undefined }],
    ['no trans', { trans: new Uint8Array(0) }],
    ['guest_len 0', { guestLen: 0 }],
    ['crossing a page', { guest: ptr(new Uint8Array(8192), 4090) }],
  ])('RECEIVE_UPDATE_DATA: %s → EINVAL (arch/x86/kvm/svm/sev.c: sev_receive_update_data())', (_n, over) => {
    const h = new FakeHost();
    const vm = launchedVm(h, false, { vcpus: 0 });
    const data = { hdr: blob(52), guest: ptr(new Uint8Array(4096)), guestLen: 16, trans: blob(), ...over };
    expect(tryKvm(() => vm.cmd(SEV_CMD.RECEIVE_UPDATE_DATA, data))).toBe('EINVAL');
  });

  it('RECEIVE_UPDATE_DATA / FINISH: the guest is not RECEIVING → EIO INVALID_GUEST_STATE (arch/x86/kvm/svm/sev.c: sev_receive_update_data(), sev_receive_finish())', () => {
    const h = new FakeHost();
    const vm = launchedVm(h, false, { vcpus: 0 });
    const data = { hdr: blob(52), guest: ptr(new Uint8Array(4096)), guestLen: 16, trans: blob() };
    expect(fw(vm, SEV_CMD.RECEIVE_UPDATE_DATA, data)).toEqual({
      code: 'EIO',
      error: SEV_RET.INVALID_GUEST_STATE,
    });
    expect(fw(vm, SEV_CMD.RECEIVE_FINISH)).toEqual({ code: 'EIO', error: SEV_RET.INVALID_GUEST_STATE });
  });
});
