// SEV helpers in the selftests' idiom (lib/x86/sev.c): the plain name asserts success, the `try`
// form returns the errno name (undefined on success). Launch: START (policy, /dev/sev) →
// UPDATE_DATA over every protected range (+ UPDATE_VMSA for SEV-ES) → MEASURE → FINISH, with the
// GUEST_STATUS transitions the library asserts. The kit runs the whole launch lazily before a
// VM's first run; each step is also callable on its own.

import { SEV_POLICY_BIT } from '@kvmtest/coco';
import {
  CAP,
  type Errno,
  hostPtr,
  tryKvm,
  SEV_CMD,
  SEV_GUEST_STATE,
  type SevCommand,
  type SevGuestStatusData,
  type SevInitData,
  type SevLaunchMeasureData,
  type SevLaunchStartData,
  type Vm,
} from '@kvmtest/kvm';
import { ucallMovePool, ucallPoolOf } from '@kvmtest/ucall';
import { TestAssertionError, TestkitError } from './errors.js';
import { asTestVm, kitState, type LaunchPolicy, policyValue, type TestVm, type VmLike } from './kit-vm.js';
import { kvmAssert, userLocation } from './kvm-assert.js';
import { noteEncContext } from './memory-map.js';
import { migrationSourceOf } from './migrate.js';

/** Bytes of a launch measurement buffer (selftests pass 256). */
export const SEV_MEASUREMENT_LEN = 256;

function testAssertState(cond: boolean, message: string): void {
  if (!cond)
    throw new TestAssertionError({
      location: userLocation(),
      expression: 'SEV guest state',
      userMessage: message,
    });
}

const sevFds = new WeakMap<TestVm, number>();

/** The /dev/sev descriptor of a VM, opened on first need (closed with the VM). */
export function sevFdOf(vmLike: VmLike): number {
  const vm = asTestVm(vmLike);
  let fd = sevFds.get(vm);
  if (fd === undefined || !vm.kvm.isFdOpen(fd)) {
    fd = vm.kvm.openSevDevice();
    sevFds.set(vm, fd);
    kitState(vm).ownFd(fd);
  }
  return fd;
}

function rawOf(vm: VmLike): Vm {
  return asTestVm(vm).raw;
}

/** The bare KVM_MEMORY_ENCRYPT_OP: throws the KvmError, returns the firmware error field. */
function sevOp(vm: VmLike, id: number, data: unknown): number {
  const cmd: SevCommand = { id, data, sevFd: sevFdOf(vm), error: 0 };
  rawOf(vm).memEncryptOp(cmd);
  if (id === SEV_CMD.INIT || id === SEV_CMD.ES_INIT || id === SEV_CMD.INIT2)
    noteEncContext('init', asTestVm(vm));
  return cmd.error ?? 0;
}

/** __vm_sev_ioctl: KVM_MEMORY_ENCRYPT_OP `id` with `data` and the VM's /dev/sev fd; returns the firmware error field. */
export function sevIoctl(vm: VmLike, id: number, data?: unknown): number {
  return kvmAssert(
    () => sevCmdName(id),
    () => sevOp(vm, id, data),
  );
}

/** The try form of sevIoctl: the errno name, or undefined on success. */
export function trySevIoctl(vm: VmLike, id: number, data?: unknown): Errno | undefined {
  return tryKvm(() => sevOp(vm, id, data));
}

/** `KVM_SEV_<NAME>` of a command id, for messages. */
export function sevCmdName(id: number): string {
  const hit = Object.entries(SEV_CMD).find(([, v]) => v === id);
  return hit ? `KVM_SEV_${hit[0]}` : `KVM_MEMORY_ENCRYPT_OP ${id}`;
}

/** sev_vm_init (legacy): KVM_SEV_INIT on a default-type VM. */
export function sevInit(vm: VmLike): void {
  sevIoctl(vm, SEV_CMD.INIT);
}
/** The try form of sevInit. */
export function trySevInit(vm: VmLike): Errno | undefined {
  return trySevIoctl(vm, SEV_CMD.INIT);
}
/** sev_es_vm_init (legacy): KVM_SEV_ES_INIT on a default-type VM. */
export function sevEsInit(vm: VmLike): void {
  sevIoctl(vm, SEV_CMD.ES_INIT);
}
/** The try form of sevEsInit. */
export function trySevEsInit(vm: VmLike): Errno | undefined {
  return trySevIoctl(vm, SEV_CMD.ES_INIT);
}

function init2Data(init: Partial<SevInitData>): SevInitData {
  return { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0, ...init };
}
/** KVM_SEV_INIT2 with `init` (default: no VMSA features, no flags, default GHCB version). */
export function sevInit2(vm: VmLike, init: Partial<SevInitData> = {}): void {
  sevIoctl(vm, SEV_CMD.INIT2, init2Data(init));
}
/** The try form of sevInit2. */
export function trySevInit2(vm: VmLike, init: Partial<SevInitData> = {}): Errno | undefined {
  return trySevIoctl(vm, SEV_CMD.INIT2, init2Data(init));
}

