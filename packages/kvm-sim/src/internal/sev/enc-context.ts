// Intra-host migration (KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM, arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from()) and mirrors
// (KVM_CAP_VM_COPY_ENC_CONTEXT_FROM, arch/x86/kvm/svm/sev.c: sev_vm_copy_enc_context_from()): the two-VM lock with its `migration_in_progress`
// flags, every check in the kernel's order, and the transfer of ASID, handle, regions, mirrors and
// per-vCPU SEV-ES state. The firmware is not involved: the ASID stays bound to the handle, so the
// key moves with the context.

import type { SevPlatformCore } from './types.js';
import { INVALID_PAGE, isMirror, sevEsGuest, sevGuest } from './state.js';
import { fail } from './uaccess.js';
import type { SevVmView } from './views.js';

const MOVE_OP = 'KVM_ENABLE_CAP(KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM)';
const COPY_OP = 'KVM_ENABLE_CAP(KVM_CAP_VM_COPY_ENC_CONTEXT_FROM)';

/** Points at which a MOVE yields while it holds both VMs' locks (for lock-step interleaving tests). */
export type MoveStep = 'vms-locked' | 'vcpus-locked';

// args[0] must be an open fd of a KVM VM, else EBADF (the first checks of sev_vm_move_enc_context_from()
// and sev_vm_copy_enc_context_from()).
function lookupSource(p: SevPlatformCore, fd: number, op: string): SevVmView {
  const r = p.host.lookupVmFd(fd);
  if (r === 'not-open') fail('EBADF', op, `source fd ${fd} is not open`, { fd });
  if (r === 'not-a-vm') fail('EBADF', op, `source fd ${fd} is not a KVM VM`, { fd });
  return r;
}

/** `sev_lock_two_vms` (arch/x86/kvm/svm/sev.c): self → EINVAL; either VM already migrating → EBUSY. */
export function lockTwoVms(dst: SevVmView, src: SevVmView, op: string): void {
  const d = dst.sev;
  const s = src.sev;
  if (d === s) fail('EINVAL', op, 'source and destination are the same VM');
  if (d.migrationInProgress) fail('EBUSY', op, 'the destination is already part of a migration');
  d.migrationInProgress = true;
  if (s.migrationInProgress) {
    d.migrationInProgress = false;
    fail('EBUSY', op, 'the source is already part of a migration');
  }
  s.migrationInProgress = true;
  // mutex_lock_killable of both kvm->lock: no signals in the simulator, so never EINTR.
  d.locked = true;
  s.locked = true;
}

/** `sev_unlock_two_vms`. */
export function unlockTwoVms(dst: SevVmView, src: SevVmView): void {
  dst.sev.locked = false;
  src.sev.locked = false;
  dst.sev.migrationInProgress = false;
  src.sev.migrationInProgress = false;
}

// sev_vm_move_enc_context_from(): VM types differ, destination already SEV, or source not SEV → EINVAL (one combined condition), checked with both VM locks held.
function checkMoveVms(dst: SevVmView, src: SevVmView): void {
  const d = dst.sev;
  const s = src.sev;
  if (dst.type !== src.type || sevGuest(d) || !sevGuest(s))
    fail(
      'EINVAL',
      MOVE_OP,
      dst.type !== src.type
        ? `VM types differ (destination ${dst.type}, source ${src.type})`
        : sevGuest(d)
          ? 'the destination is already an SEV guest'
          : 'the source is not an SEV guest',
    );
  // sev_misc_cg_try_charge(): misc cgroup charge — one cgroup in the simulator, never charged.
}

// `sev_check_source_vcpus`, with every vCPU mutex held (kvm_lock_all_vcpus()); then the transfer
// (sev_migrate_from()) and kvm_vm_dead() on the source.
function checkVcpusAndMove(dst: SevVmView, src: SevVmView): void {
  if (src.createdVcpus !== src.onlineVcpus || dst.createdVcpus !== dst.onlineVcpus)
    fail('EBUSY', MOVE_OP, 'vCPU creation is in flight on the source or the destination');
  if (sevEsGuest(src.sev)) {
    if (src.onlineVcpus !== dst.onlineVcpus)
      fail(
        'EINVAL',
        MOVE_OP,
        `SEV-ES needs equal vCPU counts (source ${src.onlineVcpus}, destination ${dst.onlineVcpus})`,
      );
    const bare = src.vcpus().find((v) => !v.sev.guestStateProtected);
    if (bare) fail('EINVAL', MOVE_OP, `source vCPU ${bare.id} has no VMSA yet (LAUNCH_UPDATE_VMSA not done)`);
  }
  migrateFrom(dst, src);
  src.markDead();
}

