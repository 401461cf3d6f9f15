// KVM_MEMORY_ENCRYPT_OP for SEV (`sev_mem_enc_ioctl`, arch/x86/kvm/svm/sev.c) and every legacy SEV/SEV-ES command
// handler (arch/x86/kvm/svm/sev.c: sev_guest_init() … sev_receive_finish()), plus REG_REGION / UNREG_REGION (arch/x86/kvm/svm/sev.c: sev_mem_enc_register_region(), sev_mem_enc_unregister_region()). Each handler runs its checks in
// the kernel's order and fails with the kernel's errno; firmware rejections are EIO with `error` set.

import { type HostPtr, SEV_CMD, SEV_RET } from '@kvmtest/kvm';
import type { SevCmdCopy, SevPlatformCore } from './types.js';
import { isMirror, sevEsGuest, sevGuest, sevSnpGuest, type SevVmState } from './state.js';
import {
  copyBytesFromUser,
  copyBytesToUser,
  copyToUser,
  fail,
  isHostPtr,
  PAGE_SIZE,
  pinMemory,
  pspCopyUserBlob,
  SEV_FW_BLOB_MAX_SIZE,
  StructReader,
  uaddrOf,
} from './uaccess.js';
import type { SevVmView } from './views.js';
import { DR7_FIXED_1, syncVmsa } from './vmsa.js';
import { snpLaunchFinish, snpLaunchStart, snpLaunchUpdate } from './snp-commands.js';

/** `struct kvm_sev_attestation_report` (GET_ATTESTATION_REPORT); `len` is in/out. */
export interface SevAttestationReportData {
  mnonce: Uint8Array;
  uaddr: HostPtr | undefined;
  len: number;
}
/** `struct kvm_sev_send_start`: certificate blobs by value, the session buffer by pointer; `policy` and `sessionLen` are written back. */
export interface SevSendStartData {
  policy: number;
  pdhCert?: Uint8Array | undefined;
  platCerts?: Uint8Array | undefined;
  amdCerts?: Uint8Array | undefined;
  session: HostPtr | undefined;
  sessionLen: number;
}
/** `struct kvm_sev_send_update_data`; `hdrLen`/`transLen` are written back in query mode. */
export interface SevSendUpdateData {
  hdr: HostPtr | undefined;
  hdrLen: number;
  guest: HostPtr | undefined;
  guestLen: number;
  trans: HostPtr | undefined;
  transLen: number;
}
/** `struct kvm_sev_receive_start`: `handle` is in/out. */
export interface SevReceiveStartData {
  handle: number;
  policy: number;
  pdh?: Uint8Array | undefined;
  session?: Uint8Array | undefined;
}
/** `struct kvm_sev_receive_update_data`. */
export interface SevReceiveUpdateData {
  hdr?: Uint8Array | undefined;
  guest: HostPtr | undefined;
  guestLen: number;
  trans?: Uint8Array | undefined;
}

/** The command ids a mirror may issue (`is_cmd_allowed_from_mirror`, arch/x86/kvm/svm/sev.c). */
export const MIRROR_ALLOWED_CMDS: ReadonlySet<number> = new Set([
  SEV_CMD.LAUNCH_UPDATE_VMSA,
  SEV_CMD.GUEST_STATUS,
  SEV_CMD.DBG_DECRYPT,
  SEV_CMD.DBG_ENCRYPT,
]);

const CMD_NAME: Record<number, string> = Object.fromEntries(
  Object.entries(SEV_CMD).map(([k, v]) => [v, `KVM_SEV_${k}`]),
);

type Handler = (p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string) => void;

