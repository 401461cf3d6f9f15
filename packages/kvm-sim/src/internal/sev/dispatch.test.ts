import { SEV_CMD, SEV_RET, type SevCommand, tryKvm } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { FakeHost, type FakeVm, POLICY, ptr } from './fakes.test-support.js';

function snapshot(vm: FakeVm) {
  const { mirrors, owner, regions, ...rest } = vm.sev;
  return { ...rest, mirrors: mirrors.length, owner: owner?.fd, regions: regions.length };
}

describe('KVM_MEMORY_ENCRYPT_OP dispatch (arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl())', () => {
  it('SEV disabled on the host → ENOTTY (arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl())', () => {
    const h = new FakeHost({ sevEnabled: false });
    const vm = h.createVm();
    expect(tryKvm(() => vm.op({ id: SEV_CMD.INIT }))).toBe('ENOTTY');
    expect(tryKvm(() => vm.op(undefined))).toBe('ENOTTY');
  });

  it('a CPUID with no SEV bit or no ASIDs disables SEV → ENOTTY (arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl())', () => {
    const h = new FakeHost({ cpuid: { eax: 0, ebx: 51, ecx: 10, edx: 5 } });
    expect(h.platform.sevEnabled).toBe(false);
    expect(tryKvm(() => h.createVm().op({ id: SEV_CMD.INIT }))).toBe('ENOTTY');
    const h2 = new FakeHost({ cpuid: { eax: 2 | 8, ebx: 51, ecx: 0, edx: 5 } });
    expect(h2.platform.sevEnabled).toBe(false);
  });

  it('a NULL argument returns 0 and changes nothing (arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    const before = snapshot(vm);
    expect(tryKvm(() => vm.op(undefined))).toBeUndefined();
    expect(snapshot(vm)).toEqual(before);
  });

  it.each([
    ['a number', 5],
    ['a string', 'INIT'],
    ['an object without id', {}],
    ['a negative id', { id: -1 }],
    ['a fractional id', { id: 1.5 }],
    ['a bigint id', { id: 0n }],
    ['a non-numeric sevFd', { id: 0, sevFd: 'x' }],
    ['a non-integer error', { id: 0, error: 'x' }],
  ])(
    'struct kvm_sev_cmd that cannot be copied (%s) → EFAULT, nothing changed (arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl())',
    (_n, cmd) => {
      const h = new FakeHost();
      const vm = h.createVm();
      const before = snapshot(vm);
      expect(tryKvm(() => h.platform.memEncryptOp(vm, cmd))).toBe('EFAULT');
      expect(snapshot(vm)).toEqual(before);
    },
  );

  it('ES_INIT with SEV-ES disabled → ENOTTY, no copy-back (arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl())', () => {
    const h = new FakeHost({ sevEsEnabled: false });
    const vm = h.createVm();
    const c: SevCommand = { id: SEV_CMD.ES_INIT, error: 77 };
    expect(tryKvm(() => vm.op(c))).toBe('ENOTTY');
    expect(c.error).toBe(77);
    expect(vm.sev.active).toBe(false);
  });

  it('min_sev_asid == 1 leaves no SEV-ES ASIDs, so SEV-ES is disabled (ES_INIT → ENOTTY) (arch/x86/kvm/svm/sev.c: sev_hardware_setup())', () => {
    const h = new FakeHost({ cpuid: { eax: 2 | 8, ebx: 51, ecx: 10, edx: 1 } });
    expect(h.platform.sevEsEnabled).toBe(false);
    expect(tryKvm(() => h.createVm().op({ id: SEV_CMD.ES_INIT }))).toBe('ENOTTY');
  });

  it.each([10, 14, 19, 23, 50, 99, 103, 0xffff])(
    'unimplemented id %i → EINVAL, error not copied back (arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl())',
    (id) => {
      const h = new FakeHost();
      const vm = h.createVm();
      const c: SevCommand = { id, error: 1234 };
      expect(tryKvm(() => vm.op(c))).toBe('EINVAL');
      expect(c.error).toBe(1234);
    },
  );

  it('a handled command copies `error` back even when it fails (arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.INIT);
    const c: SevCommand = {
      id: SEV_CMD.LAUNCH_START,
      data: { handle: 0, policy: 1 << 6 },
      sevFd: h.sevFd,
      error: 99,
    };
    expect(tryKvm(() => vm.op(c))).toBe('EIO');
    expect(c.error).toBe(SEV_RET.POLICY_FAILURE);
  });

  it('the copy-back of kvm_sev_cmd failing turns the result into EFAULT (arch/x86/kvm/svm/sev.c: sev_mem_enc_ioctl())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    const c = Object.freeze({ id: SEV_CMD.INIT, error: 0 });
    expect(tryKvm(() => vm.op(c))).toBe('EFAULT');
    // The handler already ran: INIT took effect (the kernel does not roll back on a failed copy-back).
    expect(vm.sev.active).toBe(true);
  });

  it('a mirror gets EINVAL for a non-allowed id before the SNP check and without reading data (arch/x86/kvm/svm/sev.c: is_cmd_allowed_from_mirror())', () => {
    const h = new FakeHost();
    const owner = h.createVm();
    owner.cmd(SEV_CMD.INIT);
    const mirror = h.createVm();
    mirror.copy(owner);
    for (let id = 0; id < SEV_CMD.NR_MAX; id++) {
      if ([4, 16, 17, 18].includes(id)) continue;
      expect(
        tryKvm(() => mirror.op({ id, data: undefined })),
        `id ${id}`,
      ).toBe('EINVAL');
    }
  });
});