/** MOVE as lock steps: yields while holding the locks; throws the errno of the first failing check. */
export function* moveEncContextSteps(
  p: SevPlatformCore,
  dst: SevVmView,
  srcFd: number,
): Generator<MoveStep, void, void> {
  const src = lookupSource(p, srcFd, MOVE_OP);
  lockTwoVms(dst, src, MOVE_OP);
  try {
    yield 'vms-locked';
    checkMoveVms(dst, src);
    yield 'vcpus-locked';
    checkVcpusAndMove(dst, src);
  } finally {
    unlockTwoVms(dst, src);
  }
}

/** MOVE run to completion (arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from()): the same steps as `moveEncContextSteps`, without the yields. */
export function moveEncContextFrom(p: SevPlatformCore, dst: SevVmView, srcFd: number): void {
  const src = lookupSource(p, srcFd, MOVE_OP);
  lockTwoVms(dst, src, MOVE_OP);
  try {
    checkMoveVms(dst, src);
    checkVcpusAndMove(dst, src);
  } finally {
    unlockTwoVms(dst, src);
  }
}

/** `sev_migrate_from` (arch/x86/kvm/svm/sev.c). */
function migrateFrom(dst: SevVmView, src: SevVmView): void {
  const d = dst.sev;
  const s = src.sev;
  d.active = true;
  d.asid = s.asid;
  d.handle = s.handle;
  d.pagesLocked = s.pagesLocked;
  d.owner = s.owner;
  d.esActive = s.esActive;
  d.vmsaFeatures = s.vmsaFeatures;
  s.asid = 0;
  s.active = false;
  s.handle = 0;
  s.pagesLocked = 0;
  s.owner = undefined;
  s.esActive = false;

  d.regions = s.regions;
  s.regions = [];

  // Each mirror's reference moves from the source to the destination.
  d.mirrors = s.mirrors;
  s.mirrors = [];
  for (const m of d.mirrors) {
    d.refs++;
    s.refs--;
    m.sev.owner = dst;
  }

  // A moved mirror replaces the old one in its owner's list.
  if (d.owner !== undefined) {
    const list = d.owner.sev.mirrors;
    const i = list.findIndex((m) => m.sev === s);
    if (i >= 0) list.splice(i, 1);
    list.push(dst);
  }

  const sv = src.vcpus();
  if (!d.esActive) {
    // Plain SEV: KVM moves no register state (the VMM carries it with KVM_GET/SET_REGS), but the
    // guest's code is in the memory the destination maps: a destination vCPU with no program of its
    // own goes on with the source vCPU's.
    dst.vcpus().forEach((dv, i) => {
      const from = sv[i];
      if (from !== undefined) dv.adoptFrom?.(from, false);
    });
    return;
  }
  dst.vcpus().forEach((dv, i) => {
    const from = sv[i];
    if (from === undefined) return;
    // arch/x86/kvm/svm/sev.c: sev_migrate_from() moves each vCPU's VMSA (and with it the register
    // state: CRs, EFER, GPRs, RIP) to the destination vCPU of the same index.
    dv.adoptFrom?.(from, true);
    Object.assign(dv.sev, from.sev);
    dv.sev.guestStateProtected = true;
    from.sev.guestStateProtected = false;
    from.sev.vmsa = undefined;
    from.sev.ghcbMsr = 0n;
    from.sev.ghcbGpa = INVALID_PAGE;
    from.sev.pendingExit = undefined;
  });
}

/** COPY (arch/x86/kvm/svm/sev.c: sev_vm_copy_enc_context_from()): `dst` becomes a mirror sharing `src`'s ASID and handle. */
export function copyEncContextFrom(p: SevPlatformCore, dst: SevVmView, srcFd: number): void {
  const src = lookupSource(p, srcFd, COPY_OP);
  lockTwoVms(dst, src, COPY_OP);
  try {
    const d = dst.sev;
    const s = src.sev;
    // sev_vm_copy_enc_context_from(): destination already SEV, source not SEV or itself a mirror, or destination has vCPUs → EINVAL (one combined condition).
    if (sevGuest(d) || !sevGuest(s) || isMirror(s) || dst.createdVcpus !== 0)
      fail(
        'EINVAL',
        COPY_OP,
        sevGuest(d)
          ? 'the destination is already an SEV guest'
          : !sevGuest(s)
            ? 'the source is not an SEV guest'
            : isMirror(s)
              ? 'the source is itself a mirror'
              : `the destination already has vCPUs (${dst.createdVcpus})`,
      );
    // sev_vm_copy_enc_context_from() on success: kvm_get_kvm(owner), join the owner's mirror list, share ASID/handle/fd.
    s.refs++;
    s.mirrors.push(dst);
    d.owner = src;
    d.active = true;
    d.asid = s.asid;
    d.fd = s.fd;
    d.esActive = s.esActive;
    d.needInit = false;
    d.handle = s.handle;
    d.regions = [];
    d.mirrors = [];
  } finally {
    unlockTwoVms(dst, src);
  }
}
