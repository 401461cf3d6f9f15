import { isKvmError, SEV_CMD, SEV_GUEST_STATE, tryKvm } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { privateReadU64 } from './crypto.js';
import { FakeHost, type FakeVm, launchedVm, POLICY, ptr } from './fakes.test-support.js';

function aux(h: FakeHost, vcpus = 4): FakeVm {
  const vm = h.createVm();
  for (let i = 0; i < vcpus; i++) vm.addVcpu(i);
  return vm;
}

function flagsClear(...vms: FakeVm[]) {
  return vms.every((v) => !v.sev.migrationInProgress && !v.sev.locked);
}

function closeAll(h: FakeHost) {
  for (const v of h.fds.values()) if (typeof v !== 'string') v.close();
}

describe('KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM checks (arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from())', () => {
  it('args[0] not an open fd → EBADF (arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from())', () => {
    const h = new FakeHost();
    const dst = aux(h);
    expect(tryKvm(() => dst.move(12345))).toBe('EBADF');
    expect(flagsClear(dst)).toBe(true);
  });

  it('args[0] open but not a VM (/dev/sev, another file) → EBADF (arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from())', () => {
    const h = new FakeHost();
    const dst = aux(h);
    expect(tryKvm(() => dst.move(h.sevFd))).toBe('EBADF');
    expect(tryKvm(() => dst.move(h.otherFd))).toBe('EBADF');
  });

  it('source == destination → EINVAL, flags untouched (arch/x86/kvm/svm/sev.c: sev_lock_two_vms())', () => {
    const h = new FakeHost();
    const vm = launchedVm(h, false);
    expect(tryKvm(() => vm.move(vm))).toBe('EINVAL');
    expect(flagsClear(vm)).toBe(true);
  });

  it('destination or source already migrating → EBUSY, and the other flag is released (arch/x86/kvm/svm/sev.c: sev_lock_two_vms())', () => {
    const h = new FakeHost();
    const src = launchedVm(h, false);
    const dst = aux(h);
    const other = aux(h);
    dst.sev.migrationInProgress = true;
    expect(tryKvm(() => dst.move(src))).toBe('EBUSY');
    expect(src.sev.migrationInProgress).toBe(false);
    dst.sev.migrationInProgress = false;
    src.sev.migrationInProgress = true;
    expect(tryKvm(() => other.move(src))).toBe('EBUSY');
    expect(other.sev.migrationInProgress).toBe(false);
    src.sev.migrationInProgress = false;
  });

  it('VM types differ → EINVAL (arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from())', () => {
    const h = new FakeHost();
    const src = h.createVm('sev');
    src.cmd(SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
    const dst = h.createVm('default');
    expect(tryKvm(() => dst.move(src))).toBe('EINVAL');
    expect(src.sev.active).toBe(true);
    expect(flagsClear(src, dst)).toBe(true);
  });

  it('test_sev_migrate_parameters: source without SEV → EINVAL (tools/testing/selftests/kvm/x86/sev_migrate_tests.c)', () => {
    const h = new FakeHost();
    expect(tryKvm(() => aux(h, 0).move(aux(h)))).toBe('EINVAL');
  });

  it('destination already SEV or SEV-ES → EINVAL (both directions) (tools/testing/selftests/kvm/x86/sev_migrate_tests.c)', () => {
    const h = new FakeHost();
    const sev = launchedVm(h, false);
    const es = launchedVm(h, true);
    expect(tryKvm(() => sev.move(es))).toBe('EINVAL');
    expect(tryKvm(() => es.move(sev))).toBe('EINVAL');
    expect(sev.sev.active && es.sev.active).toBe(true);
  });

  it('vCPU creation in flight on source or destination → EBUSY (arch/x86/kvm/svm/sev.c: sev_check_source_vcpus())', () => {
    const h = new FakeHost();
    const src = launchedVm(h, false);
    const dst = aux(h);
    dst.inflight = 1;
    expect(tryKvm(() => dst.move(src))).toBe('EBUSY');
    dst.inflight = 0;
    src.inflight = 1;
    expect(tryKvm(() => dst.move(src))).toBe('EBUSY');
    src.inflight = 0;
    dst.move(src);
    expect(flagsClear(src, dst)).toBe(true);
  });

  it('SEV-ES needs equal vCPU counts → EINVAL (into a VM with no vCPUs) (arch/x86/kvm/svm/sev.c: sev_check_source_vcpus(); tools/testing/selftests/kvm/x86/sev_migrate_tests.c)', () => {
    const h = new FakeHost();
    const es = launchedVm(h, true);
    expect(tryKvm(() => aux(h, 0).move(es))).toBe('EINVAL');
    expect(tryKvm(() => aux(h, 3).move(es))).toBe('EINVAL');
  });

  it('SEV-ES source vCPU without UPDATE_VMSA → EINVAL (arch/x86/kvm/svm/sev.c: sev_check_source_vcpus(); tools/testing/selftests/kvm/x86/sev_migrate_tests.c)', () => {
    const h = new FakeHost();
    const es = h.createVm();
    es.cmd(SEV_CMD.ES_INIT);
    es.addVcpu(1);
    expect(tryKvm(() => aux(h, 0).move(es))).toBe('EINVAL');
    expect(tryKvm(() => aux(h, 1).move(es))).toBe('EINVAL');
  });

  it('plain SEV does not need equal vCPU counts (arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from())', () => {
    const h = new FakeHost();
    const src = launchedVm(h, false);
    aux(h, 1).move(src);
  });
});

describe('MOVE state transfer (arch/x86/kvm/svm/sev.c: sev_migrate_from(), sev_vm_move_enc_context_from())', () => {
  it('ASID, handle, pages_locked, regions and es_active move; the source is emptied and dead (arch/x86/kvm/svm/sev.c: sev_migrate_from())', () => {
    const h = new FakeHost();
    const src = launchedVm(h, true);
    const region = new Uint8Array(8192);
    h.platform.registerRegion(src, { addr: ptr(region), size: 8192n });
    const { asid, handle, pagesLocked } = src.sev;
    const dst = aux(h);
    dst.move(src);
    expect(dst.sev).toMatchObject({ active: true, asid, handle, pagesLocked, esActive: true });
    expect(dst.sev.regions).toHaveLength(1);
    expect(src.sev).toMatchObject({ active: false, asid: 0, handle: 0, pagesLocked: 0, esActive: false });
    expect(src.sev.regions).toHaveLength(0);
    expect(src.dead).toBe(true);
    // arch/x86/kvm/svm/sev.c: sev_migrate_from(): fd is not copied.
    expect(dst.sev.fd).toBe(0);
    // No new ASID and no firmware call.
    expect(h.platform.asids.ownedAsids()).toEqual([asid]);
  });

  it('per-vCPU SEV-ES state moves; the source vCPUs lose it (arch/x86/kvm/svm/sev.c: sev_migrate_from())', () => {
    const h = new FakeHost();
    const src = launchedVm(h, true);
    src.list[2]!.sev.ghcbMsr = 0x1234000n;
    const dst = aux(h);
    dst.move(src);
    expect(dst.list.every((v) => v.sev.guestStateProtected)).toBe(true);
    expect(dst.list[2]!.sev.ghcbMsr).toBe(0x1234000n);
    expect(src.list.every((v) => !v.sev.guestStateProtected && v.sev.vmsa === undefined)).toBe(true);
  });

  it('migrating back into the dead source → EIO (generic gate) (virt/kvm/kvm_main.c: kvm_vm_ioctl(); tools/testing/selftests/kvm/x86/sev_migrate_tests.c)', () => {
    const h = new FakeHost();
    const src = launchedVm(h, false);
    const d = [aux(h), aux(h), aux(h)];
    d[0]!.move(src);
    d[1]!.move(d[0]!);
    d[2]!.move(d[1]!);
    expect(tryKvm(() => src.move(d[2]!))).toBe('EIO');
    expect(tryKvm(() => src.cmd(SEV_CMD.GUEST_STATUS, {}))).toBe('EIO');
  });

  it('a dead VM used as the source of MOVE or COPY → EINVAL (no longer sev_guest) (arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from())', () => {
    const h = new FakeHost();
    const src = launchedVm(h, false);
    aux(h).move(src);
    expect(tryKvm(() => aux(h).move(src))).toBe('EINVAL');
    expect(tryKvm(() => aux(h, 0).copy(src))).toBe('EINVAL');
  });

  it('the destination keeps fd 0, so firmware commands through it fail with EBADF (arch/x86/kvm/svm/sev.c: sev_migrate_from())', () => {
    const h = new FakeHost();
    const src = launchedVm(h, false);
    const dst = aux(h);
    dst.move(src);
    expect(tryKvm(() => dst.cmd(SEV_CMD.GUEST_STATUS, {}))).toBe('EBADF');
  });

  it('the key moves with the context: the destination mapping the same memory decrypts it (arch/x86/kvm/svm/sev.c: sev_migrate_from())', () => {
    const h = new FakeHost();
    const src = h.createVm();
    const mem = src.addSlot(0n, 4096);
    new DataView(mem.buffer).setBigUint64(8, 0x1122334455667788n, true);
    src.cmd(SEV_CMD.INIT);
    src.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy: 0 });
    src.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: ptr(mem), len: 4096 });
    src.cmd(SEV_CMD.LAUNCH_FINISH);
    expect(new DataView(mem.buffer).getBigUint64(8, true)).not.toBe(0x1122334455667788n);
    const dst = aux(h);
    dst.shareSlot(0n, mem);
    dst.move(src);
    const key = h.platform.guestKey(dst.sev)!;
    expect(privateReadU64(key, mem, 8)).toBe(0x1122334455667788n);
    expect(h.platform.guestKey(src.sev)).toBeUndefined();
  });

  it('a source with mirrors can move (5.17+); each mirror now points at the destination (arch/x86/kvm/svm/sev.c: sev_migrate_from())', () => {
    const h = new FakeHost();
    const src = launchedVm(h, false);
    const m = aux(h, 0);
    m.copy(src);
    const dst = aux(h);
    dst.move(src);
    expect(m.sev.owner?.fd).toBe(dst.fd);
    expect(dst.sev.mirrors.map((x) => x.fd)).toEqual([m.fd]);
    expect(src.sev.mirrors).toHaveLength(0);
    expect(dst.sev.refs).toBe(1);
    expect(src.sev.refs).toBe(0);
  });
});

