// The SEV-SNP half of the simulated PSP firmware (SEV-SNP ABI): guest contexts (SNP_GCTX_CREATE), their
// launch (SNP_LAUNCH_START / SNP_LAUNCH_UPDATE / SNP_LAUNCH_FINISH) with the launch digest chained page
// by page over PAGE_INFO (coco SnpLaunchDigest), ASID binding (SNP_ACTIVATE), SNP_DECOMMISSION. Every
// command answers a firmware status; KVM turns a non-zero one into EIO with `error` set (drivers/crypto/ccp/sev-dev.c: sev_issue_cmd_external_user()).

import { hash } from 'node:crypto';
import { SNP_PAGE_TYPE, SNP_POLICY_BIT, SNP_VMSA_GPA, type SnpPageType } from '@kvmtest/coco';
import { SEV_RET } from '@kvmtest/kvm';
import { deriveKey } from './crypto.js';

/**
 * The firmware's launch digest (GCTX.LD), written from the SEV-SNP ABI's PAGE_INFO definition on its own
 * (coco's SnpLaunchDigest is the independent computation tests compare it with). PAGE_INFO, 0x70 bytes,
 * little-endian: current digest (48) at 0x00, page contents digest (48) at 0x30, length 0x70 (u16) at
 * 0x60, page type (u8) at 0x62, IMI (u8) at 0x63, VMPL3/2/1 permissions (u8 each) at 0x64..0x66, a
 * reserved byte, the GPA (u64) at 0x68. New digest = SHA-384(PAGE_INFO); the contents digest is
 * SHA-384 of the page for NORMAL and VMSA pages, zero for the other types.
 */
export class FwLaunchDigest {
  readonly #info = Buffer.alloc(0x70);

  constructor() {
    this.#info.writeUInt16LE(0x70, 0x60);
  }

  /** Chains one 4 KiB page into the digest. */
  update(gpa: bigint, type: SnpPageType, page: Uint8Array | undefined): void {
    const info = this.#info;
    if (page !== undefined && (type === SNP_PAGE_TYPE.NORMAL || type === SNP_PAGE_TYPE.VMSA))
      info.set(hash('sha384', page, 'buffer'), 0x30);
    else info.fill(0, 0x30, 0x60);
    info[0x62] = type;
    info.writeBigUInt64LE(gpa, 0x68);
    info.set(hash('sha384', info, 'buffer'), 0);
  }

  /** The current digest (48 bytes, a copy). */
  digest(): Uint8Array {
    return new Uint8Array(this.#info.subarray(0, 48));
  }
}

/** SNP ABI version the simulated firmware implements (policy ABI_MAJOR.ABI_MINOR may not exceed it). */
export const SIM_SNP_ABI = { major: 1, minor: 55 } as const;

/** Size of the attestation report's fields the simulator fills (SNP ABI `ATTESTATION_REPORT`). */
export const SNP_HOST_DATA_LEN = 32;
/** KVM_SEV_SNP_ID_BLOCK_SIZE / KVM_SEV_SNP_ID_AUTH_SIZE (psp_copy_user_blob lengths in snp_launch_finish). */
export const SNP_ID_BLOCK_SIZE = 96;
/** See {@link SNP_ID_BLOCK_SIZE}. */
export const SNP_ID_AUTH_SIZE = 4096;

/** Firmware state of an SNP guest context (SNP ABI GSTATE_*). */
export type SnpGuestState = 'init' | 'launch' | 'running';

/** One SNP guest context. */
export interface SnpContext {
  readonly gctx: number;
  policy: bigint;
  state: SnpGuestState;
  /** ASID bound by SNP_ACTIVATE (0 = none). */
  asid: number;
  readonly digest: FwLaunchDigest;
  /** GCTX.LD frozen at SNP_LAUNCH_FINISH (the MEASUREMENT of attestation reports). */
  measurement: Uint8Array | undefined;
  hostData: Uint8Array;
  idBlock: Uint8Array | undefined;
  gosvw: Uint8Array;
  /** Pages SNP_LAUNCH_UPDATE took, and VMSAs measured. */
  pagesUpdated: number;
  vmsas: number;
}

/** The firmware's SNP contexts and ASID bindings. */
export class SnpFirmware {
  readonly #contexts = new Map<number, SnpContext>();
  readonly #asidOwner = new Map<number, number>();
  readonly #minSevAsid: number;
  #next = 1;
  /** The simulated host has SMT enabled: a policy without SMT_ALLOWED is refused (SNP ABI). */
  smtEnabled = true;
  /** Commands issued, by name. */
  readonly issued: string[] = [];
  /** Keep the command log: off by default (it would grow for the life of the process); tests turn it on. */
  logCommands = false;

  constructor(minSevAsid: number) {
    this.#minSevAsid = minSevAsid;
  }

  #log(name: string): void {
    if (this.logCommands) this.issued.push(name);
  }