describe('KVM_SEV_INIT / ES_INIT (arch/x86/kvm/svm/sev.c: __sev_guest_init(), sev_guest_init())', () => {
  it('legacy INIT on a non-default VM type → EINVAL (arch/x86/kvm/svm/sev.c: sev_guest_init())', () => {
    const h = new FakeHost();
    for (const t of ['sev', 'sev-es', 'sw-protected'] as const) {
      const vm = h.createVm(t);
      expect(
        tryKvm(() => vm.cmd(SEV_CMD.INIT)),
        t,
      ).toBe('EINVAL');
      expect(
        tryKvm(() => vm.cmd(SEV_CMD.ES_INIT)),
        t,
      ).toBe('EINVAL');
      expect(vm.sev.active).toBe(false);
    }
  });

  it('INIT on a default VM makes an SEV guest with ghcb_version 0 and a plain-SEV ASID (arch/x86/kvm/svm/sev.c: sev_guest_init())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.INIT);
    expect(vm.sev).toMatchObject({
      active: true,
      esActive: false,
      ghcbVersion: 0,
      vmsaFeatures: 0n,
      needInit: false,
    });
    expect(vm.sev.asid).toBe(h.platform.info.minSevAsid);
  });

  it('ES_INIT on a default VM makes an SEV-ES guest with ghcb_version 1 and an ES ASID (arch/x86/kvm/svm/sev.c: sev_guest_init())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.ES_INIT);
    expect(vm.sev).toMatchObject({ active: true, esActive: true, ghcbVersion: 1, vmsaFeatures: 0n });
    expect(vm.sev.asid).toBe(1);
  });

  it('a second INIT / ES_INIT → EINVAL (active already set), state unchanged (arch/x86/kvm/svm/sev.c: __sev_guest_init())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.INIT);
    const before = snapshot(vm);
    expect(tryKvm(() => vm.cmd(SEV_CMD.INIT))).toBe('EINVAL');
    expect(tryKvm(() => vm.cmd(SEV_CMD.ES_INIT))).toBe('EINVAL');
    expect(snapshot(vm)).toEqual(before);
  });

  it('vCPUs already created → EINVAL, no ASID taken (arch/x86/kvm/svm/sev.c: __sev_guest_init())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.addVcpu();
    expect(tryKvm(() => vm.cmd(SEV_CMD.INIT))).toBe('EINVAL');
    expect(vm.sev.active).toBe(false);
    expect(h.platform.asids.ownedAsids()).toEqual([]);
  });

  it('ASIDs exhausted → EBUSY, state rolled back (arch/x86/kvm/svm/sev.c: __sev_guest_init(), sev_asid_new())', () => {
    const h = new FakeHost({ cpuid: { eax: 2 | 8, ebx: 51, ecx: 3, edx: 3 } });
    const a = h.createVm();
    a.cmd(SEV_CMD.INIT); // the only SEV ASID (3)
    const b = h.createVm();
    expect(tryKvm(() => b.cmd(SEV_CMD.INIT))).toBe('EBUSY');
    expect(b.sev).toMatchObject({ active: false, esActive: false, asid: 0 });
  });

  it('no plain-SEV ASIDs (min > max, 6.9+) → INIT fails with ENOTTY while ES_INIT works (arch/x86/kvm/svm/sev.c: sev_asid_new())', () => {
    const h = new FakeHost({ cpuid: { eax: 2 | 8, ebx: 51, ecx: 4, edx: 5 } });
    expect(tryKvm(() => h.createVm().cmd(SEV_CMD.INIT))).toBe('ENOTTY');
    const es = h.createVm();
    es.cmd(SEV_CMD.ES_INIT);
    expect(es.sev.asid).toBe(1);
  });

  it('platform init failure → EIO with the firmware code, ASID back (arch/x86/kvm/svm/sev.c: __sev_guest_init())', () => {
    const h = new FakeHost();
    h.platform.firmware.platformInitError = SEV_RET.INVALID_PLATFORM_STATE;
    const vm = h.createVm();
    const c: SevCommand = { id: SEV_CMD.INIT };
    expect(tryKvm(() => vm.op(c))).toBe('EIO');
    expect(c.error).toBe(SEV_RET.INVALID_PLATFORM_STATE);
    expect(vm.sev.active).toBe(false);
    expect(h.platform.asids.ownedAsids()).toEqual([]);
  });
});