/** KVM_SEV_GUEST_STATUS: the firmware's `{ handle, policy, state }`. */
export function sevGuestStatus(vm: VmLike): SevGuestStatusData {
  const data: SevGuestStatusData = { handle: 0, policy: 0, state: 0 };
  sevIoctl(vm, SEV_CMD.GUEST_STATUS, data);
  return data;
}

function moveFrom(dst: VmLike, src: VmLike): void {
  const d = asTestVm(dst);
  const s = asTestVm(src);
  const target = migrationSourceOf(d) === s;
  // Plain SEV: KVM moves no register state; the VMM carries it (KVM_GET/SET_SREGS, KVM_GET/SET_REGS)
  // before the source dies. SEV-ES moves it with the VMSA (sev_migrate_from()).
  if (target && !isSevEs(s))
    d.vcpus.forEach((v, i) => {
      const from = s.vcpus[i];
      if (from === undefined) return;
      v.setSregs(from.getSregs());
      v.setRegs(from.getRegs());
    });
  d.raw.enableCap(CAP.VM_MOVE_ENC_CONTEXT_FROM, [s.raw]);
  noteEncContext('move', d, s);
  // The launch state moves with the encryption context.
  kitState(d).tookContextFrom(kitState(s), target);
  if (target) {
    // The guest keeps the pool it was given: its ucalls now arrive on the target's vCPUs.
    if (ucallPoolOf(s.raw) !== undefined) ucallMovePool(s.raw, d.raw);
  }
}
/** KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM: moves `src`'s encryption context (and launch state) into `dst`; `src` becomes dead. */
export function sevMigrateFrom(dst: VmLike, src: VmLike): void {
  kvmAssert('KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM', () => moveFrom(dst, src));
}
/** The try form of sevMigrateFrom: `trySevMigrateFrom(dst, src) === 'EINVAL'`. */
export function trySevMigrateFrom(dst: VmLike, src: VmLike): Errno | undefined {
  return tryKvm(() => moveFrom(dst, src));
}
/** KVM_CAP_VM_COPY_ENC_CONTEXT_FROM: makes `dst` a mirror sharing `src`'s encryption context. */
export function sevMirrorFrom(dst: VmLike, src: VmLike): void {
  kvmAssert('KVM_CAP_VM_COPY_ENC_CONTEXT_FROM', () => mirrorFrom(dst, src));
}
/** The try form of sevMirrorFrom. */
export function trySevMirrorFrom(dst: VmLike, src: VmLike): Errno | undefined {
  return tryKvm(() => mirrorFrom(dst, src));
}
function mirrorFrom(dst: VmLike, src: VmLike): void {
  rawOf(dst).enableCap(CAP.VM_COPY_ENC_CONTEXT_FROM, [rawOf(src)]);
  noteEncContext('mirror', asTestVm(dst), asTestVm(src));
}

function requireSev(vm: TestVm): void {
  // svm/sev.c: sev_mem_enc_ioctl() refuses the legacy launch commands on an SNP guest (EPERM).
  if (vm.traits.launchFlow === 'snp')
    throw new TestkitError(
      'WRONG_VM_TYPE',
      `legacy SEV launch commands are refused on an SNP guest (EPERM, svm/sev.c: sev_mem_enc_ioctl()): the launch of a ${vm.type} VM is vmSnpLaunch (SNP_LAUNCH_START, SNP_LAUNCH_UPDATE, SNP_LAUNCH_FINISH)`,
      { type: vm.type },
    );
  if (vm.traits.launchFlow === 'tdx')
    throw new TestkitError(
      'WRONG_VM_TYPE',
      'SEV launch commands do not apply to a TD (VM type tdx): its launch is vmTdxLaunch (KVM_TDX_INIT_MEM_REGION, KVM_TDX_FINALIZE_VM)',
      { type: vm.type },
    );
}

/** LAUNCH_START with `policy` (default: the VM's), then asserts GUEST_STATUS = LAUNCH_UPDATE with that policy. */
export function sevLaunchStart(vmLike: VmLike, policy?: LaunchPolicy): void {
  const vm = asTestVm(vmLike);
  requireSev(vm);
  const p = policy === undefined ? vm.policy : Number(policyValue(policy, 32));
  const data: SevLaunchStartData = { handle: 0, policy: p };
  sevIoctl(vm, SEV_CMD.LAUNCH_START, data);
  kitState(vm).launchStarted(p);
  const status = sevGuestStatus(vm);
  testAssertState(
    status.policy === p,
    `GUEST_STATUS policy 0x${status.policy.toString(16)} != launch policy 0x${p.toString(16)}`,
  );
  testAssertState(
    status.state === SEV_GUEST_STATE.LAUNCH_UPDATE,
    `GUEST_STATUS state ${status.state} after LAUNCH_START, expected LAUNCH_UPDATE (${SEV_GUEST_STATE.LAUNCH_UPDATE})`,
  );
}