  /** Live context handles, ascending. */
  handles(): number[] {
    return [...this.#contexts.keys()].sort((a, b) => a - b);
  }

  /** The context `gctx`, or undefined. */
  context(gctx: number): SnpContext | undefined {
    return this.#contexts.get(gctx);
  }

  /** ASIDs bound to an SNP context. */
  get boundAsidCount(): number {
    return this.#asidOwner.size;
  }

  /** SNP_GCTX_CREATE: a fresh context page (state INIT). */
  gctxCreate(): { status: number; gctx: number } {
    this.#log('SNP_GCTX_CREATE');
    const gctx = 0x5e00_0000 + this.#next++;
    this.#contexts.set(gctx, {
      gctx,
      policy: 0n,
      state: 'init',
      asid: 0,
      digest: new FwLaunchDigest(),
      measurement: undefined,
      hostData: new Uint8Array(SNP_HOST_DATA_LEN),
      idBlock: undefined,
      gosvw: new Uint8Array(16),
      pagesUpdated: 0,
      vmsas: 0,
    });
    return { status: SEV_RET.SUCCESS, gctx };
  }

  /**
   * SNP_LAUNCH_START: INIT → LAUNCH. POLICY_FAILURE when the policy asks for a newer ABI than the
   * firmware's, or omits SMT_ALLOWED on a host with SMT enabled.
   */
  launchStart(gctx: number, policy: bigint, gosvw: Uint8Array): number {
    this.#log('SNP_LAUNCH_START');
    const ctx = this.#contexts.get(gctx);
    if (!ctx) return SEV_RET.INVALID_GUEST;
    if (ctx.state !== 'init') return SEV_RET.INVALID_GUEST_STATE;
    const minor = Number(policy & 0xffn);
    const major = Number((policy >> 8n) & 0xffn);
    if (major > SIM_SNP_ABI.major || (major === SIM_SNP_ABI.major && minor > SIM_SNP_ABI.minor))
      return SEV_RET.POLICY_FAILURE;
    if (this.smtEnabled && ((policy >> BigInt(SNP_POLICY_BIT.SMT)) & 1n) === 0n)
      return SEV_RET.POLICY_FAILURE;
    ctx.policy = policy;
    ctx.gosvw = gosvw.slice();
    ctx.state = 'launch';
    return SEV_RET.SUCCESS;
  }

  /** SNP_ACTIVATE: binds an SEV-ES/SNP-range ASID (below min_sev_asid) to the context. */
  activate(gctx: number, asid: number): number {
    this.#log('SNP_ACTIVATE');
    const ctx = this.#contexts.get(gctx);
    if (!ctx) return SEV_RET.INVALID_GUEST;
    if (ctx.asid !== 0) return SEV_RET.ACTIVE;
    if (asid <= 0 || asid >= this.#minSevAsid) return SEV_RET.INVALID_ASID;
    if (this.#asidOwner.has(asid)) return SEV_RET.ASID_OWNED;
    ctx.asid = asid;
    this.#asidOwner.set(asid, gctx);
    return SEV_RET.SUCCESS;
  }

  /**
   * SNP_LAUNCH_UPDATE of one 4 KiB page at `gpa` of type `type` (`page` = its plaintext, already in the
   * guest's page): measures it into the launch digest (NORMAL and VMSA by contents; ZERO, UNMEASURED,
   * SECRETS and CPUID by type only) and fills ZERO / SECRETS pages. State must be LAUNCH.
   */
  launchUpdate(gctx: number, gpa: bigint, type: SnpPageType, page: Uint8Array): number {
    this.#log('SNP_LAUNCH_UPDATE');
    const st = this.launchUpdateStatus(gctx);
    if (st !== SEV_RET.SUCCESS) return st;
    const ctx = this.#contexts.get(gctx)!;
    switch (type) {
      case SNP_PAGE_TYPE.ZERO:
        page.fill(0);
        break;
      case SNP_PAGE_TYPE.SECRETS: {
        // The firmware writes the secrets page (VMPCKs …): deterministic bytes derived from the context.
        const dv = new DataView(page.buffer, page.byteOffset, page.byteLength);
        for (let w = 0; w < 1024; w++) dv.setUint32(w * 4, deriveKey(gctx, w).lo, true);
        break;
      }
      default:
        break;
    }
    ctx.digest.update(gpa, type, page);
    if (type === SNP_PAGE_TYPE.VMSA) ctx.vmsas++;
    else ctx.pagesUpdated++;
    return SEV_RET.SUCCESS;
  }

  /** What SNP_LAUNCH_UPDATE would answer for `gctx` before looking at a page (the context's state). */
  launchUpdateStatus(gctx: number): number {
    const ctx = this.#contexts.get(gctx);
    if (!ctx) return SEV_RET.INVALID_GUEST;
    if (ctx.state !== 'launch') return SEV_RET.INVALID_GUEST_STATE;
    if (ctx.asid === 0) return SEV_RET.INACTIVE;
    return SEV_RET.SUCCESS;
  }

  /** SNP_LAUNCH_UPDATE of a vCPU's VMSA (page type VMSA at INITIAL_VMSA_GPA). */
  launchUpdateVmsa(gctx: number, vmsa: Uint8Array): number {
    return this.launchUpdate(gctx, SNP_VMSA_GPA, SNP_PAGE_TYPE.VMSA, vmsa);
  }

  /** SNP_LAUNCH_FINISH: LAUNCH → RUNNING; the digest becomes the guest's MEASUREMENT. */
  launchFinish(gctx: number, hostData: Uint8Array, idBlock: Uint8Array | undefined): number {
    this.#log('SNP_LAUNCH_FINISH');
    const ctx = this.#contexts.get(gctx);
    if (!ctx) return SEV_RET.INVALID_GUEST;
    if (ctx.state !== 'launch') return SEV_RET.INVALID_GUEST_STATE;
    if (ctx.asid === 0) return SEV_RET.INACTIVE;
    ctx.hostData = hostData.slice();
    ctx.idBlock = idBlock?.slice();
    ctx.measurement = ctx.digest.digest();
    ctx.state = 'running';
    return SEV_RET.SUCCESS;
  }

  /** SNP_DECOMMISSION: unbinds the ASID and deletes the context. */
  decommission(gctx: number): number {
    this.#log('SNP_DECOMMISSION');
    const ctx = this.#contexts.get(gctx);
    if (!ctx) return SEV_RET.INVALID_GUEST;
    if (ctx.asid !== 0) this.#asidOwner.delete(ctx.asid);
    this.#contexts.delete(gctx);
    return SEV_RET.SUCCESS;
  }
}