describe('KVM_CAP_VM_COPY_ENC_CONTEXT_FROM (arch/x86/kvm/svm/sev.c: sev_vm_copy_enc_context_from())', () => {
  it('bad fds → EBADF (arch/x86/kvm/svm/sev.c: sev_vm_copy_enc_context_from())', () => {
    const h = new FakeHost();
    const m = aux(h, 0);
    expect(tryKvm(() => m.copy(9999))).toBe('EBADF');
    expect(tryKvm(() => m.copy(h.sevFd))).toBe('EBADF');
  });

  it('copy to self → EINVAL (arch/x86/kvm/svm/sev.c: sev_lock_two_vms(); tools/testing/selftests/kvm/x86/sev_migrate_tests.c)', () => {
    const h = new FakeHost();
    const vm = launchedVm(h, false);
    expect(tryKvm(() => vm.copy(vm))).toBe('EINVAL');
  });

  it('either VM migrating → EBUSY (arch/x86/kvm/svm/sev.c: sev_lock_two_vms())', () => {
    const h = new FakeHost();
    const vm = launchedVm(h, false);
    const m = aux(h, 0);
    vm.sev.migrationInProgress = true;
    expect(tryKvm(() => m.copy(vm))).toBe('EBUSY');
    expect(m.sev.migrationInProgress).toBe(false);
    vm.sev.migrationInProgress = false;
  });

  it.each([
    ['source not SEV', 'nosev'],
    ['destination has vCPUs', 'vcpus'],
    ['destination already SEV', 'dstsev'],
    ['destination already SEV-ES', 'dstes'],
    ['source is a mirror', 'mirror'],
  ] as const)(
    '%s → EINVAL (arch/x86/kvm/svm/sev.c: sev_vm_copy_enc_context_from(); tools/testing/selftests/kvm/x86/sev_migrate_tests.c)',
    (_n, kind) => {
      const h = new FakeHost();
      const sev = launchedVm(h, false);
      let dst: FakeVm;
      let src: FakeVm = sev;
      if (kind === 'nosev') {
        dst = aux(h, 0);
        src = aux(h);
      } else if (kind === 'vcpus') dst = aux(h, 4);
      else if (kind === 'dstsev') dst = launchedVm(h, false);
      else if (kind === 'dstes') dst = launchedVm(h, true);
      else {
        src = aux(h, 0);
        src.copy(sev);
        dst = aux(h, 0);
      }
      expect(tryKvm(() => dst.copy(src))).toBe('EINVAL');
      expect(flagsClear(dst, src)).toBe(true);
    },
  );

  it('no VM-type equality check for COPY (an SEV-type VM can mirror into a default VM) (arch/x86/kvm/svm/sev.c: sev_vm_copy_enc_context_from())', () => {
    const h = new FakeHost();
    const owner = h.createVm('sev');
    owner.cmd(SEV_CMD.INIT2, { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 });
    aux(h, 0).copy(owner);
  });

  it('the mirror shares ASID, handle, fd, es_active; no new ASID; vmsa_features not copied (arch/x86/kvm/svm/sev.c: sev_vm_copy_enc_context_from())', () => {
    const h = new FakeHost();
    const owner = h.createVm('sev-es');
    owner.cmd(SEV_CMD.INIT2, { vmsaFeatures: 32n, flags: 0, ghcbVersion: 0 });
    owner.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy: POLICY.ES });
    const m = aux(h, 0);
    m.copy(owner);
    expect(m.sev).toMatchObject({
      active: true,
      asid: owner.sev.asid,
      handle: owner.sev.handle,
      fd: h.sevFd,
      esActive: true,
      needInit: false,
      vmsaFeatures: 0n,
    });
    expect(m.sev.owner?.fd).toBe(owner.fd);
    expect(owner.sev.refs).toBe(1);
    expect(h.platform.asids.ownedAsids()).toEqual([owner.sev.asid]);
  });

  it('test_sev_mirror: a mirror adds vCPUs, runs LAUNCH_UPDATE_VMSA and GUEST_STATUS (arch/x86/kvm/svm/sev.c: is_cmd_allowed_from_mirror(); tools/testing/selftests/kvm/x86/sev_migrate_tests.c)', () => {
    const h = new FakeHost();
    const src = launchedVm(h, true);
    const m = aux(h, 0);
    m.copy(src);
    for (let i = 0; i < 4; i++) m.addVcpu(i);
    m.cmd(SEV_CMD.LAUNCH_UPDATE_VMSA);
    const st = { handle: 0, policy: 0, state: 0 };
    m.cmd(SEV_CMD.GUEST_STATUS, st);
    expect(st).toEqual({ handle: src.sev.handle, policy: POLICY.ES, state: SEV_GUEST_STATE.LAUNCH_UPDATE });
    const buf = new Uint8Array(16);
    const out = new Uint8Array(16);
    m.cmd(SEV_CMD.DBG_ENCRYPT, { src: ptr(new Uint8Array(16).fill(3)), dst: ptr(buf), len: 16 });
    src.cmd(SEV_CMD.DBG_DECRYPT, { src: ptr(buf), dst: ptr(out), len: 16 });
    expect(out).toEqual(new Uint8Array(16).fill(3));
  });

  it('a mirror can be moved; the destination becomes a mirror of the same owner (arch/x86/kvm/svm/sev.c: sev_migrate_from())', () => {
    const h = new FakeHost();
    const owner = launchedVm(h, false);
    const m = aux(h, 0);
    m.copy(owner);
    const m2 = aux(h, 0);
    m2.move(m);
    expect(m2.sev.owner?.fd).toBe(owner.fd);
    expect(owner.sev.mirrors.map((x) => x.fd)).toEqual([m2.fd]);
    expect(owner.sev.refs).toBe(1);
    expect(m.dead).toBe(true);
  });
});

