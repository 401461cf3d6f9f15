// Launch-measurement arithmetic for the simulated SEV, SEV-SNP and TDX firmware. Deterministic: the same
// sequence of updates gives the same bytes, so the simulator's firmware and a test can compute it apart.

import { createHash, createHmac, type Hash } from 'node:crypto';
import { CocoError } from './error.js';
import { checkBigUint, checkUint, hex } from './internal/bits.js';

const PAGE_SIZE = 4096;

function checkBytes(what: string, bytes: Uint8Array, length?: number): Uint8Array {
  if (!(bytes instanceof Uint8Array))
    throw new CocoError('BAD_LENGTH', `${what} must be a Uint8Array, got ${typeof bytes}`, {
      got: typeof bytes,
    });
  if (length !== undefined && bytes.length !== length)
    throw new CocoError('BAD_LENGTH', `${what} is ${length} bytes, got ${bytes.length}`, {
      expected: length,
      got: bytes.length,
    });
  return bytes;
}

function checkPageAligned(what: string, gpa: bigint, align = 4096n): bigint {
  checkBigUint(what, gpa, 64);
  if (gpa % align !== 0n)
    throw new CocoError(
      'UNALIGNED',
      `${what} ${hex(gpa)} is not ${align === 4096n ? '4 KiB' : `${align}-byte`} aligned`,
      {
        gpa,
        align,
      },
    );
  return gpa;
}

/** Record type bytes of {@link SevLaunchDigest}: 1 = LAUNCH_UPDATE_DATA region, 2 = LAUNCH_UPDATE_VMSA. */
export const SEV_LAUNCH_RECORD = { DATA: 1, VMSA: 2 } as const;

/**
 * The launch digest (GCTX.LD) of the simulated SEV / SEV-ES firmware — a kvmtest definition, not AMD's
 * (real firmware hashes plaintext only and knows no GPA). Starting from 32 zero bytes, each update does
 * `ld = SHA-256(ld ‖ type:u8 ‖ key:u64 LE ‖ length:u32 LE ‖ bytes)` with type 1 and key = GPA for
 * LAUNCH_UPDATE_DATA, type 2 and key = vCPU id for LAUNCH_UPDATE_VMSA, in the order the firmware saw them.
 */
export class SevLaunchDigest {
  #ld: Uint8Array = new Uint8Array(32);

  /** Measures one LAUNCH_UPDATE_DATA region: its GPA and plaintext. */
  updateData(gpa: bigint, bytes: Uint8Array): this {
    return this.#update(
      SEV_LAUNCH_RECORD.DATA,
      checkBigUint('LAUNCH_UPDATE_DATA gpa', gpa, 64),
      checkBytes('LAUNCH_UPDATE_DATA bytes', bytes),
    );
  }

  /** Measures one vCPU's VMSA (LAUNCH_UPDATE_VMSA) by vCPU id and plaintext. */
  updateVmsa(vcpuId: number, bytes: Uint8Array): this {
    return this.#update(
      SEV_LAUNCH_RECORD.VMSA,
      BigInt(checkUint('LAUNCH_UPDATE_VMSA vcpuId', vcpuId, 32)),
      checkBytes('VMSA bytes', bytes),
    );
  }

  /** The current digest, 32 bytes (a copy). */
  digest(): Uint8Array {
    return this.#ld.slice();
  }

  #update(type: number, key: bigint, bytes: Uint8Array): this {
    checkUint('measured length', bytes.length, 32);
    const head = new Uint8Array(13);
    const dv = new DataView(head.buffer);
    dv.setUint8(0, type);
    dv.setBigUint64(1, key, true);
    dv.setUint32(9, bytes.length, true);
    this.#ld = new Uint8Array(createHash('sha256').update(this.#ld).update(head).update(bytes).digest());
    return this;
  }
}

/** Inputs of {@link sevLaunchMeasurement} besides digest, nonce and key. */
export interface SevMeasureContext {
  /** Firmware API major version (u8). */
  readonly apiMajor: number;
  /** Firmware API minor version (u8). */
  readonly apiMinor: number;
  /** Firmware build id (u8). */
  readonly build: number;
  /** Guest policy (u32, written little-endian). */
  readonly policy: number;
}

/**
 * LAUNCH_MEASURE's MEASURE value as the AMD SEV API specification defines it:
 * HMAC-SHA256 with key TIK (16 bytes) over `0x04 ‖ API_MAJOR ‖ API_MINOR ‖ BUILD ‖ POLICY (u32 LE) ‖
 * LD (32) ‖ MNONCE (16)`. Returns 32 bytes; the firmware's blob is MEASURE ‖ MNONCE ({@link sevLaunchMeasureBlob}).
 */
