// The simulated AMD Secure Processor (PSP) SEV firmware. KVM keeps no launch state machine — the
// firmware does (arch/x86/kvm/svm/sev.c only forwards, e.g. sev_guest_status() returns the firmware's state): guest contexts by handle with their state, policy, key, launch digest and
// ASID binding (ACTIVATE / DEACTIVATE / DF_FLUSH). Every command answers a firmware status code; the
// KVM side turns a non-zero status into EIO with `error` = that code (drivers/crypto/ccp/sev-dev.c: sev_issue_cmd_external_user()).

import {
  SEV_POLICY_BIT,
  SEV_POLICY_RESERVED_MASK,
  SevLaunchDigest,
  sevLaunchMeasureBlob,
} from '@kvmtest/coco';
import { SEV_GUEST_STATE, SEV_RET } from '@kvmtest/kvm';
import { cryptRange, decryptCopy, deriveKey, encryptCopy, type SevKey } from './crypto.js';

/** Firmware API version the simulated platform reports (PLATFORM_STATUS; MEASURE input). */
export const SIM_SEV_API = { apiMajor: 1, apiMinor: 55, build: 21 } as const;

/** Length of the LAUNCH_MEASURE output: MEASURE (32) ‖ MNONCE (16). */
export const SEV_MEASURE_LEN = 48;
/** Length of the ATTESTATION report (`struct sev_attestation_report`, SEV API 0.24 §6.8). */
export const SEV_ATTESTATION_REPORT_LEN = 208;
/** Length of the SEND_START session blob and of a packet header (SEV API). */
export const SEV_SESSION_LEN = 0x70;
/** Length of a SEND/RECEIVE/LAUNCH_SECRET packet header (flags, IV, MAC). */
export const SEV_PACKET_HDR_LEN = 52;

/** A firmware status code (SEV_RET_*). */
export type FwStatus = number;

/** One guest context inside the firmware. */
export interface GuestContext {
  readonly handle: number;
  readonly policy: number;
  state: number;
  /** The VEK: the memory-encryption key of this guest (shared with key-sharing guests). */
  readonly key: SevKey;
  /** Transport integrity key (MEASURE's HMAC key). */
  readonly tik: Uint8Array;
  /** ASID bound by ACTIVATE, 0 while inactive. */
  asid: number;
  readonly digest: SevLaunchDigest;
  /** The launch digest frozen at LAUNCH_MEASURE (what ATTESTATION reports). */
  measuredDigest: Uint8Array | undefined;
}

/** The firmware's platform: contexts, ASID bindings, DF_FLUSH bookkeeping. */
export class SevFirmware {
  readonly #contexts = new Map<number, GuestContext>();
  #keyEpoch = 0;
  /** ASID → handle bound by ACTIVATE. */
  readonly #asidOwner = new Map<number, number>();
  /** ASIDs deactivated since the last DF_FLUSH (ACTIVATE on them needs a flush first). */
  readonly #needsFlush = new Set<number>();
  readonly #minSevAsid: number;
  readonly #maxSevAsid: number;
  #nextHandle = 1;
  #nonce = 0;
  #initialized = false;
  /** When set, PLATFORM INIT fails with this status (a test knob for the sev_platform_init() failure path of arch/x86/kvm/svm/sev.c: __sev_guest_init()). */
  platformInitError: FwStatus | undefined;
  /** Commands issued, by name (a test can see what reached the firmware). */
  readonly issued: string[] = [];
  /** Keep the command log: off by default (it would grow for the life of the process); tests turn it on. */
  logCommands = false;

  constructor(minSevAsid: number, maxSevAsid: number) {
    this.#minSevAsid = minSevAsid;
    this.#maxSevAsid = maxSevAsid;
  }