/** `sev_mem_enc_ioctl` (arch/x86/kvm/svm/sev.c): gates in order, the handler, then the copy-back of the command. */
export function memEncryptOp(p: SevPlatformCore, vm: SevVmView, cmd: unknown): void {
  const op0 = 'KVM_MEMORY_ENCRYPT_OP';
  // SEV not enabled on the host → ENOTTY (the first check of sev_mem_enc_ioctl()).
  if (!p.sevEnabled) fail('ENOTTY', op0, 'SEV is not enabled on this host');
  // A NULL argument does nothing and succeeds.
  if (cmd === undefined || cmd === null) return;
  // copy_from_user of struct kvm_sev_cmd.
  const rd = new StructReader(cmd, op0, 'struct kvm_sev_cmd');
  const id = rd.uint('id');
  const sevFd = rd.uint('sevFd', 32, 0);
  const error = (() => {
    // `error` is an output field (sev_mem_enc_ioctl writes it back): an unset one (undefined or null) reads as 0.
    const e = (cmd as { error?: unknown }).error;
    if (e === undefined || e === null) return 0;
    if (typeof e !== 'number' || !Number.isInteger(e))
      fail('EFAULT', op0, 'copy_from_user failed: field error is not an integer');
    return e;
  })();
  const c: SevCmdCopy = { id, data: (cmd as { data?: unknown }).data, sevFd, error };
  const op = CMD_NAME[id] ?? `${op0}(id ${id})`;
  const s = vm.sev;
  // is_cmd_allowed_from_mirror(): a mirror may only issue four commands; `data` is never looked at.
  if (isMirror(s) && !MIRROR_ALLOWED_CMDS.has(id))
    fail('EINVAL', op, `command ${id} is not allowed on a mirror VM (only 4, 16, 17, 18)`);
  // An SNP guest may not issue any legacy id (< KVM_SEV_SNP_LAUNCH_START) → EPERM.
  if (sevSnpGuest(s) && id < SEV_CMD.SNP_LAUNCH_START)
    fail('EPERM', op, 'legacy SEV commands are refused on an SNP guest');
  // ES_INIT needs SEV-ES enabled before it shares the INIT path.
  if (id === SEV_CMD.ES_INIT && !p.sevEsEnabled) fail('ENOTTY', op, 'SEV-ES is not enabled on this host');
  const handler = HANDLERS[id];
  // Unknown id (the switch's default case): EINVAL, no copy-back.
  if (handler === undefined) fail('EINVAL', op, `command id ${id} is not implemented`);
  let thrown: unknown;
  try {
    handler(p, vm, c, op);
  } catch (e) {
    thrown = e;
  }
  // After a handler ran, the whole struct (with `error`) goes back to the caller, success or failure.
  copyToUser(cmd, { error: c.error }, op, 'struct kvm_sev_cmd');
  if (thrown !== undefined) throw thrown;
}

// `sev_issue_cmd` through the fd remembered at LAUNCH_START: a closed or non-/dev/sev fd → EBADF before
// the firmware; a firmware status ≠ 0 → EIO with `error` = the status (drivers/crypto/ccp/sev-dev.c: sev_issue_cmd_external_user()).
function issue(p: SevPlatformCore, fd: number, c: SevCmdCopy, op: string, fw: () => number): void {
  if (!p.host.isSevDeviceFd(fd)) fail('EBADF', op, `fd ${fd} is not an open /dev/sev descriptor`, { fd });
  const status = fw();
  c.error = status;
  if (status !== SEV_RET.SUCCESS)
    fail('EIO', op, `firmware returned status 0x${status.toString(16)}`, { status }, status);
}

function requireSev(s: SevVmState, op: string, code: 'ENOTTY' | 'EINVAL' = 'ENOTTY'): void {
  if (!sevGuest(s)) fail(code, op, 'the VM is not an SEV guest (no INIT yet, or its context moved away)');
}

// ---- initialisation: sev_guest_init(), sev_guest_init2(), __sev_guest_init() ------------------------------------------------------------------------------

const GHCB_VERSION_MAX = 2;
const GHCB_VERSION_DEFAULT = 2;
const GHCB_VERSION_MIN = 1;