describe('KVM_SEV_INIT2 (arch/x86/kvm/svm/sev.c: sev_guest_init2(); tools/testing/selftests/kvm/x86/sev_init2_tests.c)', () => {
  const zero = () => ({ vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });

  it('INIT2 with a zero struct succeeds on SEV and SEV-ES VM types (arch/x86/kvm/svm/sev.c: sev_guest_init2(); tools/testing/selftests/kvm/x86/sev_init2_tests.c)', () => {
    const h = new FakeHost();
    const sev = h.createVm('sev');
    sev.cmd(SEV_CMD.INIT2, zero());
    expect(sev.sev).toMatchObject({ active: true, esActive: false, needInit: false, ghcbVersion: 0 });
    const es = h.createVm('sev-es');
    es.cmd(SEV_CMD.INIT2, zero());
    // arch/x86/kvm/svm/sev.c: __sev_guest_init(): SEV-ES with ghcb_version 0 defaults to 2.
    expect(es.sev).toMatchObject({ active: true, esActive: true, needInit: false, ghcbVersion: 2 });
  });

  it('INIT2 on default / sw-protected (need_init false) → EINVAL (arch/x86/kvm/svm/sev.c: sev_guest_init2())', () => {
    const h = new FakeHost();
    expect(tryKvm(() => h.createVm('default').cmd(SEV_CMD.INIT2, zero()))).toBe('EINVAL');
    expect(tryKvm(() => h.createVm('sw-protected').cmd(SEV_CMD.INIT2, zero()))).toBe('EINVAL');
  });

  it('a second INIT2 → EINVAL (need_init now false) (arch/x86/kvm/svm/sev.c: sev_guest_init2())', () => {
    const h = new FakeHost();
    const vm = h.createVm('sev-es');
    vm.cmd(SEV_CMD.INIT2, zero());
    expect(tryKvm(() => vm.cmd(SEV_CMD.INIT2, zero()))).toBe('EINVAL');
  });

  it('INIT2 data NULL or malformed → EFAULT, nothing changed (arch/x86/kvm/svm/sev.c: sev_guest_init2())', () => {
    const h = new FakeHost();
    const vm = h.createVm('sev');
    const before = snapshot(vm);
    expect(tryKvm(() => vm.cmd(SEV_CMD.INIT2, undefined))).toBe('EFAULT');
    expect(tryKvm(() => vm.cmd(SEV_CMD.INIT2, { flags: 0, ghcbVersion: 0 }))).toBe('EFAULT');
    expect(tryKvm(() => vm.cmd(SEV_CMD.INIT2, { vmsaFeatures: 0, flags: 0, ghcbVersion: 0 }))).toBe('EFAULT');
    expect(tryKvm(() => vm.cmd(SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 1 << 16 }))).toBe(
      'EFAULT',
    );
    expect(snapshot(vm)).toEqual(before);
  });

  it.each([0, 1, 5, 31])(
    'INIT2 with flags bit %i → EINVAL (arch/x86/kvm/svm/sev.c: __sev_guest_init(); tools/testing/selftests/kvm/x86/sev_init2_tests.c)',
    (bit) => {
      const h = new FakeHost();
      const vm = h.createVm('sev-es');
      expect(tryKvm(() => vm.cmd(SEV_CMD.INIT2, { ...zero(), flags: 2 ** bit }))).toBe('EINVAL');
      expect(vm.sev.active).toBe(false);
    },
  );

  it('every vmsa_features bit is invalid for plain SEV; for SEV-ES only the supported ones pass (arch/x86/kvm/svm/sev.c: __sev_guest_init(); tools/testing/selftests/kvm/x86/sev_init2_tests.c)', () => {
    const h = new FakeHost();
    for (let b = 0n; b < 64n; b++) {
      expect(
        tryKvm(() => h.createVm('sev').cmd(SEV_CMD.INIT2, { ...zero(), vmsaFeatures: 1n << b })),
        `bit ${b}`,
      ).toBe('EINVAL');
      if (b === 5n) continue;
      expect(
        tryKvm(() => h.createVm('sev-es').cmd(SEV_CMD.INIT2, { ...zero(), vmsaFeatures: 1n << b })),
        `bit ${b}`,
      ).toBe('EINVAL');
    }
    const es = h.createVm('sev-es');
    es.cmd(SEV_CMD.INIT2, { ...zero(), vmsaFeatures: 32n });
    expect(es.sev.vmsaFeatures).toBe(32n);
  });

  it('without DebugSwap support even DEBUG_SWAP is refused (arch/x86/kvm/svm/sev.c: __sev_guest_init())', () => {
    const h = new FakeHost({ debugSwap: false });
    expect(tryKvm(() => h.createVm('sev-es').cmd(SEV_CMD.INIT2, { ...zero(), vmsaFeatures: 32n }))).toBe(
      'EINVAL',
    );
  });

  it('ghcb_version above 2, or non-zero for plain SEV → EINVAL; 1 and 2 are kept for SEV-ES (arch/x86/kvm/svm/sev.c: __sev_guest_init())', () => {
    const h = new FakeHost();
    expect(tryKvm(() => h.createVm('sev-es').cmd(SEV_CMD.INIT2, { ...zero(), ghcbVersion: 3 }))).toBe(
      'EINVAL',
    );
    expect(tryKvm(() => h.createVm('sev').cmd(SEV_CMD.INIT2, { ...zero(), ghcbVersion: 1 }))).toBe('EINVAL');
    const v1 = h.createVm('sev-es');
    v1.cmd(SEV_CMD.INIT2, { ...zero(), ghcbVersion: 1 });
    expect(v1.sev.ghcbVersion).toBe(1);
  });

  it('legacy INIT on SEV VM types and INIT2 on default VMs never mix (arch/x86/kvm/svm/sev.c: sev_guest_init(), sev_guest_init2())', () => {
    const h = new FakeHost();
    const d = h.createVm('default');
    d.cmd(SEV_CMD.INIT);
    expect(tryKvm(() => d.cmd(SEV_CMD.INIT2, zero()))).toBe('EINVAL');
  });
});

