// @kvmtest/ucall — the ucall channel between a guest and its host: slot layout, per-VM pool,
// transport per VM type, the guest half (`ucall(g, …)`) and the host half (`getUcall(vcpu)`).
// Depends on kvm, coco and guest-memory; sibling of kvm-sim.

export type { UcallCmd, UcallPoolLayout, UcallTransport } from './internal/constants.js';
export {
  transportFor,
  UCALL,
  UCALL_ASSERT_ARGS,
  UCALL_ASSERT_EXTRA_MAX,
  UCALL_ASSERT_EXTRA_PRESENT_SHIFT,
  UCALL_ASSERT_FILE_MAX,
  UCALL_ASSERT_MAGIC,
  UCALL_BUFFER_LEN,
  UCALL_DEFAULT_SLOTS,
  UCALL_FAILED_GPA,
  UCALL_FLAG,
  UCALL_GLOBAL,
  UCALL_GUEST_GLOBALS,
  UCALL_MAX_ARGS,
  UCALL_MAX_SLOTS,
  UCALL_OVERFLOW_ASSERT,
  UCALL_PIO_PORT,
  UCALL_POOL_SLOT_ALIGN,
  UCALL_SLOT_LAYOUT,
  UCALL_TRANSPORT_CODE,
  ucallCmdName,
  ucallPoolLayout,
} from './internal/constants.js';
export type { UcallErrorCode } from './internal/errors.js';
export { UCALL_ERROR, UcallError } from './internal/errors.js';
export { formatGuestString, GUEST_PRINTF_MAX_LENGTH } from './internal/format.js';
export type { AssertWhere, DecodedSlot, SlotContents } from './internal/slot.js';
export { decodeSlot, encodeSlot } from './internal/slot.js';
export type { UcallInitOptions, UcallInitTarget } from './internal/pool.js';
export { UcallPool, ucallInit, ucallMovePool, ucallPoolOf, ucallReapply } from './internal/pool.js';
export type { Ucall } from './internal/host.js';
export { describeUcall, getUcall, isUcallExit } from './internal/host.js';
export { guestGhcb, ucall, ucallAssert, ucallFmt, ucallNone } from './internal/guest.js';