function sevGuestInit(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  // sev_guest_init(): legacy INIT is only for DEFAULT VMs.
  if (vm.type !== 'default')
    fail('EINVAL', op, `legacy INIT is only for default VMs (this VM is ${vm.type})`);
  const es = c.id === SEV_CMD.ES_INIT;
  guestInitCommon(
    p,
    vm,
    c,
    op,
    { vmsaFeatures: 0n, flags: 0, ghcbVersion: es ? GHCB_VERSION_MIN : 0 },
    es ? 'sev-es' : 'sev',
  );
}

function sevGuestInit2(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  if (!s.needInit) fail('EINVAL', op, 'the VM needs no INIT2 (not an SEV VM type, or already initialised)');
  if (vm.type !== 'sev' && vm.type !== 'sev-es' && vm.type !== 'sev-snp')
    fail('EINVAL', op, `INIT2 is for the SEV VM types (this VM is ${vm.type})`);
  const rd = new StructReader(c.data, op, 'struct kvm_sev_init');
  const data = {
    vmsaFeatures: rd.u64('vmsaFeatures'),
    flags: rd.uint('flags'),
    ghcbVersion: rd.uint('ghcbVersion', 16),
  };
  guestInitCommon(p, vm, c, op, data, vm.type);
}

// `__sev_guest_init` (arch/x86/kvm/svm/sev.c).
function guestInitCommon(
  p: SevPlatformCore,
  vm: SevVmView,
  c: SevCmdCopy,
  op: string,
  data: { vmsaFeatures: bigint; flags: number; ghcbVersion: number },
  kind: 'sev' | 'sev-es' | 'sev-snp',
): void {
  const s = vm.sev;
  const es = kind !== 'sev';
  const valid = es ? p.supportedVmsaFeatures : 0n;
  if (vm.createdVcpus !== 0) fail('EINVAL', op, `vCPUs already created (${vm.createdVcpus})`);
  if (data.flags !== 0) fail('EINVAL', op, `flags 0x${data.flags.toString(16)} must be 0`);
  if ((data.vmsaFeatures & ~valid) !== 0n)
    fail(
      'EINVAL',
      op,
      `vmsa_features 0x${data.vmsaFeatures.toString(16)} has bits outside 0x${valid.toString(16)}`,
    );
  if (data.ghcbVersion > GHCB_VERSION_MAX || (!es && data.ghcbVersion !== 0))
    fail('EINVAL', op, `ghcb_version ${data.ghcbVersion} is not allowed for ${kind}`);
  if (s.active) fail('EINVAL', op, 'SEV is already initialised on this VM');
  // sev_asid_new(): the ASID (ranges by es_active).
  const asid = p.allocateAsid(es);
  if (asid === 'ENOTTY') fail('ENOTTY', op, `no ${es ? 'SEV-ES' : 'SEV'} ASIDs exist on this host`);
  if (asid === 'EBUSY') fail('EBUSY', op, `every ${es ? 'SEV-ES' : 'SEV'} ASID is in use`);
  // sev_platform_init(): platform init; on failure the ASID goes back and `error` carries the firmware code.
  const st = p.firmware.platformInit();
  if (st !== SEV_RET.SUCCESS) {
    p.asids.free(asid);
    c.error = st;
    fail('EIO', op, `SEV platform init failed with firmware status 0x${st.toString(16)}`, {}, st);
  }
  s.active = true;
  s.esActive = es;
  // An SNP VM gets SNP_ACTIVE (SVM_SEV_FEAT_SNP_ACTIVE, bit 0) in its VMSA features; snp_guest_req_init() (the
  // guest-request bounce pages) cannot fail in the simulator.
  s.vmsaFeatures = kind === 'sev-snp' ? data.vmsaFeatures | 1n : data.vmsaFeatures;
  s.ghcbVersion = es && data.ghcbVersion === 0 ? GHCB_VERSION_DEFAULT : data.ghcbVersion;
  s.asid = asid;
  s.regions = [];
  s.mirrors = [];
  s.needInit = false;
}

// ---- launch, status, debug (sev_launch_*(), sev_guest_status(), sev_dbg_crypt()) -----------------------------------------------------------------------