/**
 * LAUNCH_UPDATE_DATA over every range of protected (private) pages of every memslot (registering the
 * slot's memory first, as encrypt_region does), then LAUNCH_UPDATE_VMSA when the VM is SEV-ES; the
 * page tables are protected afterwards. A barebones VM has no memory: only the VMSA step applies.
 */
export function sevLaunchUpdate(vmLike: VmLike): void {
  const vm = asTestVm(vmLike);
  requireSev(vm);
  const mem = kitState(vm).mem;
  if (mem) {
    const { space } = mem;
    for (const region of space.memory.regions()) {
      const ranges = space.allocator.protectedRanges(region.slot);
      if (ranges.length === 0) continue;
      kvmAssert('KVM_MEMORY_ENCRYPT_REG_REGION', () =>
        vm.raw.memEncryptRegRegion({ addr: hostPtr(region.backing, 0), size: region.size }),
      );
      for (const r of ranges)
        sevIoctl(vm, SEV_CMD.LAUNCH_UPDATE_DATA, {
          uaddr: hostPtr(region.backing, region.offsetOf(r.gpa)),
          len: r.pages * 4096,
        });
    }
  }
  if (isSevEs(vm)) sevIoctl(vm, SEV_CMD.LAUNCH_UPDATE_VMSA);
  kitState(vm).launchUpdated();
}

function isSevEs(vm: TestVm): boolean {
  // The type's traits decide for SEV-ES VMs; a legacy VM (KVM_SEV_INIT on a type without a launch
  // of its own) is ES when its policy says so.
  if (vm.traits.launchFlow === 'sev') return vm.traits.protectedState;
  return vm.traits.launchFlow === 'none' && (vm.policy & (1 << SEV_POLICY_BIT.ES)) !== 0;
}

/** LAUNCH_MEASURE: returns the measurement and asserts GUEST_STATUS = LAUNCH_SECRET. */
export function sevLaunchMeasure(vmLike: VmLike): Uint8Array {
  const vm = asTestVm(vmLike);
  requireSev(vm);
  const buf = new Uint8Array(SEV_MEASUREMENT_LEN);
  const data: SevLaunchMeasureData = { uaddr: hostPtr(buf), len: buf.length };
  sevIoctl(vm, SEV_CMD.LAUNCH_MEASURE, data);
  kitState(vm).launchMeasured();
  const status = sevGuestStatus(vm);
  testAssertState(
    status.state === SEV_GUEST_STATE.LAUNCH_SECRET,
    `GUEST_STATUS state ${status.state} after LAUNCH_MEASURE, expected LAUNCH_SECRET (${SEV_GUEST_STATE.LAUNCH_SECRET})`,
  );
  return buf.slice(0, Math.min(data.len, buf.length));
}

/** LAUNCH_FINISH: asserts the state is LAUNCH_UPDATE or LAUNCH_SECRET before, RUNNING after. */
export function sevLaunchFinish(vmLike: VmLike): void {
  const vm = asTestVm(vmLike);
  requireSev(vm);
  const before = sevGuestStatus(vm);
  testAssertState(
    before.state === SEV_GUEST_STATE.LAUNCH_UPDATE || before.state === SEV_GUEST_STATE.LAUNCH_SECRET,
    `GUEST_STATUS state ${before.state} before LAUNCH_FINISH, expected LAUNCH_UPDATE or LAUNCH_SECRET`,
  );
  sevIoctl(vm, SEV_CMD.LAUNCH_FINISH);
  kitState(vm).launchFinished();
  const after = sevGuestStatus(vm);
  testAssertState(
    after.state === SEV_GUEST_STATE.RUNNING,
    `GUEST_STATUS state ${after.state} after LAUNCH_FINISH, expected RUNNING (${SEV_GUEST_STATE.RUNNING})`,
  );
}

/** Options of vmSevLaunch. */
export interface SevLaunchOptions {
  /** Launch policy (default: the VM's — 0 for sev, SEV_POLICY_ES for sev-es). */
  policy?: LaunchPolicy;
}

/** vm_sev_launch: START, UPDATE (+VMSA), MEASURE, FINISH; returns the launch measurement. */
export function vmSevLaunch(vmLike: VmLike, opts: SevLaunchOptions = {}): Uint8Array {
  const vm = asTestVm(vmLike);
  sevLaunchStart(vm, opts.policy);
  sevLaunchUpdate(vm);
  const m = sevLaunchMeasure(vm);
  sevLaunchFinish(vm);
  return m;
}

/** The SEV flow from the VM's current stage on: START, UPDATE (+VMSA), MEASURE, FINISH (the SEV table's launch hook). */
export function sevLaunchRemaining(vm: TestVm): void {
  if (vm.launchStage === 'none') sevLaunchStart(vm);
  if (vm.launchStage === 'started') sevLaunchUpdate(vm);
  if (vm.launchStage === 'updated') sevLaunchMeasure(vm);
  if (vm.launchStage === 'measured') sevLaunchFinish(vm);
}
