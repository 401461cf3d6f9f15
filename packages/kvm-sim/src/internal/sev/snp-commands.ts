// The SEV-SNP commands of KVM_MEMORY_ENCRYPT_OP (arch/x86/kvm/svm/sev.c: `snp_launch_start`,
// `snp_launch_update` + guest_memfd.c `kvm_gmem_populate` + `sev_gmem_post_populate`,
// `snp_launch_finish` + `snp_launch_update_vmsa`), each check in the kernel's order with its errno.
// The dispatcher (./commands.ts) has already applied the mirror and "legacy id on SNP → EPERM" gates.

import { hex, SNP_PAGE_TYPE, type SnpPageType, snpPolicyProblems } from '@kvmtest/coco';
import { type HostPtr, MEM_FLAG, MEMORY_ATTRIBUTE, SEV_RET } from '@kvmtest/kvm';
import type { ArchMemslot } from '../arch/ops.js';
import type { SevCmdCopy } from './types.js';
import type { SevPlatformCore } from './types.js';
import { SNP_ID_AUTH_SIZE, SNP_ID_BLOCK_SIZE, SNP_HOST_DATA_LEN } from './snp-firmware.js';
import { gmemPage, snpVcpu, snpVm } from './snp-state.js';
import { sevSnpGuest } from './state.js';
import { copyToUser, fail, PAGE_SIZE, StructReader } from './uaccess.js';
import type { SevVmView } from './views.js';
import { DR7_FIXED_1, syncVmsa } from './vmsa.js';

const PAGE = 4096n;
const VALID_TYPES: ReadonlySet<number> = new Set([
  SNP_PAGE_TYPE.NORMAL,
  SNP_PAGE_TYPE.ZERO,
  SNP_PAGE_TYPE.UNMEASURED,
  SNP_PAGE_TYPE.SECRETS,
  SNP_PAGE_TYPE.CPUID,
]);

/** `snp_launch_start` (arch/x86/kvm/svm/sev.c, KVM_SEV_SNP_LAUNCH_START = 100). */
export function snpLaunchStart(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  if (!sevSnpGuest(s))
    fail('ENOTTY', op, 'the VM is not an SEV-SNP guest (KVM_SEV_INIT2 on a sev-snp VM first)');
  const rd = new StructReader(c.data, op, 'struct kvm_sev_snp_launch_start');
  const policy = rd.u64('policy');
  const gosvw = rd.bytes('gosvw', 16) ?? new Uint8Array(16);
  const flags = rd.uint('flags', 16);
  const snp = snpVm(s);
  // "Don't allow multiple calls" (snp_context already exists).
  if (snp.gctx !== 0) fail('EINVAL', op, 'the SNP guest context already exists (SNP_LAUNCH_START ran)');
  if (flags !== 0) fail('EINVAL', op, `flags ${hex(flags)} must be 0`);
  const [problem] = snpPolicyProblems(policy);
  if (problem !== undefined)
    fail(
      'EINVAL',
      op,
      problem.rule === 'unsupported-bits'
        ? `policy ${hex(policy)} has bits ${problem.bits.join(', ')} outside KVM's valid mask`
        : problem.rule === 'rsvd-mbo-clear'
          ? `policy ${hex(policy)} lacks bit 17 (RSVD_MBO), which must be one`
          : `policy ${hex(policy)} sets bit 20 (SINGLE_SOCKET), which KVM does not support`,
      { policy },
    );
  // snp_context_create: SNP_GCTX_CREATE through the caller's sev_fd; any failure there is ENOTTY.
  if (!p.host.isSevDeviceFd(c.sevFd))
    fail(
      'ENOTTY',
      op,
      `creating the SNP guest context failed: fd ${c.sevFd} is not an open /dev/sev descriptor`,
    );
  const created = p.snp.gctxCreate();
  c.error = created.status;
  if (created.status !== SEV_RET.SUCCESS)
    fail('ENOTTY', op, `SNP_GCTX_CREATE failed with status ${hex(created.status)}`, {}, created.status);
  const gctx = created.gctx;
  const st = p.snp.launchStart(gctx, policy, gosvw);
  c.error = st;
  if (st !== SEV_RET.SUCCESS) {
    p.snp.decommission(gctx);
    fail('EIO', op, `SNP_LAUNCH_START: firmware status ${hex(st)}`, { status: st }, st);
  }
  // snp_bind_asid: SNP_ACTIVATE; on failure the context is decommissioned.
  const act = p.snp.activate(gctx, s.asid);
  c.error = act;
  if (act !== SEV_RET.SUCCESS) {
    p.snp.decommission(gctx);
    fail('EIO', op, `SNP_ACTIVATE of ASID ${s.asid}: firmware status ${hex(act)}`, { status: act }, act);
  }
  snp.gctx = gctx;
  s.fd = c.sevFd;
  s.policy = Number(policy & 0xffff_ffffn);
}

/** Outcome of one populated page (kvm_gmem_populate + sev_gmem_post_populate): 0 or the internal errno. */
type PageFailure = { ok: false; errno: string; why: string; fwError: number };
type PageResult = { ok: true } | PageFailure;