export function sevLaunchMeasurement(
  digest: Uint8Array,
  mnonce: Uint8Array,
  tik: Uint8Array,
  ctx: SevMeasureContext,
): Uint8Array {
  checkBytes('launch digest', digest, 32);
  checkBytes('MNONCE', mnonce, 16);
  checkBytes('TIK', tik, 16);
  const head = new Uint8Array(8);
  const dv = new DataView(head.buffer);
  dv.setUint8(0, 0x04);
  dv.setUint8(1, checkUint('apiMajor', ctx.apiMajor, 8));
  dv.setUint8(2, checkUint('apiMinor', ctx.apiMinor, 8));
  dv.setUint8(3, checkUint('build', ctx.build, 8));
  dv.setUint32(4, checkUint('policy', ctx.policy, 32), true);
  return new Uint8Array(createHmac('sha256', tik).update(head).update(digest).update(mnonce).digest());
}

/** The 48-byte LAUNCH_MEASURE output: MEASURE (32) ‖ MNONCE (16). */
export function sevLaunchMeasureBlob(
  digest: Uint8Array,
  mnonce: Uint8Array,
  tik: Uint8Array,
  ctx: SevMeasureContext,
): Uint8Array {
  const out = new Uint8Array(48);
  out.set(sevLaunchMeasurement(digest, mnonce, tik, ctx), 0);
  out.set(mnonce, 32);
  return out;
}

/** SNP page types of SNP_LAUNCH_UPDATE (arch/x86/include/uapi/asm/kvm.h `KVM_SEV_SNP_PAGE_TYPE_*`, SNP ABI). */
export const SNP_PAGE_TYPE = { NORMAL: 1, VMSA: 2, ZERO: 3, UNMEASURED: 4, SECRETS: 5, CPUID: 6 } as const;

/** A value of {@link SNP_PAGE_TYPE}. */
export type SnpPageType = (typeof SNP_PAGE_TYPE)[keyof typeof SNP_PAGE_TYPE];

/** GPA KVM gives VMSA pages in SNP_LAUNCH_UPDATE (sev.c `INITIAL_VMSA_GPA`). */
export const SNP_VMSA_GPA = 0xffff_ffff_f000n;

/** Layout of the SNP PAGE_INFO structure (SEV-SNP ABI, SNP_LAUNCH_UPDATE), 0x70 bytes, little-endian. */
export const SNP_PAGE_INFO_LAYOUT = {
  DIGEST_CUR: 0x00, // 48 bytes
  CONTENTS: 0x30, // 48 bytes
  LENGTH: 0x60, // u16 = 0x70
  PAGE_TYPE: 0x62, // u8
  IMI_PAGE: 0x63, // u8
  VMPL3_PERMS: 0x64, // u8
  VMPL2_PERMS: 0x65, // u8
  VMPL1_PERMS: 0x66, // u8
  GPA: 0x68, // u64
  SIZE: 0x70,
} as const;

/** Extra PAGE_INFO inputs of {@link SnpLaunchDigest.updatePage}; KVM passes none (all zero). */
export interface SnpPageInfoOptions {
  readonly imi?: boolean;
  readonly vmpl3Perms?: number;
  readonly vmpl2Perms?: number;
  readonly vmpl1Perms?: number;
}

/**
 * The SNP launch digest (GCTX.LD) as the SEV-SNP ABI chains it: starting from 48 zero bytes, each page
 * gives `ld = SHA-384(PAGE_INFO)` where PAGE_INFO = {ld, contents, 0x70, page type, IMI, VMPL3/2/1
 * permissions, reserved, GPA} ({@link SNP_PAGE_INFO_LAYOUT}); contents = SHA-384(page) for NORMAL and
 * VMSA pages, 48 zero bytes for ZERO, UNMEASURED, SECRETS and CPUID pages. 4 KiB pages only.
 */
export class SnpLaunchDigest {
  #ld: Uint8Array = new Uint8Array(48);

