// The ucall ABI: commands, sizes, the slot layout, the pool layout and the guest globals.

import { isVmType, type NativeUcallTransport, VM_TYPE_TRAITS, type VmType } from '@kvmtest/coco';
import type { Gpa, GuestGlobal } from '@kvmtest/guest-memory';
import { argTypeError, describeValue } from '@kvmtest/kvm';

/** ucall commands (include/ucall_common.h `UCALL_*`, selftests ≥ 6.6 numbering). */
export const UCALL = { NONE: 0, SYNC: 1, ABORT: 2, PRINTF: 3, DONE: 4, UNHANDLED: 5 } as const;

/** A ucall command number named in {@link UCALL}. */
export type UcallCmd = (typeof UCALL)[keyof typeof UCALL];

/** Name of a ucall command (`SYNC`), or `cmd <n>` for a number the ABI does not name. */
export function ucallCmdName(n: number | bigint): string {
  if (!(typeof n === 'bigint' || (typeof n === 'number' && Number.isSafeInteger(n))))
    throw argTypeError('ucallCmdName', 'cmd', 'an integer (number or bigint)', n);
  for (const [k, v] of Object.entries(UCALL)) if (BigInt(v) === BigInt(n)) return k;
  return `cmd ${n}`;
}

/** Arguments a ucall carries (UCALL_MAX_ARGS). */
export const UCALL_MAX_ARGS = 7;
/** Bytes of a slot's message buffer, NUL included (UCALL_BUFFER_LEN). */
export const UCALL_BUFFER_LEN = 1024;
/** The port a ucall is sent to: OUT, 4 bytes, data = the slot's GPA (UCALL_PIO_PORT). */
export const UCALL_PIO_PORT = 0x1000;
/** The value a guest sends when it found no free slot (GUEST_UCALL_FAILED: all ones of the 4-byte port write). */
export const UCALL_FAILED_GPA: Gpa = 0xffffffffn;
/** Most slots a pool may have (KVM_MAX_VCPUS: one slot per possible vCPU). */
export const UCALL_MAX_SLOTS = 512;
/** Default slot count of a pool: KVM_MAX_VCPUS of the selftests. */
export const UCALL_DEFAULT_SLOTS = 512;

/**
 * One slot (`struct ucall`), little-endian, 1096 bytes:
 * `cmd` u64 at 0, `args` u64[7] at 8, `buffer` u8[1024] at 64, `gpa` u64 at 1088 (the slot's own GPA,
 * written by the host at init so the guest can name the slot without address translation).
 */
export const UCALL_SLOT_LAYOUT = { cmd: 0, args: 8, buffer: 64, gpa: 1088, size: 1096 } as const;

/** Slots start at a multiple of this many bytes from the pool base (after the in-use bitmap). */
export const UCALL_POOL_SLOT_ALIGN = 64;

/** Where the parts of a pool of `slots` slots lie, in bytes from the pool base. */
export interface UcallPoolLayout {
  /** The in-use bitmap (bit i = slot i taken; LOCK BTS/BTR semantics, little-endian bit order). */
  readonly bitmap: number;
  /** Bytes of the bitmap: whole u64 words covering `slots` bits. */
  readonly bitmapBytes: number;
  /** Offset of slot 0; slot i is at `slots + i * UCALL_SLOT_LAYOUT.size`. */
  readonly slots: number;
  /** Total bytes of the pool. */
  readonly size: number;
}

/** Layout of a pool (`struct ucall_header`): bitmap at 0, slots from the next 64-byte boundary. */
export function ucallPoolLayout(slots: number): UcallPoolLayout {
  if (typeof slots !== 'number')
    throw argTypeError('ucallPoolLayout', 'slots', `an integer in 1–${UCALL_MAX_SLOTS}`, slots);
  if (!Number.isInteger(slots) || slots < 1 || slots > UCALL_MAX_SLOTS)
    throw new RangeError(`ucall pool slot count ${slots} must be an integer in 1–${UCALL_MAX_SLOTS}`);
  const bitmapBytes = Math.ceil(slots / 64) * 8;
  const first = Math.ceil(bitmapBytes / UCALL_POOL_SLOT_ALIGN) * UCALL_POOL_SLOT_ALIGN;
  return Object.freeze({
    bitmap: 0,
    bitmapBytes,
    slots: first,
    size: first + slots * UCALL_SLOT_LAYOUT.size,
  });
}

/** How a guest hands a slot's GPA to the host: its type's native transport, or MMIO on any type. */
export type UcallTransport = NativeUcallTransport | 'mmio';

/** Value of the `ucall_transport` guest global for each transport (0 = pio, so an untouched image means pio). */
export const UCALL_TRANSPORT_CODE = { pio: 0, ghcb: 1, tdvmcall: 2, mmio: 3 } as const satisfies Record<
  UcallTransport,
  number
>;