describe('destruction (arch/x86/kvm/svm/sev.c: sev_vm_destroy(), sev_asid_free())', () => {
  it('test_sev_move_copy part 1: moves in any interleaving, freed in the selftest order (arch/x86/kvm/svm/sev.c: sev_vm_destroy(); tools/testing/selftests/kvm/x86/sev_migrate_tests.c)', () => {
    const h = new FakeHost();
    const sev = launchedVm(h, false);
    const [dst, dst2, dst3] = [aux(h), aux(h), aux(h)];
    const [mirror, dstMirror, dst2Mirror, dst3Mirror] = [aux(h, 0), aux(h, 0), aux(h, 0), aux(h, 0)];
    mirror.copy(sev);
    dstMirror.move(mirror);
    dst.move(sev);
    dst2.move(dst);
    dst2Mirror.move(dstMirror);
    dst3Mirror.move(dst2Mirror);
    dst3.move(dst2);
    expect(dst3Mirror.sev.owner?.fd).toBe(dst3.fd);
    for (const v of [dst, sev, dst3, dst2, dst3Mirror, dst2Mirror, dstMirror, mirror]) v.close();
    expect(h.platform.leakReport()).toMatchObject({ ownedAsids: [], firmwareContexts: [], boundAsids: 0 });
  });

  it('test_sev_move_copy part 2: mirrors freed first (arch/x86/kvm/svm/sev.c: sev_vm_destroy(); tools/testing/selftests/kvm/x86/sev_migrate_tests.c)', () => {
    const h = new FakeHost();
    const sev = launchedVm(h, false);
    const dst = aux(h);
    const mirror = aux(h, 0);
    const dstMirror = aux(h, 0);
    mirror.copy(sev);
    dstMirror.move(mirror);
    dst.move(sev);
    for (const v of [mirror, dstMirror, dst, sev]) v.close();
    expect(h.platform.leakReport()).toMatchObject({ ownedAsids: [], firmwareContexts: [], boundAsids: 0 });
  });

  it('closing the owner first keeps its ASID until the last mirror goes (arch/x86/kvm/svm/sev.c: sev_vm_destroy())', () => {
    const h = new FakeHost();
    const owner = launchedVm(h, false);
    const asid = owner.sev.asid;
    const m = aux(h, 0);
    m.copy(owner);
    owner.close();
    expect(h.platform.asids.ownedAsids()).toEqual([asid]);
    expect(h.platform.guestKey(m.sev)).toBeDefined();
    m.close();
    expect(h.platform.asids.ownedAsids()).toEqual([]);
    expect(h.platform.asids.reclaimableAsids()).toEqual([asid]);
  });

  it('a dead MOVE source is destroyed without freeing anything (arch/x86/kvm/svm/sev.c: sev_vm_destroy())', () => {
    const h = new FakeHost();
    const src = launchedVm(h, false);
    const dst = aux(h);
    dst.move(src);
    src.close();
    expect(h.platform.asids.ownedAsids()).toEqual([dst.sev.asid]);
    expect(h.platform.firmware.contextCount).toBe(1);
    dst.close();
    expect(h.platform.leakReport()).toMatchObject({ ownedAsids: [], firmwareContexts: [], liveVms: 0 });
    closeAll(h);
  });
});