/** `snp_launch_update` (arch/x86/kvm/svm/sev.c, KVM_SEV_SNP_LAUNCH_UPDATE = 101): progress is written back; a failure on the first page is EIO. */
export function snpLaunchUpdate(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  const snp = snpVm(s);
  if (!sevSnpGuest(s) || snp.gctx === 0)
    fail('EINVAL', op, 'the VM is not an SEV-SNP guest or has no SNP context (SNP_LAUNCH_START first)');
  const rd = new StructReader(c.data, op, 'struct kvm_sev_snp_launch_update');
  const gfnStart = rd.u64('gfnStart');
  const uaddr = rd.ptr('uaddr');
  const len = rd.u64('len');
  const type = rd.uint('type', 8);
  const flags = rd.uint('flags', 16);
  if ((len & (PAGE - 1n)) !== 0n || flags !== 0 || !VALID_TYPES.has(type))
    fail(
      'EINVAL',
      op,
      (len & (PAGE - 1n)) !== 0n
        ? `len ${hex(len)} is not page aligned`
        : flags !== 0
          ? `flags ${hex(flags)} must be 0`
          : `page type ${type} is not NORMAL, ZERO, UNMEASURED, SECRETS or CPUID`,
    );
  const core = vm.core;
  if (core === undefined) throw new Error('internal: SNP_LAUNCH_UPDATE needs the core VM view');
  // Under slots_lock: the memslot at gfn_start must be able to hold private memory.
  const slot = core.memslotAt(gfnStart * PAGE);
  if (slot === undefined || (slot.flags & MEM_FLAG.GUEST_MEMFD) === 0)
    fail('EINVAL', op, `GFN ${hex(gfnStart)} is not in a guest_memfd memslot`, { gfn: gfnStart });
  // kvm_gmem_populate: clamp to the slot; stop at the first failing page.
  const slotPagesLeft = (slot.gpa + slot.size) / PAGE - gfnStart;
  let npages = len / PAGE;
  if (npages > slotPagesLeft) npages = slotPagesLeft;
  let done = 0n;
  let failure: PageFailure | undefined;
  for (; done < npages; done++) {
    const gfn = gfnStart + done;
    const src: HostPtr | undefined =
      type === SNP_PAGE_TYPE.ZERO || uaddr === undefined
        ? undefined
        : { buffer: uaddr.buffer, offset: uaddr.offset + Number(done) * PAGE_SIZE };
    const r = populatePage(p, vm, slot, gfn, type as SnpPageType, src, c.sevFd, type !== SNP_PAGE_TYPE.ZERO);
    if (!r.ok) {
      failure = r;
      break;
    }
  }
  if (failure !== undefined && done === 0n) {
    c.error = failure.fwError;
    fail(
      'EIO',
      op,
      `populating GFN ${hex(gfnStart)} failed (${failure.errno}): ${failure.why}`,
      { gfn: gfnStart },
      failure.fwError,
    );
  }
  const out: Record<string, unknown> = { gfnStart: gfnStart + done, len: len - done * PAGE };
  if (type !== SNP_PAGE_TYPE.ZERO && uaddr !== undefined)
    out.uaddr = { buffer: uaddr.buffer, offset: uaddr.offset + Number(done) * PAGE_SIZE };
  copyToUser(c.data, out, op, 'struct kvm_sev_snp_launch_update');
}

