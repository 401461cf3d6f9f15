// A port of the kernel's tools/testing/selftests/kvm/x86/sev_migrate_tests.c (the kernel side is
// arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from(), sev_vm_copy_enc_context_from()): SEV and
// SEV-ES encryption contexts moved (KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM) and copied to mirrors
// (KVM_CAP_VM_COPY_ENC_CONTEXT_FROM) between VMs that never run a guest. Every VM is barebones —
// no memory, no image, no ucall — and SEV is set up with the legacy KVM_SEV_INIT / ES_INIT, as
// in the original. Each test function of the original is one case; the SEV-ES variants skip on a
// host without SEV-ES, as the original's `have_sev_es` does.

import { SEV_POLICY_BIT } from '@kvmtest/coco';
import {
  CAP,
  type CpuidEntry,
  type Errno,
  findCpuid,
  KvmError,
  SEV_CMD,
  SEV_GUEST_STATE,
} from '@kvmtest/kvm';
import {
  type CaseContext,
  defineSuite,
  getKvm,
  sevEsInit,
  sevGuestStatus,
  sevInit,
  sevIoctl,
  sevLaunchStart,
  sevLaunchUpdate,
  sevMigrateFrom,
  sevMirrorFrom,
  type TestCase,
  type TestVm,
  testAssert,
  testRequire,
  trySevIoctl,
  trySevMigrateFrom,
  trySevMirrorFrom,
  vmCreateBarebones,
} from '@kvmtest/testkit';

const NR_MIGRATE_TEST_VCPUS = 4;
const NR_MIGRATE_TEST_VMS = 3;
const NR_LOCK_TESTING_THREADS = 3;
const NR_LOCK_TESTING_ITERATIONS = 10_000;
/** SEV_POLICY_ES: the guest must run with SEV-ES (include/linux/psp-sev.h). */
const SEV_POLICY_ES = 1 << SEV_POLICY_BIT.ES;

/** CPUID 0x8000001F EAX feature bits the original asks for (X86_FEATURE_SEV, X86_FEATURE_SEV_ES). */
const CPUID_SEV = 1 << 1;
const CPUID_SEV_ES = 1 << 3;

function sevCpuid(): CpuidEntry | undefined {
  return findCpuid(getKvm().getSupportedCpuid(), 0x8000001f);
}

/** The original's main(): both capabilities and X86_FEATURE_SEV, or the whole suite skips. */
function requireSev(): void {
  const kvm = getKvm();
  testRequire(
    kvm.checkExtension(CAP.VM_MOVE_ENC_CONTEXT_FROM) > 0,
    'Requirement not met: kvm_has_cap(KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM)',
  );
  testRequire(
    kvm.checkExtension(CAP.VM_COPY_ENC_CONTEXT_FROM) > 0,
    'Requirement not met: kvm_has_cap(KVM_CAP_VM_COPY_ENC_CONTEXT_FROM)',
  );
  testRequire(
    ((sevCpuid()?.eax ?? 0) & CPUID_SEV) !== 0,
    'Requirement not met: kvm_cpu_has(X86_FEATURE_SEV)',
  );
}

function haveSevEs(): boolean {
  return ((sevCpuid()?.eax ?? 0) & CPUID_SEV_ES) !== 0;
}

function requireSevEs(): void {
  requireSev();
  testRequire(haveSevEs(), 'Requirement not met: kvm_cpu_has(X86_FEATURE_SEV_ES)');
}

/** Every VM a case creates, closed at the end whatever happens (kvm_vm_free). */
class Vms {
  private readonly all: TestVm[] = [];

  /** aux_vm_create: a barebones VM, with NR_MIGRATE_TEST_VCPUS raw vCPUs if asked. */
  aux(withVcpus: boolean): TestVm {
    const vm = vmCreateBarebones();
    this.all.push(vm);
    if (withVcpus) for (let i = 0; i < NR_MIGRATE_TEST_VCPUS; i++) vm.raw.createVcpu(i);
    return vm;
  }