describe('migration locking (arch/x86/kvm/svm/sev.c: sev_lock_two_vms(); tools/testing/selftests/kvm/x86/sev_migrate_tests.c test_sev_migrate_locking)', () => {
  it('a MOVE holding the locks makes every other MOVE/COPY touching either VM EBUSY (arch/x86/kvm/svm/sev.c: sev_lock_two_vms())', () => {
    const h = new FakeHost();
    const src = launchedVm(h, false);
    const dst = aux(h);
    const third = launchedVm(h, false);
    const it = h.platform.moveEncContextSteps(dst, src.fd);
    expect(it.next().value).toBe('vms-locked');
    expect(tryKvm(() => third.move(src))).toBe('EBUSY');
    expect(tryKvm(() => dst.move(third))).toBe('EBUSY');
    expect(tryKvm(() => aux(h, 0).copy(src))).toBe('EBUSY');
    expect(third.sev.migrationInProgress).toBe(false);
    while (!it.next().done) {
      // finish
    }
    expect(flagsClear(src, dst, third)).toBe(true);
    expect(dst.sev.active).toBe(true);
  });

  it('3 threads × many interleaved MOVEs among 3 SEV VMs only see EINVAL or EBUSY, and never deadlock (tools/testing/selftests/kvm/x86/sev_migrate_tests.c)', () => {
    const h = new FakeHost();
    const vms = [launchedVm(h, false), launchedVm(h, false), launchedVm(h, false)];
    const seen = new Set<string>();
    // Deterministic round-robin scheduler over generator steps (a thread = one pending MOVE).
    type Th = { vm: FakeVm; i: number; it: Generator | undefined };
    const threads: Th[] = vms.map((vm) => ({ vm, i: 0, it: undefined }));
    let steps = 0;
    let rng = 12345;
    while (threads.some((t) => t.i < 2000)) {
      rng = (rng * 1103515245 + 12345) >>> 0;
      const t = threads[rng % 3]!;
      if (t.i >= 2000) continue;
      try {
        if (t.it === undefined) t.it = h.platform.moveEncContextSteps(t.vm, vms[t.i % 3]!.fd);
        if (t.it.next().done) {
          seen.add('0');
          t.it = undefined;
          t.i++;
        }
      } catch (e) {
        if (!isKvmError(e)) throw e;
        seen.add(e.code);
        t.it = undefined;
        t.i++;
      }
      steps++;
    }
    expect(steps).toBeGreaterThan(6000);
    expect([...seen].sort()).toEqual(['EBUSY', 'EINVAL']);
    expect(flagsClear(...vms)).toBe(true);
    expect(vms.every((v) => v.sev.active && !v.dead)).toBe(true);
  });
});