/** The native transport of a VM type, from its traits (coco's VM_TYPE_TRAITS `ucallTransport`). */
export function transportFor(type: VmType): UcallTransport {
  if (!isVmType(type)) throw new TypeError(`unknown VM type ${describeValue(type)} has no ucall transport`);
  return VM_TYPE_TRAITS[type].ucallTransport;
}

/** Names of the guest globals ucall uses (each a little-endian u64 unless noted). */
export const UCALL_GLOBAL = {
  /** GVA of the pool (0: no pool, the guest reports UCALL_FAILED_GPA). */
  pool: 'ucall_pool',
  /** Slot count of the pool. */
  nrSlots: 'ucall_nr_slots',
  /** UCALL_TRANSPORT_CODE of the VM's transport. */
  transport: 'ucall_transport',
  /** GPA the mmio transport writes to. */
  mmioGpa: 'ucall_mmio_gpa',
  /** GVA of vCPU 0's GHCB page; vCPU n's is n pages above. */
  ghcbGva: 'ucall_ghcb_gva',
  /** GPA of vCPU 0's GHCB page; vCPU n's is n pages above. */
  ghcbGpa: 'ucall_ghcb_gpa',
  /** Number of GHCB pages (vCPU ids below it have one). */
  ghcbCount: 'ucall_ghcb_count',
  /** UCALL_FLAG bits. */
  flags: 'ucall_flags',
  /** 64-byte bitmap the guest keeps: bit n = vCPU n registered its GHCB GPA (SNP). */
  ghcbRegistered: 'ucall_ghcb_registered',
} as const;

/** Bits of the `ucall_flags` global. */
export const UCALL_FLAG = {
  /** SNP: register the GHCB GPA (GHCB MSR REG_GPA_REQ) before a vCPU first uses its GHCB (arch/x86/kvm/svm/sev.c: sev_handle_vmgexit()). */
  REGISTER_GHCB: 1n,
} as const;

/** The globals every guest image must declare for ucall; testkit adds them to every image. */
export const UCALL_GUEST_GLOBALS: readonly GuestGlobal[] = Object.freeze(
  [
    { name: UCALL_GLOBAL.pool, size: 8 },
    { name: UCALL_GLOBAL.nrSlots, size: 8 },
    { name: UCALL_GLOBAL.transport, size: 8 },
    { name: UCALL_GLOBAL.mmioGpa, size: 8 },
    { name: UCALL_GLOBAL.ghcbGva, size: 8 },
    { name: UCALL_GLOBAL.ghcbGpa, size: 8 },
    { name: UCALL_GLOBAL.ghcbCount, size: 8 },
    { name: UCALL_GLOBAL.flags, size: 8 },
    { name: UCALL_GLOBAL.ghcbRegistered, size: UCALL_MAX_SLOTS / 8 },
  ].map((g) => Object.freeze(g)),
);

/**
 * How ucallAssert lays file, line and expression into a slot: `args[expression]` and `args[file]` are
 * byte offsets of NUL-terminated strings in `buffer` (0 = absent), `args[line]` the line,
 * `args[messageBytes]` the UTF-8 length of the untruncated message in its low 56 bits and, in bits
 * 56–57, which extra values are present (UCALL_ASSERT_EXTRA_PRESENT_SHIFT), `args[extra0]`/`args[extra1]`
 * the extra values (0 when absent), `args[magic]` = UCALL_ASSERT_MAGIC.
 * The buffer holds `message NUL file NUL expression NUL` (selftests order of args: expression, file, line).
 */
export const UCALL_ASSERT_ARGS = {
  expression: 0,
  file: 1,
  line: 2,
  messageBytes: 3,
  extra0: 4,
  extra1: 5,
  magic: 6,
} as const;

/** How many extra numeric values an assert ucall can carry (`args[4]`, `args[5]`). */
export const UCALL_ASSERT_EXTRA_MAX = 2;

/**
 * First bit of `args[messageBytes]` that records which extras are present: bit 56 + i set = extra i
 * (`args[4 + i]`) was sent. An extra of 0 and an absent one differ only by this bit. The low 56 bits
 * are the message length.
 */
export const UCALL_ASSERT_EXTRA_PRESENT_SHIFT = 56n;

/** Marks a slot filled by ucallAssert (`args[6]`): ASCII "ucASSERT" little-endian. */
export const UCALL_ASSERT_MAGIC = 0x5452455353416375n;

/** Longest file name kept in an assert slot, in UTF-8 bytes (longer names are cut). */
export const UCALL_ASSERT_FILE_MAX = 256;

/**
 * What an overlong formatted message becomes: selftests' guest_vsnprintf hits GUEST_ASSERT(str < end),
 * so the host sees ABORT with this expression and file instead of the PRINTF (guest_print_test).
 */
export const UCALL_OVERFLOW_ASSERT = Object.freeze({
  expression: 'str < end',
  file: 'ucall/guest_sprintf',
  line: 0,
});