  /** sev_vm_create: legacy INIT or ES_INIT, four vCPUs, launch (START, UPDATE_DATA, UPDATE_VMSA for ES), then UPDATE_VMSA again for ES. */
  sev(es: boolean): TestVm {
    const vm = vmCreateBarebones();
    this.all.push(vm);
    if (es) sevEsInit(vm);
    else sevInit(vm);
    for (let i = 0; i < NR_MIGRATE_TEST_VCPUS; i++) vm.raw.createVcpu(i);
    launch(vm, es ? SEV_POLICY_ES : 0);
    if (es) sevIoctl(vm, SEV_CMD.LAUNCH_UPDATE_VMSA);
    return vm;
  }

  /** A barebones VM after ES_INIT with one vCPU (id 1) and no launch at all. */
  sevEsNoVmsa(): TestVm {
    const vm = vmCreateBarebones();
    this.all.push(vm);
    sevEsInit(vm);
    vm.raw.createVcpu(1);
    return vm;
  }

  free(vm: TestVm): void {
    vm.close();
  }

  [Symbol.dispose](): void {
    for (const vm of this.all) vm.close();
  }
}

/** sev_vm_launch as lib/x86/sev.c does it: START, GUEST_STATUS checks, UPDATE_DATA, UPDATE_VMSA for ES. */
function launch(vm: TestVm, policy: number): void {
  sevLaunchStart(vm, policy);
  const status = sevGuestStatus(vm);
  testAssert(status.policy === policy, 'Expected guest policy 0x%x, got 0x%x', policy, status.policy);
  testAssert(
    status.state === SEV_GUEST_STATE.LAUNCH_UPDATE,
    'Expected guest state LAUNCH_UPDATE (%d), got %d',
    SEV_GUEST_STATE.LAUNCH_UPDATE,
    status.state,
  );
  // encrypt_region() for every memslot: a barebones VM has none, so nothing is encrypted.
  sevLaunchUpdate(vm);
  if (policy & SEV_POLICY_ES) sevIoctl(vm, SEV_CMD.LAUNCH_UPDATE_VMSA);
}

function testSevMigrateFrom(es: boolean): void {
  using vms = new Vms();
  const src = vms.sev(es);
  const dst = Array.from({ length: NR_MIGRATE_TEST_VMS }, () => vms.aux(true));
  // Initial migration from the src to the first dst, then along the chain.
  sevMigrateFrom(dst[0]!, src);
  for (let i = 1; i < NR_MIGRATE_TEST_VMS; i++) sevMigrateFrom(dst[i]!, dst[i - 1]!);
  // Migrate the guest back to the original VM: it was migrated from, so it is dead.
  const errno = trySevMigrateFrom(src, dst[NR_MIGRATE_TEST_VMS - 1]!);
  testAssert(errno === 'EIO', 'VM that was migrated from should be dead. errno: %s', String(errno));
}

/**
 * __sev_migrate_from issued from a thread of its own: with a backend that models the kernel's
 * sleeping points (Vm.enableCapAsync), the MOVE may be preempted while it holds the two-VM lock, so
 * the other "threads" contend on migration_in_progress (EBUSY). Returns the errno, or undefined.
 */
async function trySevMigrateFromThread(dst: TestVm, src: TestVm): Promise<Errno | undefined> {
  const raw = dst.raw;
  if (raw.enableCapAsync === undefined) return trySevMigrateFrom(dst, src);
  try {
    await raw.enableCapAsync(CAP.VM_MOVE_ENC_CONTEXT_FROM, [src.raw]);
    return undefined;
  } catch (e) {
    if (e instanceof KvmError) return e.code;
    throw e;
  }
}

/**
 * test_sev_migrate_locking: three SEV VMs, three "threads" each migrating into its own VM from
 * every VM in turn. In the kernel they are pthreads racing on migration_in_progress and kvm->lock;
 * here they are async tasks, and a MOVE holding the two-VM lock may be preempted by the seeded
 * scheduler (KVMTEST_SEED replays the order), so they contend as the pthreads do. Returns the
 * count of each result; a deadlock would leave the case to its timeout, which prints the seed.
 */