  /**
   * Measures one 4 KiB page at `gpa` (page-aligned). `bytes` (4096) is required for NORMAL and VMSA pages
   * and ignored for the others, whose contents field is zero.
   */
  updatePage(gpa: bigint, pageType: SnpPageType, bytes?: Uint8Array, opts: SnpPageInfoOptions = {}): this {
    checkPageAligned('SNP page gpa', gpa);
    if (!(Object.values(SNP_PAGE_TYPE) as number[]).includes(pageType))
      throw new CocoError(
        'UNKNOWN_CODE',
        `SNP page type ${String(pageType)} is not one of 1..6 (NORMAL..CPUID)`,
        { pageType },
      );
    const info = new Uint8Array(SNP_PAGE_INFO_LAYOUT.SIZE);
    const dv = new DataView(info.buffer);
    info.set(this.#ld, SNP_PAGE_INFO_LAYOUT.DIGEST_CUR);
    if (pageType === SNP_PAGE_TYPE.NORMAL || pageType === SNP_PAGE_TYPE.VMSA) {
      if (bytes === undefined)
        throw new CocoError(
          'BAD_LENGTH',
          `SNP page type ${pageType} at ${hex(gpa)} is measured: its 4096 bytes are required`,
          {
            gpa,
            pageType,
          },
        );
      checkBytes('SNP page bytes', bytes, PAGE_SIZE);
      info.set(createHash('sha384').update(bytes).digest(), SNP_PAGE_INFO_LAYOUT.CONTENTS);
    }
    dv.setUint16(SNP_PAGE_INFO_LAYOUT.LENGTH, SNP_PAGE_INFO_LAYOUT.SIZE, true);
    dv.setUint8(SNP_PAGE_INFO_LAYOUT.PAGE_TYPE, pageType);
    dv.setUint8(SNP_PAGE_INFO_LAYOUT.IMI_PAGE, opts.imi ? 1 : 0);
    dv.setUint8(SNP_PAGE_INFO_LAYOUT.VMPL3_PERMS, checkUint('vmpl3Perms', opts.vmpl3Perms ?? 0, 8));
    dv.setUint8(SNP_PAGE_INFO_LAYOUT.VMPL2_PERMS, checkUint('vmpl2Perms', opts.vmpl2Perms ?? 0, 8));
    dv.setUint8(SNP_PAGE_INFO_LAYOUT.VMPL1_PERMS, checkUint('vmpl1Perms', opts.vmpl1Perms ?? 0, 8));
    dv.setBigUint64(SNP_PAGE_INFO_LAYOUT.GPA, gpa, true);
    this.#ld = new Uint8Array(createHash('sha384').update(info).digest());
    return this;
  }

  /** The current digest, 48 bytes (a copy). */
  digest(): Uint8Array {
    return this.#ld.slice();
  }
}

/** Size of a TDX MRTD measurement block, and of the chunk one TDH.MR.EXTEND measures. */
export const TDX_MRTD = { BLOCK_SIZE: 128, EXTEND_CHUNK_SIZE: 256 } as const;

/**
 * TDX MRTD: one running SHA-384 over 128-byte blocks, as the TDX module builds it until TDH.MR.FINALIZE.
 * TDH.MEM.PAGE.ADD hashes a block holding ASCII "MEM.PAGE.ADD" at offset 0 and the GPA (u64 LE) at
 * offset 16, rest zero; TDH.MR.EXTEND hashes the same with "MR.EXTEND" and the chunk GPA, then the
 * 256-byte chunk. KVM's INIT_MEM_REGION with the MEASURE flag adds a page then extends its 16 chunks.
 */
export class TdxMrtd {
  readonly #hash: Hash = createHash('sha384');

  /** TDH.MEM.PAGE.ADD of the page at `gpa` (4 KiB aligned). */
  addPage(gpa: bigint): this {
    this.#hash.update(tdxBlock('MEM.PAGE.ADD', checkPageAligned('TDX page gpa', gpa)));
    return this;
  }

  /** TDH.MR.EXTEND of one 256-byte chunk at `gpa` (256-byte aligned). */
  extendChunk(gpa: bigint, chunk: Uint8Array): this {
    checkPageAligned('TDX chunk gpa', gpa, 256n);
    checkBytes('TDX MR.EXTEND chunk', chunk, TDX_MRTD.EXTEND_CHUNK_SIZE);
    this.#hash.update(tdxBlock('MR.EXTEND', gpa)).update(chunk);
    return this;
  }

  /** TDH.MR.EXTEND of all 16 chunks of the 4 KiB page at `gpa`, in address order. */
  extendPage(gpa: bigint, bytes: Uint8Array): this {
    checkPageAligned('TDX page gpa', gpa);
    checkBytes('TDX page bytes', bytes, PAGE_SIZE);
    for (let off = 0; off < PAGE_SIZE; off += TDX_MRTD.EXTEND_CHUNK_SIZE)
      this.extendChunk(gpa + BigInt(off), bytes.subarray(off, off + TDX_MRTD.EXTEND_CHUNK_SIZE));
    return this;
  }

  /** MRTD as it would be finalized now, 48 bytes; further updates may follow. */
  digest(): Uint8Array {
    return new Uint8Array(this.#hash.copy().digest());
  }
}

function tdxBlock(tag: string, gpa: bigint): Uint8Array {
  const block = new Uint8Array(TDX_MRTD.BLOCK_SIZE);
  for (let i = 0; i < tag.length; i++) block[i] = tag.charCodeAt(i);
  new DataView(block.buffer).setBigUint64(16, gpa, true);
  return block;
}
