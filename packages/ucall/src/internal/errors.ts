// The package's error class and its code table.

/** Codes of UcallError, one per rule the package enforces. */
export const UCALL_ERROR = {
  /** The VM has no ucall pool (ucallInit was not called for it). */
  NO_POOL: 'NO_POOL',
  /** ucallInit was already called for this VM. */
  ALREADY_INITIALIZED: 'ALREADY_INITIALIZED',
  /** The value the guest sent is not the GPA of a slot of this VM's pool. */
  FORGED_GPA: 'FORGED_GPA',
  /** The GPA names a slot of the pool that is not in use (its in-use bit is clear). */
  STALE_GPA: 'STALE_GPA',
  /** Another vCPU's pending ucall exit names the same slot: a vCPU sent a slot it did not take. */
  FOREIGN_SLOT: 'FOREIGN_SLOT',
  /** The slot's own `gpa` field does not hold the slot's GPA (the pool was overwritten). */
  SLOT_MISMATCH: 'SLOT_MISMATCH',
  /** The guest found no free slot (or no pool) and sent UCALL_FAILED_GPA. */
  NO_FREE_SLOT: 'NO_FREE_SLOT',
  /** getUcall was already called for this exit; the next vcpu.run() completes it. */
  ALREADY_DECODED: 'ALREADY_DECODED',
  /** An exit on the ucall port or MMIO address that is not a ucall's shape (OUT, 4 bytes / write, 8 bytes). */
  BAD_EXIT: 'BAD_EXIT',
  /** A transport that cannot carry ucalls for this VM type. */
  BAD_TRANSPORT: 'BAD_TRANSPORT',
  /** The ucall MMIO GPA is backed by a memslot (it would not exit) or does not fit. */
  BAD_MMIO_GPA: 'BAD_MMIO_GPA',
  /** The pool or a GHCB page does not lie below 4 GiB (the port carries 4 bytes). */
  POOL_ABOVE_4G: 'POOL_ABOVE_4G',
  /** The guest image lacks a ucall global, or it is too small. */
  MISSING_GLOBAL: 'MISSING_GLOBAL',
  /** Target pieces do not belong together (image of another address space, …). */
  BAD_TARGET: 'BAD_TARGET',
  /** Guest side: this vCPU has no GHCB page (its id is not below the GHCB count given at init). */
  NO_GHCB: 'NO_GHCB',
  /** Guest side: the hypervisor answered the GHCB request with an error (sw_exit_info_1 ≠ 0). */
  GHCB_ERROR: 'GHCB_ERROR',
  /** Guest side: the TDG.VP.VMCALL returned a non-zero status in R10. */
  TDVMCALL_FAILED: 'TDVMCALL_FAILED',
} as const;

/** One of the UCALL_ERROR codes. */
export type UcallErrorCode = (typeof UCALL_ERROR)[keyof typeof UCALL_ERROR];

/** A ucall rule was broken; `code` names the rule and `details` holds the values involved. */
export class UcallError extends Error {
  override readonly name = 'UcallError';
  readonly code: UcallErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: UcallErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.code = code;
    this.details = Object.freeze({ ...details });
  }
}