export async function migrateLocking(
  iterations = NR_LOCK_TESTING_ITERATIONS,
  onProgress?: (done: number, total: number) => void,
): Promise<Map<string, number>> {
  using vms = new Vms();
  const sources = Array.from({ length: NR_LOCK_TESTING_THREADS }, () => vms.sev(false));
  const total = NR_LOCK_TESTING_THREADS * iterations;
  let done = 0;
  // The original ignores the results and only checks there is no deadlock or crash; we also check
  // each result is one the kernel can give here: self-migration and an SEV destination are EINVAL,
  // contention on migration_in_progress is EBUSY.
  const seen = new Map<string, number>();
  const thread = async (vm: TestVm) => {
    for (let i = 0; i < iterations; i++) {
      const r = (await trySevMigrateFromThread(vm, sources[i % NR_LOCK_TESTING_THREADS]!)) ?? 'success';
      testAssert(
        r === 'EINVAL' || r === 'EBUSY',
        'migration returned %s, which the kernel cannot return here',
        r,
      );
      seen.set(r, (seen.get(r) ?? 0) + 1);
      if (++done % 1000 === 0) onProgress?.(done, total);
    }
  };
  await Promise.all(sources.map(thread));
  return seen;
}

async function testSevMigrateLocking(ctx: CaseContext): Promise<void> {
  const seen = await migrateLocking(NR_LOCK_TESTING_ITERATIONS, (d, t) => ctx.progress(d, t));
  ctx.log(
    '%d migrations: %s',
    NR_LOCK_TESTING_THREADS * NR_LOCK_TESTING_ITERATIONS,
    [...seen].map(([k, v]) => `${k} ${v}`).join(', '),
  );
  // Where the backend models the kernel's sleeping points, the threads really contend.
  if (modelsContention())
    testAssert(
      seen.has('EBUSY'),
      'no migration met another holding the lock (no EBUSY) in %d',
      NR_LOCK_TESTING_THREADS * NR_LOCK_TESTING_ITERATIONS,
    );
}

/** Whether the backend's VMs take KVM_ENABLE_CAP from a thread of their own (enableCapAsync). */
function modelsContention(): boolean {
  using vms = new Vms();
  return vms.aux(false).raw.enableCapAsync !== undefined;
}

function testSevMigrateParameters(): void {
  using vms = new Vms();
  const vmNoVcpu = vms.aux(false);
  const vmNoSev = vms.aux(true);
  let errno = trySevMigrateFrom(vmNoVcpu, vmNoSev);
  testAssert(errno === 'EINVAL', 'Migrations require SEV enabled. errno: %s', String(errno));

  if (!haveSevEs()) return;

  const sevVm = vms.sev(false);
  const sevEsVm = vms.sev(true);
  const sevEsVmNoVmsa = vms.sevEsNoVmsa();

  errno = trySevMigrateFrom(sevVm, sevEsVm);
  testAssert(errno === 'EINVAL', 'Should not be able migrate to SEV enabled VM. errno: %s', String(errno));
  errno = trySevMigrateFrom(sevEsVm, sevVm);
  testAssert(errno === 'EINVAL', 'Should not be able migrate to SEV-ES enabled VM. errno: %s', String(errno));
  errno = trySevMigrateFrom(vmNoVcpu, sevEsVm);
  testAssert(errno === 'EINVAL', 'SEV-ES migrations require same number of vCPUS. errno: %s', String(errno));
  errno = trySevMigrateFrom(vmNoVcpu, sevEsVmNoVmsa);
  testAssert(errno === 'EINVAL', 'SEV-ES migrations require UPDATE_VMSA. errno: %s', String(errno));
}

/** verify_mirror_allowed_cmds: every command but the four a mirror may issue is EINVAL even with NULL data. */
function verifyMirrorAllowedCmds(vm: TestVm): void {
  const allowed = new Set<number>([
    SEV_CMD.LAUNCH_UPDATE_VMSA,
    SEV_CMD.GUEST_STATUS,
    SEV_CMD.DBG_DECRYPT,
    SEV_CMD.DBG_ENCRYPT,
  ]);
  for (let id = SEV_CMD.INIT; id < SEV_CMD.NR_MAX; id++) {
    if (allowed.has(id)) continue;
    // These commands are rejected before the data parameter is examined, so NULL is fine.
    const errno = trySevIoctl(vm, id, undefined);
    testAssert(errno === 'EINVAL', 'Should not be able call command: %d. errno: %s', id, String(errno));
  }
  sevGuestStatus(vm);
}

function testSevMirror(es: boolean): void {
  using vms = new Vms();
  const src = vms.sev(es);
  const dst = vms.aux(false);
  sevMirrorFrom(dst, src);
  // Check that we can complete creation of the mirror VM.
  for (let i = 0; i < NR_MIGRATE_TEST_VCPUS; i++) dst.raw.createVcpu(i);
  if (es) sevIoctl(dst, SEV_CMD.LAUNCH_UPDATE_VMSA);
  verifyMirrorAllowedCmds(dst);
}