// One page of kvm_gmem_populate (folio, "already prepared", PRIVATE attribute) and sev_gmem_post_populate
// (source, RMP state, copy, rmp_make_private, SNP_LAUNCH_UPDATE; reclaim on firmware failure).
function populatePage(
  p: SevPlatformCore,
  vm: SevVmView,
  slot: ArchMemslot,
  gfn: bigint,
  type: SnpPageType,
  src: HostPtr | undefined,
  sevFd: number,
  needSrc: boolean,
): PageResult {
  const s = vm.sev;
  const core = vm.core!;
  const gpa = gfn * PAGE;
  // kvm_gmem_get_file: the guest_memfd is gone.
  if (!slot.hasGmem)
    return { ok: false, errno: 'EFAULT', why: 'the guest_memfd of the slot was closed', fwError: 0 };
  // A folio already prepared (faulted in or populated) → EEXIST; so is an assigned RMP entry.
  if (p.rmp.lookup(s, gfn) !== undefined)
    return {
      ok: false,
      errno: 'EEXIST',
      why: `the RMP entry of GFN ${hex(gfn)} is already assigned`,
      fwError: 0,
    };
  if ((core.memoryAttributes(gpa) & MEMORY_ATTRIBUTE.PRIVATE) === 0n)
    return {
      ok: false,
      errno: 'EINVAL',
      why: `GFN ${hex(gfn)} does not have the PRIVATE memory attribute`,
      fwError: 0,
    };
  if (needSrc && src === undefined)
    return {
      ok: false,
      errno: 'EINVAL',
      why: 'uaddr is NULL for a page type that copies contents',
      fwError: 0,
    };
  let bytes: Uint8Array | undefined;
  if (src !== undefined) {
    if (src.offset + PAGE_SIZE > src.buffer.length)
      return {
        ok: false,
        errno: 'EFAULT',
        why: `the source page at offset ${src.offset} is not mapped`,
        fwError: 0,
      };
    bytes = src.buffer.subarray(src.offset, src.offset + PAGE_SIZE);
  }
  // __sev_issue_cmd through the caller's sev_fd.
  if (!p.host.isSevDeviceFd(sevFd))
    return { ok: false, errno: 'EBADF', why: `fd ${sevFd} is not an open /dev/sev descriptor`, fwError: 0 };
  // A firmware refusal (context state) comes before the page changes: snp_page_reclaim then leaves the
  // page hypervisor-owned and the guest_memfd page as it was, so the model checks it first.
  const gctx = snpVm(s).gctx;
  const pre = p.snp.launchUpdateStatus(gctx);
  if (pre !== SEV_RET.SUCCESS)
    return { ok: false, errno: 'EIO', why: `SNP_LAUNCH_UPDATE firmware status ${hex(pre)}`, fwError: pre };
  const target = gmemPage(slot, gpa, true)!;
  if (bytes !== undefined) target.set(bytes);
  else target.fill(0);
  const entry = p.rmp.assign(s, gfn, s.asid, false, true);
  const st = p.snp.launchUpdate(gctx, gpa, type, target);
  if (st !== SEV_RET.SUCCESS)
    throw new Error(`internal: SNP_LAUNCH_UPDATE failed after its check (${hex(st)})`);
  // Launch pages are validated by the firmware.
  entry.validated = true;
  return { ok: true };
}

/** `snp_launch_finish` (arch/x86/kvm/svm/sev.c, KVM_SEV_SNP_LAUNCH_FINISH = 102): every vCPU's VMSA measured (type VMSA), then LAUNCH_FINISH. */
export function snpLaunchFinish(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  if (!sevSnpGuest(s)) fail('ENOTTY', op, 'the VM is not an SEV-SNP guest');
  const snp = snpVm(s);
  if (snp.gctx === 0) fail('EINVAL', op, 'the VM has no SNP context (SNP_LAUNCH_START first)');
  const rd = new StructReader(c.data, op, 'struct kvm_sev_snp_launch_finish');
  const idBlock = rd.bytes('idBlock');
  const idAuth = rd.bytes('idAuth');
  const hostData = rd.bytes('hostData', SNP_HOST_DATA_LEN) ?? new Uint8Array(SNP_HOST_DATA_LEN);
  const flags = rd.uint('flags', 16);
  if (flags !== 0) fail('EINVAL', op, `flags ${hex(flags)} must be 0`);
  // snp_launch_update_vmsa: one vCPU at a time through the stored fd.
  if (!p.host.isSevDeviceFd(s.fd))
    fail('EBADF', op, `fd ${s.fd} is not an open /dev/sev descriptor`, { fd: s.fd });
  for (const vcpu of vm.vcpus()) {
    if (vcpu.guestDebug) fail('EINVAL', op, `vCPU ${vcpu.id} has KVM_SET_GUEST_DEBUG enabled`);
    if ((vcpu.dr7 & ~DR7_FIXED_1) !== 0n)
      fail('EINVAL', op, `vCPU ${vcpu.id} DR7 ${hex(vcpu.dr7)} has breakpoints set`);
    const vmsa = syncVmsa(s.vmType, vcpu, s.vmsaFeatures);
    const st = p.snp.launchUpdateVmsa(snp.gctx, vmsa);
    c.error = st;
    if (st !== SEV_RET.SUCCESS)
      fail(
        'EIO',
        op,
        `SNP_LAUNCH_UPDATE (VMSA of vCPU ${vcpu.id}): firmware status ${hex(st)}`,
        { status: st },
        st,
      );
    vcpu.sev.vmsa = vmsa;
    vcpu.sev.guestStateProtected = true;
    snpVcpu(vcpu.sev).vmsaLaunched = true;
  }
  // The ID block and its authentication page are optional (id_block_en).
  if (idBlock !== undefined) {
    if (idBlock.length !== SNP_ID_BLOCK_SIZE)
      fail(
        'EFAULT',
        op,
        `copy of the ID block (${SNP_ID_BLOCK_SIZE} bytes) failed: ${idBlock.length} bytes given`,
      );
    if (idAuth === undefined || idAuth.length !== SNP_ID_AUTH_SIZE)
      fail('EFAULT', op, `copy of the ID authentication page (${SNP_ID_AUTH_SIZE} bytes) failed`);
  }
  const st = p.snp.launchFinish(snp.gctx, hostData, idBlock);
  c.error = st;
  if (st !== SEV_RET.SUCCESS)
    fail('EIO', op, `SNP_LAUNCH_FINISH: firmware status ${hex(st)}`, { status: st }, st);
  snp.launched = true;
}