function launchStart(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  requireSev(s, op);
  const rd = new StructReader(c.data, op, 'struct kvm_sev_launch_start');
  const handle = rd.uint('handle');
  const policy = rd.uint('policy');
  const dh = rd.bytes('dh');
  const session = rd.bytes('session');
  // The kernel records the policy before the blobs are checked.
  s.policy = policy;
  if (dh !== undefined) pspCopyUserBlob(dh, op, 'DH certificate');
  const sess = session === undefined ? undefined : pspCopyUserBlob(session, op, 'session');
  let newHandle = 0;
  issue(p, c.sevFd, c, op, () => {
    const r = p.firmware.launchStart(handle, policy, sess);
    newHandle = r.handle;
    return r.status;
  });
  // Bind the VM's ASID to the new handle; on failure the context is decommissioned.
  const st = p.firmware.activate(newHandle, s.asid);
  c.error = st;
  if (st !== SEV_RET.SUCCESS) {
    p.firmware.decommission(newHandle);
    fail('EIO', op, `ACTIVATE of ASID ${s.asid} failed with firmware status 0x${st.toString(16)}`, {}, st);
  }
  try {
    copyToUser(c.data, { handle: newHandle }, op, 'struct kvm_sev_launch_start');
  } catch (e) {
    p.firmware.deactivate(newHandle);
    p.firmware.decommission(newHandle);
    throw e;
  }
  s.handle = newHandle;
  s.fd = c.sevFd;
}

function launchUpdateData(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  requireSev(s, op);
  const rd = new StructReader(c.data, op, 'struct kvm_sev_launch_update_data');
  const uaddr = rd.ptr('uaddr');
  const len = rd.uint('len');
  const pin = pinMemory(uaddr, BigInt(len), s.pagesLocked, p.memlockLimitPages, op);
  // One firmware call per physically contiguous run: a host buffer is one run.
  const gpa = vm.hostToGpa?.(pin.buffer, pin.start) ?? pin.uaddr;
  issue(p, s.fd, c, op, () => p.firmware.launchUpdateData(s.handle, pin.buffer, pin.start, pin.len, gpa));
}

function launchUpdateVmsa(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  if (!sevEsGuest(s)) fail('ENOTTY', op, 'the VM is not an SEV-ES guest');
  for (const vcpu of vm.vcpus()) {
    if (vcpu.guestDebug) fail('EINVAL', op, `vCPU ${vcpu.id} has KVM_SET_GUEST_DEBUG enabled`);
    if ((vcpu.dr7 & ~DR7_FIXED_1) !== 0n)
      fail('EINVAL', op, `vCPU ${vcpu.id} DR7 0x${vcpu.dr7.toString(16)} has breakpoints set`);
    const vmsa = syncVmsa(s.vmType, vcpu, s.vmsaFeatures);
    issue(p, s.fd, c, op, () => p.firmware.launchUpdateVmsa(s.handle, vcpu.id, vmsa));
    // No "already protected" check: a second call goes to the firmware again (arch/x86/kvm/svm/sev.c: sev_launch_update_vmsa()).
    vcpu.sev.vmsa = vmsa;
    vcpu.sev.guestStateProtected = true;
  }
}

function launchSecret(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  requireSev(s, op);
  const rd = new StructReader(c.data, op, 'struct kvm_sev_launch_secret');
  const hdr = rd.bytes('hdr');
  const guest = rd.ptr('guest');
  const guestLen = rd.uint('guestLen');
  const transIn = rd.bytes('trans');
  const pin = pinMemory(guest, BigInt(guestLen), s.pagesLocked, p.memlockLimitPages, op);
  const trans = pspCopyUserBlob(transIn, op, 'transport');
  const h = pspCopyUserBlob(hdr, op, 'packet header');
  issue(p, s.fd, c, op, () => p.firmware.launchSecret(s.handle, h, trans, pin.buffer, pin.start, pin.len));
}

/**
 * The shared shape of LAUNCH_MEASURE and GET_ATTESTATION_REPORT (arch/x86/kvm/svm/sev.c: sev_get_attestation_report(), sev_launch_measure()): `len` 0 is query mode
 * (the firmware runs without a buffer and the length it wants goes back even when it fails);
 * otherwise a buffer over 16 KiB is EINVAL, and on success the blob lands at `uaddr`.
 */
