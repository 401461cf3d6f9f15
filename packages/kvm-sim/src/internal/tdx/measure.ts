// The TD's MRTD, folded lazily. TDH.MEM.PAGE.ADD / TDH.MR.EXTEND only append to a log (a copy of
// each measured page is kept, since the guest may change the page later); the SHA-384 arithmetic
// of @kvmtest/coco's TdxMrtd runs when the value is read, or once the log holds too many bytes. The
// digest is the same either way; the launch itself no longer pays for hashing nobody reads.

import { TdxMrtd } from '@kvmtest/coco';

/** Pending measured bytes above which the log is folded into the hash at once. */
const FOLD_BYTES = 16 << 20;
/** Page copies are packed into slabs (one allocation instead of one per page): the first holds 64 KiB, each next one doubles, up to 1 MiB. */
const SLAB_MIN_BYTES = 64 << 10;
const SLAB_MAX_BYTES = 1 << 20;

/** A running MRTD with a deferred log. */
export class LazyMrtd {
  readonly #mrtd = new TdxMrtd();
  /** Pending updates: a GPA alone is TDH.MEM.PAGE.ADD, a GPA with bytes is TDH.MR.EXTEND of the page. */
  #log: { gpa: bigint; bytes: Uint8Array | undefined }[] = [];
  #pending = 0;
  #slab: Uint8Array = new Uint8Array(0);
  #slabUsed = 0;

  /** TDH.MEM.PAGE.ADD of the page at `gpa`. */
  addPage(gpa: bigint): void {
    this.#log.push({ gpa, bytes: undefined });
  }

  /** TDH.MR.EXTEND of the 16 chunks of the page at `gpa` holding `bytes` (copied). */
  extendPage(gpa: bigint, bytes: Uint8Array): void {
    if (this.#slabUsed + bytes.length > this.#slab.length) {
      // A small launch (a few pages) must not pay for zeroing a megabyte it never uses.
      const next = Math.min(SLAB_MAX_BYTES, Math.max(SLAB_MIN_BYTES, this.#slab.length * 2));
      this.#slab = new Uint8Array(Math.max(next, bytes.length));
      this.#slabUsed = 0;
    }
    const copy = this.#slab.subarray(this.#slabUsed, this.#slabUsed + bytes.length);
    copy.set(bytes);
    this.#slabUsed += bytes.length;
    this.#log.push({ gpa, bytes: copy });
    this.#pending += bytes.length;
    if (this.#pending >= FOLD_BYTES) this.#fold();
  }

  #fold(): void {
    for (const e of this.#log) {
      if (e.bytes === undefined) this.#mrtd.addPage(e.gpa);
      else this.#mrtd.extendPage(e.gpa, e.bytes);
    }
    this.#log = [];
    this.#pending = 0;
    this.#slab = new Uint8Array(0);
    this.#slabUsed = 0;
  }

  /** The MRTD as it stands, 48 bytes. */
  digest(): Uint8Array {
    this.#fold();
    return this.#mrtd.digest();
  }
}
