// The SEV ASID space (arch/x86/kvm/svm/sev.c: sev_asid_new(), sev_asid_free()): one used bitmap and one reclaim bitmap indexed by ASID, the plain-SEV
// range minSevAsid..maxSevAsid and the SEV-ES/SNP range 1..minSevAsid-1, lowest-free allocation,
// delayed reuse through a single DF_FLUSH recycle, and EBUSY when a range is exhausted.

/** Why `allocate` failed: the range is empty (ENOTTY) or every ASID in it is in use (EBUSY). */
export type AsidAllocFailure = 'ENOTTY' | 'EBUSY';

/** Counters a test can read to see what the pool did. */
export interface AsidPoolStats {
  /** DF_FLUSH recycles performed (arch/x86/kvm/svm/sev.c: __sev_recycle_asids()). */
  recycles: number;
}

/** The host's ASID bitmaps (`sev_asid_bitmap`, `sev_reclaim_asid_bitmap`). */
export class AsidPool {
  readonly minSevAsid: number;
  readonly maxSevAsid: number;
  readonly #used: Uint8Array;
  readonly #reclaim: Uint8Array;
  readonly stats: AsidPoolStats = { recycles: 0 };

  constructor(minSevAsid: number, maxSevAsid: number) {
    if (!Number.isSafeInteger(minSevAsid) || minSevAsid < 0 || minSevAsid > 0xffff_ffff)
      throw new RangeError(`minSevAsid ${minSevAsid} is not a u32`);
    if (!Number.isSafeInteger(maxSevAsid) || maxSevAsid < 0 || maxSevAsid > 0x10000)
      throw new RangeError(`maxSevAsid ${maxSevAsid} is outside 0..65536 (the simulator's bitmap limit)`);
    this.minSevAsid = minSevAsid;
    this.maxSevAsid = maxSevAsid;
    // ASID 0 has a slot but is never handed out (arch/x86/kvm/svm/sev.c: sev_asid_new()).
    this.#used = new Uint8Array(maxSevAsid + 1);
    this.#reclaim = new Uint8Array(maxSevAsid + 1);
  }

  /** The inclusive range for a guest kind (arch/x86/kvm/svm/sev.c: sev_asid_new()): ES/SNP `1..min-1`, plain SEV `min..max`. */
  range(es: boolean): { first: number; last: number } {
    return es ? { first: 1, last: this.minSevAsid - 1 } : { first: this.minSevAsid, last: this.maxSevAsid };
  }

  /** `sev_asid_new` steps 1, 3–6 (arch/x86/kvm/svm/sev.c): the lowest free ASID in range, recycling once if none. */
  allocate(es: boolean): number | AsidAllocFailure {
    const { first, last } = this.range(es);
    if (first > last) return 'ENOTTY';
    let asid = this.#lowestFree(first, last);
    if (asid === undefined && this.#recycle(first, last)) asid = this.#lowestFree(first, last);
    if (asid === undefined) return 'EBUSY';
    this.#used[asid] = 1;
    return asid;
  }

  /** `sev_asid_free` (arch/x86/kvm/svm/sev.c): the ASID waits in the reclaim bitmap until the next recycle. */
  free(asid: number): void {
    if (asid <= 0 || asid > this.maxSevAsid || this.#used[asid] !== 1)
      throw new Error(`internal: ASID ${asid} freed but not allocated`);
    this.#reclaim[asid] = 1;
  }

  /** True while `asid` is allocated and not yet returned (used and not waiting for reclaim). */
  isOwned(asid: number): boolean {
    return this.#used[asid] === 1 && this.#reclaim[asid] !== 1;
  }

  /** ASIDs held by live guests (used and not in the reclaim bitmap). */
  ownedAsids(): number[] {
    const out: number[] = [];
    for (let a = 1; a <= this.maxSevAsid; a++) if (this.isOwned(a)) out.push(a);
    return out;
  }

  /** ASIDs freed and waiting for a DF_FLUSH. */
  reclaimableAsids(): number[] {
    const out: number[] = [];
    for (let a = 1; a <= this.maxSevAsid; a++) if (this.#reclaim[a] === 1) out.push(a);
    return out;
  }

  /** Free ASIDs in a range, counting the reclaimable ones (what a DF_FLUSH would make available). */
  available(es: boolean): number {
    const { first, last } = this.range(es);
    let n = 0;
    for (let a = first; a <= last; a++) if (this.#used[a] !== 1 || this.#reclaim[a] === 1) n++;
    return n;
  }

  #lowestFree(first: number, last: number): number | undefined {
    for (let a = first; a <= last; a++) if (this.#used[a] !== 1) return a;
    return undefined;
  }

  // `__sev_recycle_asids`: only if some ASID of *this* range waits; then every reclaimable ASID of
  // every range becomes free (arch/x86/kvm/svm/sev.c: __sev_recycle_asids()).
  #recycle(first: number, last: number): boolean {
    let any = false;
    for (let a = first; a <= last && !any; a++) any = this.#reclaim[a] === 1;
    if (!any) return false;
    for (let a = 1; a <= this.maxSevAsid; a++) {
      if (this.#reclaim[a] === 1) {
        this.#reclaim[a] = 0;
        this.#used[a] = 0;
      }
    }
    this.stats.recycles++;
    return true;
  }
}