function blobCommand(
  p: SevPlatformCore,
  vm: SevVmView,
  c: SevCmdCopy,
  op: string,
  rd: StructReader,
  what: { struct: string; blob: string },
  firmware: (fwLen: number) => { status: number; len: number; blob?: Uint8Array },
): void {
  const uaddr = rd.ptr('uaddr');
  const len = rd.uint('len');
  if (len !== 0 && uaddr !== undefined && len > SEV_FW_BLOB_MAX_SIZE)
    fail('EINVAL', op, `len ${len} is over the 16 KiB limit`);
  const fwLen = len !== 0 && uaddr !== undefined ? len : 0;
  let r: { status: number; len: number; blob?: Uint8Array } = { status: 0, len: 0 };
  let thrown: unknown;
  try {
    issue(p, vm.sev.fd, c, op, () => {
      r = firmware(fwLen);
      return r.status;
    });
  } catch (e) {
    thrown = e;
  }
  if (len === 0) {
    copyToUser(c.data, { len: r.len }, op, what.struct);
    if (thrown !== undefined) throw thrown;
    return;
  }
  if (thrown !== undefined) throw thrown;
  if (r.blob) {
    const out = new Uint8Array(len);
    out.set(r.blob);
    copyBytesToUser(uaddr, out, op, what.blob);
  }
  copyToUser(c.data, { len: r.len }, op, what.struct);
}

function launchMeasure(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  requireSev(s, op);
  const rd = new StructReader(c.data, op, 'struct kvm_sev_launch_measure');
  blobCommand(p, vm, c, op, rd, { struct: 'struct kvm_sev_launch_measure', blob: 'measurement' }, (len) =>
    p.firmware.launchMeasure(s.handle, len),
  );
}

function launchFinish(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  requireSev(s, op);
  issue(p, s.fd, c, op, () => p.firmware.launchFinish(s.handle));
}

function guestStatus(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  requireSev(s, op);
  let r = { status: 0, handle: 0, policy: 0, state: 0 };
  issue(p, s.fd, c, op, () => {
    r = p.firmware.guestStatus(s.handle);
    return r.status;
  });
  copyToUser(
    c.data,
    { handle: r.handle, policy: r.policy, state: r.state },
    op,
    'struct kvm_sev_guest_status',
  );
}

function dbgCrypt(decrypt: boolean): Handler {
  return (p, vm, c, op) => {
    const s = vm.sev;
    requireSev(s, op);
    const rd = new StructReader(c.data, op, 'struct kvm_sev_dbg');
    const src = rd.ptr('src');
    const dst = rd.ptr('dst');
    const len = rd.uint('len');
    const srcU = uaddrOf(src);
    if (len === 0 || srcU + BigInt(len) > 1n << 64n) fail('EINVAL', op, 'len is 0 or the source range wraps');
    if (dst === undefined) fail('EINVAL', op, 'dst_uaddr is NULL');
    // Page by page: pin one source and one destination page, transfer at most to the source page end.
    let done = 0;
    while (done < len) {
      const sPtr = src === undefined ? undefined : { buffer: src.buffer, offset: src.offset + done };
      const dPtr = { buffer: dst.buffer, offset: dst.offset + done };
      const sOff = Number((srcU + BigInt(done)) & 0xfffn);
      const chunk = Math.min(PAGE_SIZE - sOff, len - done);
      pinPage(p, s, sPtr, op);
      pinPage(p, s, dPtr, op);
      if (sPtr === undefined || sPtr.offset + chunk > sPtr.buffer.length)
        fail('EFAULT', op, 'source range is not mapped');
      if (dPtr.offset + chunk > dPtr.buffer.length) fail('EFAULT', op, 'destination range is not mapped');
      if (decrypt) {
        let plain: Uint8Array | undefined;
        issue(p, s.fd, c, op, () => {
          const r = p.firmware.dbgDecrypt(s.handle, sPtr.buffer, sPtr.offset, chunk);
          plain = r.data;
          return r.status;
        });
        dPtr.buffer.set(plain!, dPtr.offset);
      } else {
        const plain = sPtr.buffer.slice(sPtr.offset, sPtr.offset + chunk);
        issue(p, s.fd, c, op, () => p.firmware.dbgEncrypt(s.handle, plain, dPtr.buffer, dPtr.offset));
      }
      done += chunk;
    }
  };
}