describe('launch policy input (LAUNCH_START, arch/x86/kvm/svm/sev.c: sev_launch_start())', () => {
  it('a policy with reserved bits reaches the firmware, which refuses it: EIO + POLICY_FAILURE, no handle (arch/x86/kvm/svm/sev.c: sev_launch_start())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.INIT);
    const data = { handle: 0, policy: POLICY.NODBG | (1 << 9) };
    const c: SevCommand = { id: SEV_CMD.LAUNCH_START, data, sevFd: h.sevFd };
    expect(tryKvm(() => vm.op(c))).toBe('EIO');
    expect(c.error).toBe(SEV_RET.POLICY_FAILURE);
    expect(vm.sev.handle).toBe(0);
    expect(data.handle).toBe(0);
    expect(h.platform.firmware.contextCount).toBe(0);
  });

  it('LAUNCH_UPDATE_DATA: HostPtr outside its buffer is a malformed pointer → EFAULT (arch/x86/kvm/svm/sev.c: sev_launch_update_data())', () => {
    const h = new FakeHost();
    const vm = h.createVm();
    vm.cmd(SEV_CMD.INIT);
    const mem = new Uint8Array(16);
    expect(
      tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: { buffer: mem, offset: 17 }, len: 1 })),
    ).toBe('EFAULT');
    expect(tryKvm(() => vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: ptr(mem), len: -1 }))).toBe('EFAULT');
  });
});