  #log(name: string): void {
    if (this.logCommands) this.issued.push(name);
  }

  /** Number of live guest contexts (0 after every VM is gone). */
  get contextCount(): number {
    return this.#contexts.size;
  }

  /** Live handles, ascending. */
  handles(): number[] {
    return [...this.#contexts.keys()].sort((a, b) => a - b);
  }

  /** The context of `handle` (tests and the guest view read it). */
  context(handle: number): GuestContext | undefined {
    return this.#contexts.get(handle);
  }

  /**
   * Bumped whenever what keyForAsid answers can change (a context or an ASID binding added or
   * removed), so a cached key is valid while the epoch and the VM's ASID binding are unchanged.
   */
  get keyEpoch(): number {
    return this.#keyEpoch;
  }

  /** The key loaded for `asid` by ACTIVATE, or undefined while no guest is bound to it. */
  keyForAsid(asid: number): SevKey | undefined {
    const h = this.#asidOwner.get(asid);
    return h === undefined ? undefined : this.#contexts.get(h)?.key;
  }

  /** Number of ASIDs bound to a guest. */
  get boundAsidCount(): number {
    return this.#asidOwner.size;
  }

  /** INIT / INIT_EX of the platform (`sev_platform_init`); idempotent once it succeeded. */
  platformInit(): FwStatus {
    this.#log('INIT');
    if (this.#initialized) return SEV_RET.SUCCESS;
    if (this.platformInitError !== undefined) return this.platformInitError;
    this.#initialized = true;
    return SEV_RET.SUCCESS;
  }

  /** DF_FLUSH: ASIDs deactivated so far may be activated again (arch/x86/kvm/svm/sev.c: __sev_recycle_asids()). */
  dfFlush(): FwStatus {
    this.#log('DF_FLUSH');
    this.#needsFlush.clear();
    return SEV_RET.SUCCESS;
  }

  #newContext(
    policy: number,
    shareWith: GuestContext | undefined,
    session: Uint8Array | undefined,
  ): GuestContext {
    const handle = this.#nextHandle++;
    const key = shareWith?.key ?? deriveKey(handle, 0x5e5_0000 + this.#nextHandle);
    // The simulated session blob carries the TIK in clear (its first 16 bytes, zero-padded).
    const tik = new Uint8Array(16);
    if (session) tik.set(session.subarray(0, 16));
    const ctx: GuestContext = {
      handle,
      policy,
      state: SEV_GUEST_STATE.LAUNCH_UPDATE,
      key,
      tik,
      asid: 0,
      digest: new SevLaunchDigest(),
      measuredDigest: undefined,
    };
    this.#contexts.set(handle, ctx);
    this.#keyEpoch++;
    return ctx;
  }

  #policyStatus(policy: number): FwStatus {
    if ((policy & SEV_POLICY_RESERVED_MASK) !== 0) return SEV_RET.POLICY_FAILURE;
    const major = (policy >>> 16) & 0xff;
    const minor = (policy >>> 24) & 0xff;
    if (major > SIM_SEV_API.apiMajor || (major === SIM_SEV_API.apiMajor && minor > SIM_SEV_API.apiMinor))
      return SEV_RET.POLICY_FAILURE;
    return SEV_RET.SUCCESS;
  }

  /**
   * LAUNCH_START: a new guest context in LAUNCH_UPDATE. `handle` ≠ 0 asks to share that guest's key
   * (refused when its policy has NOKS). Policies with reserved bits or a newer API → POLICY_FAILURE.
   */
  launchStart(
    handle: number,
    policy: number,
    session: Uint8Array | undefined,
  ): { status: FwStatus; handle: number } {
    this.#log('LAUNCH_START');
    if (!this.#initialized) return { status: SEV_RET.INVALID_PLATFORM_STATE, handle: 0 };
    const ps = this.#policyStatus(policy);
    if (ps !== SEV_RET.SUCCESS) return { status: ps, handle: 0 };
    let share: GuestContext | undefined;
    if (handle !== 0) {
      share = this.#contexts.get(handle);
      if (!share) return { status: SEV_RET.INVALID_GUEST, handle: 0 };
      if ((share.policy >>> SEV_POLICY_BIT.NOKS) & 1) return { status: SEV_RET.POLICY_FAILURE, handle: 0 };
    }
    return { status: SEV_RET.SUCCESS, handle: this.#newContext(policy, share, session).handle };
  }

  /**
   * ACTIVATE: binds `asid` to the guest and loads its key. An ES policy needs an SEV-ES ASID
   * (below minSevAsid); an ASID deactivated since the last DF_FLUSH needs the flush first.
   */
  activate(handle: number, asid: number): FwStatus {
    this.#log('ACTIVATE');
    const ctx = this.#contexts.get(handle);
    if (!ctx) return SEV_RET.INVALID_GUEST;
    if (ctx.asid !== 0) return SEV_RET.ACTIVE;
    if (asid <= 0 || asid > this.#maxSevAsid) return SEV_RET.INVALID_ASID;
    if ((ctx.policy >>> SEV_POLICY_BIT.ES) & 1 && asid >= this.#minSevAsid) return SEV_RET.INVALID_ASID;
    if (this.#asidOwner.has(asid)) return SEV_RET.ASID_OWNED;
    if (this.#needsFlush.has(asid)) return SEV_RET.DFFLUSH_REQUIRED;
    ctx.asid = asid;
    this.#asidOwner.set(asid, handle);
    this.#keyEpoch++;
    return SEV_RET.SUCCESS;
  }

  /** DEACTIVATE: unbinds the guest's ASID (a DF_FLUSH must follow before the ASID is reused). */
  deactivate(handle: number): FwStatus {
    this.#log('DEACTIVATE');
    const ctx = this.#contexts.get(handle);
    if (!ctx) return SEV_RET.INVALID_GUEST;
    if (ctx.asid === 0) return SEV_RET.INACTIVE;
    this.#asidOwner.delete(ctx.asid);
    this.#keyEpoch++;
    this.#needsFlush.add(ctx.asid);
    ctx.asid = 0;
    return SEV_RET.SUCCESS;
  }

  /** DECOMMISSION: deletes an inactive guest context. */
  decommission(handle: number): FwStatus {
    this.#log('DECOMMISSION');
    const ctx = this.#contexts.get(handle);
    if (!ctx) return SEV_RET.INVALID_GUEST;
    if (ctx.asid !== 0) return SEV_RET.ACTIVE;
    this.#contexts.delete(handle);
    this.#keyEpoch++;
    return SEV_RET.SUCCESS;
  }

  #active(handle: number, states: readonly number[]): GuestContext | FwStatus {
    const ctx = this.#contexts.get(handle);
    if (!ctx) return SEV_RET.INVALID_GUEST;
    if (!states.includes(ctx.state)) return SEV_RET.INVALID_GUEST_STATE;
    if (ctx.asid === 0) return SEV_RET.INACTIVE;
    return ctx;
  }

  /** LAUNCH_UPDATE_DATA: measures the plaintext (keyed by `measureKey`, a GPA) and encrypts it in place. */
  launchUpdateData(
    handle: number,
    mem: Uint8Array,
    start: number,
    len: number,
    measureKey: bigint,
  ): FwStatus {
    this.#log('LAUNCH_UPDATE_DATA');
    const ctx = this.#active(handle, [SEV_GUEST_STATE.LAUNCH_UPDATE]);
    if (typeof ctx === 'number') return ctx;
    ctx.digest.updateData(measureKey, mem.subarray(start, start + len));
    cryptRange(ctx.key, mem, start, len);
    return SEV_RET.SUCCESS;
  }

  /** LAUNCH_UPDATE_VMSA: the policy must require ES; measures the VMSA and encrypts it in place. */
  launchUpdateVmsa(handle: number, vcpuId: number, vmsa: Uint8Array): FwStatus {
    this.#log('LAUNCH_UPDATE_VMSA');
    const ctx = this.#active(handle, [SEV_GUEST_STATE.LAUNCH_UPDATE]);
    if (typeof ctx === 'number') return ctx;
    if (((ctx.policy >>> SEV_POLICY_BIT.ES) & 1) === 0) return SEV_RET.POLICY_FAILURE;
    ctx.digest.updateVmsa(vcpuId, vmsa);
    cryptRange(ctx.key, vmsa, 0, vmsa.length);
    return SEV_RET.SUCCESS;
  }

  /**
   * LAUNCH_MEASURE: with room for 48 bytes, returns MEASURE ‖ MNONCE and moves the guest to
   * LAUNCH_SECRET; with less (or no buffer), INVALID_LEN and the length needed.
   */
  launchMeasure(handle: number, len: number): { status: FwStatus; len: number; blob?: Uint8Array } {
    this.#log('LAUNCH_MEASURE');
    const ctx = this.#active(handle, [SEV_GUEST_STATE.LAUNCH_UPDATE]);
    if (typeof ctx === 'number') return { status: ctx, len };
    if (len < SEV_MEASURE_LEN) return { status: SEV_RET.INVALID_LEN, len: SEV_MEASURE_LEN };
    const mnonce = this.#mnonce();
    const digest = ctx.digest.digest();
    const blob = sevLaunchMeasureBlob(digest, mnonce, ctx.tik, { ...SIM_SEV_API, policy: ctx.policy });
    ctx.measuredDigest = digest;
    ctx.state = SEV_GUEST_STATE.LAUNCH_SECRET;
    return { status: SEV_RET.SUCCESS, len: SEV_MEASURE_LEN, blob };
  }

  #mnonce(): Uint8Array {
    const n = ++this.#nonce;
    const out = new Uint8Array(16);
    const dv = new DataView(out.buffer);
    for (let i = 0; i < 4; i++) dv.setUint32(i * 4, deriveKey(n, i).lo, true);
    return out;
  }

  /** LAUNCH_UPDATE_SECRET: injects `trans` (the simulated transport carries it in clear) encrypted at `mem[start]`. */
  launchSecret(
    handle: number,
    hdr: Uint8Array,
    trans: Uint8Array,
    mem: Uint8Array,
    start: number,
    len: number,
  ): FwStatus {
    this.#log('LAUNCH_UPDATE_SECRET');
    const ctx = this.#active(handle, [SEV_GUEST_STATE.LAUNCH_SECRET]);
    if (typeof ctx === 'number') return ctx;
    if (hdr.length !== SEV_PACKET_HDR_LEN || trans.length !== len) return SEV_RET.INVALID_LEN;
    encryptCopy(ctx.key, trans, mem, start);
    return SEV_RET.SUCCESS;
  }

  /** LAUNCH_FINISH: LAUNCH_UPDATE or LAUNCH_SECRET → RUNNING. */
  launchFinish(handle: number): FwStatus {
    this.#log('LAUNCH_FINISH');
    const ctx = this.#active(handle, [SEV_GUEST_STATE.LAUNCH_UPDATE, SEV_GUEST_STATE.LAUNCH_SECRET]);
    if (typeof ctx === 'number') return ctx;
    if (ctx.measuredDigest === undefined) ctx.measuredDigest = ctx.digest.digest();
    ctx.state = SEV_GUEST_STATE.RUNNING;
    return SEV_RET.SUCCESS;
  }

  /** GUEST_STATUS: `{handle, policy, state}` of any existing context, active or not. */
  guestStatus(handle: number): { status: FwStatus; handle: number; policy: number; state: number } {
    this.#log('GUEST_STATUS');
    const ctx = this.#contexts.get(handle);
    if (!ctx) return { status: SEV_RET.INVALID_GUEST, handle: 0, policy: 0, state: 0 };
    return { status: SEV_RET.SUCCESS, handle: ctx.handle, policy: ctx.policy, state: ctx.state };
  }

  #debugCtx(handle: number): GuestContext | FwStatus {
    const ctx = this.#contexts.get(handle);
    if (!ctx) return SEV_RET.INVALID_GUEST;
    if (ctx.asid === 0) return SEV_RET.INACTIVE;
    if ((ctx.policy >>> SEV_POLICY_BIT.NODBG) & 1) return SEV_RET.POLICY_FAILURE;
    return ctx;
  }

  /** DBG_DECRYPT: the plaintext of guest memory at `src[start]` (NODBG policy → POLICY_FAILURE). */
  dbgDecrypt(
    handle: number,
    src: Uint8Array,
    start: number,
    len: number,
  ): { status: FwStatus; data?: Uint8Array } {
    this.#log('DBG_DECRYPT');
    const ctx = this.#debugCtx(handle);
    if (typeof ctx === 'number') return { status: ctx };
    return { status: SEV_RET.SUCCESS, data: decryptCopy(ctx.key, src, start, len) };
  }

  /** DBG_ENCRYPT: writes `plain` encrypted into guest memory at `dst[start]`. */
  dbgEncrypt(handle: number, plain: Uint8Array, dst: Uint8Array, start: number): FwStatus {
    this.#log('DBG_ENCRYPT');
    const ctx = this.#debugCtx(handle);
    if (typeof ctx === 'number') return ctx;
    encryptCopy(ctx.key, plain, dst, start);
    return SEV_RET.SUCCESS;
  }

  /** ATTESTATION: a 208-byte report (MNONCE ‖ LAUNCH_DIGEST ‖ POLICY ‖ …) in LAUNCH_SECRET or RUNNING. */
  attestation(
    handle: number,
    mnonce: Uint8Array,
    len: number,
  ): { status: FwStatus; len: number; blob?: Uint8Array } {
    this.#log('ATTESTATION');
    const ctx = this.#active(handle, [SEV_GUEST_STATE.LAUNCH_SECRET, SEV_GUEST_STATE.RUNNING]);
    if (typeof ctx === 'number') return { status: ctx, len };
    if (len < SEV_ATTESTATION_REPORT_LEN)
      return { status: SEV_RET.INVALID_LEN, len: SEV_ATTESTATION_REPORT_LEN };
    const blob = new Uint8Array(SEV_ATTESTATION_REPORT_LEN);
    blob.set(mnonce.subarray(0, 16), 0);
    blob.set(ctx.measuredDigest ?? ctx.digest.digest(), 16);
    new DataView(blob.buffer).setUint32(48, ctx.policy, true);
    return { status: SEV_RET.SUCCESS, len: SEV_ATTESTATION_REPORT_LEN, blob };
  }

  /**
   * SEND_START. The simulated platform has no certificate chain, so a real request (with a PDH) fails
   * certificate validation; the query form answers INVALID_LEN with the session length.
   */
  sendStart(handle: number, query: boolean): { status: FwStatus; sessionLen: number; policy: number } {
    this.#log('SEND_START');
    const ctx = this.#active(handle, [SEV_GUEST_STATE.RUNNING]);
    if (typeof ctx === 'number') return { status: ctx, sessionLen: 0, policy: 0 };
    if ((ctx.policy >>> SEV_POLICY_BIT.NOSEND) & 1)
      return { status: SEV_RET.POLICY_FAILURE, sessionLen: 0, policy: 0 };
    if (query) return { status: SEV_RET.INVALID_LEN, sessionLen: SEV_SESSION_LEN, policy: 0 };
    return { status: SEV_RET.INVALID_CERTIFICATE, sessionLen: 0, policy: ctx.policy };
  }

  /** SEND_UPDATE_DATA / SEND_FINISH / SEND_CANCEL: the guest must be SENDING (never reached here). */
  sendCommand(name: string, handle: number): FwStatus {
    this.#log(name);
    const ctx = this.#active(handle, [SEV_GUEST_STATE.SENDING]);
    return typeof ctx === 'number' ? ctx : SEV_RET.SUCCESS;
  }

  /** RECEIVE_START: no certificate chain to check the sender's PDH against → INVALID_CERTIFICATE. */
  receiveStart(): FwStatus {
    this.#log('RECEIVE_START');
    if (!this.#initialized) return SEV_RET.INVALID_PLATFORM_STATE;
    return SEV_RET.INVALID_CERTIFICATE;
  }

  /** RECEIVE_UPDATE_DATA / RECEIVE_FINISH: the guest must be RECEIVING (never reached here). */
  receiveCommand(name: string, handle: number): FwStatus {
    this.#log(name);
    const ctx = this.#active(handle, [SEV_GUEST_STATE.RECEIVING]);
    return typeof ctx === 'number' ? ctx : SEV_RET.SUCCESS;
  }
}