// Pins (and unpins) the one page holding `ptr` — only its errors matter here: the memlock limit, and
// a page that is not mapped (NULL, or no byte of the page inside the buffer).
function pinPage(p: SevPlatformCore, s: SevVmState, ptr: HostPtr | undefined, op: string): void {
  if (s.pagesLocked + 1 > p.memlockLimitPages)
    fail('ENOMEM', op, `${s.pagesLocked + 1} locked pages exceed the lock limit of ${p.memlockLimitPages}`);
  if (ptr === undefined || ptr.offset - Number(uaddrOf(ptr) & 0xfffn) >= ptr.buffer.length)
    fail('ENOMEM', op, 'failure pinning 1 page: not mapped');
}

function getAttestationReport(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  requireSev(s, op);
  const rd = new StructReader(c.data, op, 'struct kvm_sev_attestation_report');
  const mnonce = rd.bytes('mnonce', 16) ?? new Uint8Array(16);
  blobCommand(
    p,
    vm,
    c,
    op,
    rd,
    { struct: 'struct kvm_sev_attestation_report', blob: 'attestation report' },
    (len) => p.firmware.attestation(s.handle, mnonce, len),
  );
}

// ---- SEND_* / RECEIVE_* (sev_send_*(), sev_receive_*()) (kernel checks; the firmware has no certificate chain to accept) -------------

function sendStart(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  requireSev(s, op);
  const rd = new StructReader(c.data, op, 'struct kvm_sev_send_start');
  const pdh = rd.bytes('pdhCert');
  const plat = rd.bytes('platCerts');
  const amd = rd.bytes('amdCerts');
  const session = rd.ptr('session');
  const sessionLen = rd.uint('sessionLen');
  rd.uint('policy', 32, 0);
  if (sessionLen === 0) {
    let r = { status: 0, sessionLen: 0, policy: 0 };
    let thrown: unknown;
    try {
      issue(p, s.fd, c, op, () => {
        r = p.firmware.sendStart(s.handle, true);
        return r.status;
      });
    } catch (e) {
      thrown = e;
    }
    copyToUser(c.data, { sessionLen: r.sessionLen }, op, 'struct kvm_sev_send_start');
    if (thrown !== undefined) throw thrown;
    return;
  }
  if (pdh === undefined || pdh.length === 0 || session === undefined || sessionLen > SEV_FW_BLOB_MAX_SIZE)
    fail('EINVAL', op, 'PDH certificate and session buffer are required; session_len ≤ 16 KiB');
  pspCopyUserBlob(pdh, op, 'PDH certificate');
  pspCopyUserBlob(plat, op, 'platform certificates');
  pspCopyUserBlob(amd, op, 'AMD certificates');
  let r = { status: 0, sessionLen: 0, policy: 0 };
  let thrown: unknown;
  try {
    issue(p, s.fd, c, op, () => {
      r = p.firmware.sendStart(s.handle, false);
      return r.status;
    });
  } catch (e) {
    thrown = e;
  }
  copyToUser(c.data, { policy: r.policy, sessionLen: r.sessionLen }, op, 'struct kvm_sev_send_start');
  if (thrown !== undefined) throw thrown;
}