function testSevMirrorParameters(): void {
  using vms = new Vms();
  const sevVm = vms.sev(false);
  const vmWithVcpu = vms.aux(true);
  const vmNoVcpu = vms.aux(false);

  let errno = trySevMirrorFrom(sevVm, sevVm);
  testAssert(errno === 'EINVAL', 'Should not be able copy context to self. errno: %s', String(errno));
  errno = trySevMirrorFrom(vmNoVcpu, vmWithVcpu);
  testAssert(errno === 'EINVAL', 'Copy context requires SEV enabled. errno: %s', String(errno));
  errno = trySevMirrorFrom(vmWithVcpu, sevVm);
  testAssert(
    errno === 'EINVAL',
    'SEV copy context requires no vCPUS on the destination. errno: %s',
    String(errno),
  );

  if (!haveSevEs()) return;

  const sevEsVm = vms.sev(true);
  errno = trySevMirrorFrom(sevVm, sevEsVm);
  testAssert(
    errno === 'EINVAL',
    'Should not be able copy context to SEV enabled VM. errno: %s',
    String(errno),
  );
  errno = trySevMirrorFrom(sevEsVm, sevVm);
  testAssert(
    errno === 'EINVAL',
    'Should not be able copy context to SEV-ES enabled VM. errno: %s',
    String(errno),
  );
}

function testSevMoveCopy(): void {
  {
    using vms = new Vms();
    const sevVm = vms.sev(false);
    const dstVm = vms.aux(true);
    const dst2Vm = vms.aux(true);
    const dst3Vm = vms.aux(true);
    const mirrorVm = vms.aux(false);
    const dstMirrorVm = vms.aux(false);
    const dst2MirrorVm = vms.aux(false);
    const dst3MirrorVm = vms.aux(false);

    sevMirrorFrom(mirrorVm, sevVm);
    sevMigrateFrom(dstMirrorVm, mirrorVm);
    sevMigrateFrom(dstVm, sevVm);
    sevMigrateFrom(dst2Vm, dstVm);
    sevMigrateFrom(dst2MirrorVm, dstMirrorVm);
    sevMigrateFrom(dst3MirrorVm, dst2MirrorVm);
    sevMigrateFrom(dst3Vm, dst2Vm);

    for (const vm of [dstVm, sevVm, dst2Vm, dst3Vm, mirrorVm, dstMirrorVm, dst2MirrorVm, dst3MirrorVm])
      vms.free(vm);
  }
  // The same again, destroying the mirrors before the mirrored VMs, to check destruction is safe.
  using vms = new Vms();
  const sevVm = vms.sev(false);
  const dstVm = vms.aux(true);
  const mirrorVm = vms.aux(false);
  const dstMirrorVm = vms.aux(false);
  sevMirrorFrom(mirrorVm, sevVm);
  sevMigrateFrom(dstMirrorVm, mirrorVm);
  sevMigrateFrom(dstVm, sevVm);
  for (const vm of [mirrorVm, dstMirrorVm, dstVm, sevVm]) vms.free(vm);
}

/** A case that first checks the original's requirements (SEV, or SEV-ES for the `_es` variants). */
function sevCase(name: string, body: (ctx: CaseContext) => void | Promise<void>, es = false): TestCase {
  return {
    name,
    run: (ctx) => {
      if (es) requireSevEs();
      else requireSev();
      return body(ctx);
    },
  };
}

/** The suite: one case per test function of the original, in its order. */
export default defineSuite({
  name: 'sev-migrate-tests',
  cases: [
    sevCase('sev_migrate_from', () => testSevMigrateFrom(false)),
    sevCase('sev_migrate_from_es', () => testSevMigrateFrom(true), true),
    sevCase('sev_migrate_locking', testSevMigrateLocking),
    sevCase('sev_migrate_parameters', testSevMigrateParameters),
    sevCase('sev_move_copy', testSevMoveCopy),
    sevCase('sev_mirror', () => testSevMirror(false)),
    sevCase('sev_mirror_es', () => testSevMirror(true), true),
    sevCase('sev_mirror_parameters', testSevMirrorParameters),
  ],
});