function sendUpdateData(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  requireSev(s, op);
  const rd = new StructReader(c.data, op, 'struct kvm_sev_send_update_data');
  const hdr = rd.ptr('hdr');
  const hdrLen = rd.uint('hdrLen');
  const guest = rd.ptr('guest');
  const guestLen = rd.uint('guestLen');
  const trans = rd.ptr('trans');
  const transLen = rd.uint('transLen');
  if (transLen === 0 || hdrLen === 0) {
    let thrown: unknown;
    try {
      issue(p, s.fd, c, op, () => p.firmware.sendCommand('SEND_UPDATE_DATA', s.handle));
    } catch (e) {
      thrown = e;
    }
    copyToUser(c.data, { hdrLen: 0, transLen: 0 }, op, 'struct kvm_sev_send_update_data');
    if (thrown !== undefined) throw thrown;
    return;
  }
  if (trans === undefined || guest === undefined || guestLen === 0 || hdr === undefined)
    fail('EINVAL', op, 'trans, guest (with a length) and hdr are required');
  const off = Number(uaddrOf(guest) & 0xfffn);
  if (guestLen > PAGE_SIZE || guestLen + off > PAGE_SIZE)
    fail('EINVAL', op, 'the guest range crosses a page');
  pinPage(p, s, guest, op);
  issue(p, s.fd, c, op, () => p.firmware.sendCommand('SEND_UPDATE_DATA', s.handle));
}

function simpleSend(name: 'SEND_FINISH' | 'SEND_CANCEL'): Handler {
  return (p, vm, c, op) => {
    const s = vm.sev;
    requireSev(s, op);
    issue(p, s.fd, c, op, () => p.firmware.sendCommand(name, s.handle));
  };
}

function receiveStart(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  requireSev(s, op);
  const rd = new StructReader(c.data, op, 'struct kvm_sev_receive_start');
  rd.uint('handle');
  rd.uint('policy');
  const pdh = rd.bytes('pdh');
  const session = rd.bytes('session');
  if (pdh === undefined || pdh.length === 0 || session === undefined || session.length === 0)
    fail('EINVAL', op, 'PDH and session blobs are required');
  pspCopyUserBlob(pdh, op, 'PDH');
  pspCopyUserBlob(session, op, 'session');
  issue(p, c.sevFd, c, op, () => p.firmware.receiveStart());
}

function receiveUpdateData(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  // The only handler whose "not SEV" answer is EINVAL (arch/x86/kvm/svm/sev.c: sev_receive_update_data()).
  requireSev(s, op, 'EINVAL');
  const rd = new StructReader(c.data, op, 'struct kvm_sev_receive_update_data');
  const hdr = rd.bytes('hdr');
  const guest = rd.ptr('guest');
  const guestLen = rd.uint('guestLen');
  const trans = rd.bytes('trans');
  if (!hdr?.length || guest === undefined || guestLen === 0 || !trans?.length)
    fail('EINVAL', op, 'hdr, guest, trans and their lengths are required');
  const off = Number(uaddrOf(guest) & 0xfffn);
  if (guestLen > PAGE_SIZE || guestLen + off > PAGE_SIZE)
    fail('EINVAL', op, 'the guest range crosses a page');
  pspCopyUserBlob(hdr, op, 'packet header');
  pspCopyUserBlob(trans, op, 'transport');
  pinPage(p, s, guest, op);
  issue(p, s.fd, c, op, () => p.firmware.receiveCommand('RECEIVE_UPDATE_DATA', s.handle));
}

function receiveFinish(p: SevPlatformCore, vm: SevVmView, c: SevCmdCopy, op: string): void {
  const s = vm.sev;
  requireSev(s, op);
  issue(p, s.fd, c, op, () => p.firmware.receiveCommand('RECEIVE_FINISH', s.handle));
}

const HANDLERS: Record<number, Handler> = {
  [SEV_CMD.INIT]: sevGuestInit,
  [SEV_CMD.ES_INIT]: sevGuestInit,
  [SEV_CMD.INIT2]: sevGuestInit2,
  [SEV_CMD.LAUNCH_START]: launchStart,
  [SEV_CMD.LAUNCH_UPDATE_DATA]: launchUpdateData,
  [SEV_CMD.LAUNCH_UPDATE_VMSA]: launchUpdateVmsa,
  [SEV_CMD.LAUNCH_SECRET]: launchSecret,
  [SEV_CMD.LAUNCH_MEASURE]: launchMeasure,
  [SEV_CMD.LAUNCH_FINISH]: launchFinish,
  [SEV_CMD.GUEST_STATUS]: guestStatus,
  [SEV_CMD.DBG_DECRYPT]: dbgCrypt(true),
  [SEV_CMD.DBG_ENCRYPT]: dbgCrypt(false),
  [SEV_CMD.GET_ATTESTATION_REPORT]: getAttestationReport,
  [SEV_CMD.SEND_START]: sendStart,
  [SEV_CMD.SEND_UPDATE_DATA]: sendUpdateData,
  [SEV_CMD.SEND_FINISH]: simpleSend('SEND_FINISH'),
  [SEV_CMD.SEND_CANCEL]: simpleSend('SEND_CANCEL'),
  [SEV_CMD.RECEIVE_START]: receiveStart,
  [SEV_CMD.RECEIVE_UPDATE_DATA]: receiveUpdateData,
  [SEV_CMD.RECEIVE_FINISH]: receiveFinish,
  // The SNP commands (snp_launch_start() etc.) are in ./snp-commands.ts
  [SEV_CMD.SNP_LAUNCH_START]: snpLaunchStart,
  [SEV_CMD.SNP_LAUNCH_UPDATE]: snpLaunchUpdate,
  [SEV_CMD.SNP_LAUNCH_FINISH]: snpLaunchFinish,
};

// ---- REG_REGION / UNREG_REGION (sev_mem_enc_(un)register_region()) ------------------------------------------------------------------------

const ULONG_MAX = (1n << 64n) - 1n;

function readRegion(region: unknown, op: string): { addr: HostPtr; size: bigint } {
  // x86.c copies struct kvm_enc_region before anything vendor-specific.
  const r = region as { addr?: unknown; size?: unknown } | null | undefined;
  if (typeof r !== 'object' || r === null || !isHostPtr(r.addr) || typeof r.size !== 'bigint' || r.size < 0n)
    fail('EFAULT', op, 'copy_from_user of struct kvm_enc_region failed');
  return { addr: r.addr, size: r.size };
}

/** `sev_mem_enc_register_region` (arch/x86/kvm/svm/sev.c). */
export function registerRegion(p: SevPlatformCore, vm: SevVmView, region: unknown): void {
  const op = 'KVM_MEMORY_ENCRYPT_REG_REGION';
  const r = readRegion(region, op);
  const s = vm.sev;
  requireSev(s, op);
  if (isMirror(s)) fail('EINVAL', op, 'a mirror VM does not own its encryption context');
  if (r.size > ULONG_MAX) fail('EINVAL', op, `size ${r.size} exceeds ULONG_MAX`);
  const pin = pinMemory(r.addr, r.size, s.pagesLocked, p.memlockLimitPages, op);
  s.pagesLocked += pin.npages;
  s.regions.push({ uaddr: pin.uaddr, size: r.size, npages: pin.npages, ptr: r.addr });
}

/** `sev_mem_enc_unregister_region` (arch/x86/kvm/svm/sev.c): the mirror check comes before everything else. */
export function unregisterRegion(_p: SevPlatformCore, vm: SevVmView, region: unknown): void {
  const op = 'KVM_MEMORY_ENCRYPT_UNREG_REGION';
  const r = readRegion(region, op);
  const s = vm.sev;
  if (isMirror(s)) fail('EINVAL', op, 'a mirror VM does not own its encryption context');
  requireSev(s, op);
  const u = uaddrOf(r.addr);
  const i = s.regions.findIndex((x) => x.uaddr === u && x.size === r.size);
  if (i < 0) fail('EINVAL', op, 'no registered region has exactly this address and size');
  const [gone] = s.regions.splice(i, 1);
  s.pagesLocked -= gone!.npages;
}

/** Reads bytes the host placed at a user pointer (used by tests of LAUNCH_SECRET / DBG paths). */
export const readUserBytes = copyBytesFromUser;
