// The GHCB page (4 KiB, shared): save-area fields with a valid bitmap, a shared buffer, version and usage.
// Also the SVM exit codes a guest names in sw_exit_code.

import { CocoError } from './error.js';
import { checkBigUint, checkUint } from './internal/bits.js';

/** Fields of the GHCB save area: byte offset and width (arch/x86/include/asm/svm.h `struct ghcb_save_area`). */
export const GHCB_FIELD = {
  cpl: { offset: 0x0cb, size: 1 },
  xss: { offset: 0x140, size: 8 },
  dr7: { offset: 0x160, size: 8 },
  rip: { offset: 0x178, size: 8 },
  rsp: { offset: 0x1d8, size: 8 },
  rax: { offset: 0x1f8, size: 8 },
  rcx: { offset: 0x308, size: 8 },
  rdx: { offset: 0x310, size: 8 },
  rbx: { offset: 0x318, size: 8 },
  rbp: { offset: 0x328, size: 8 },
  rsi: { offset: 0x330, size: 8 },
  rdi: { offset: 0x338, size: 8 },
  r8: { offset: 0x340, size: 8 },
  r9: { offset: 0x348, size: 8 },
  r10: { offset: 0x350, size: 8 },
  r11: { offset: 0x358, size: 8 },
  r12: { offset: 0x360, size: 8 },
  r13: { offset: 0x368, size: 8 },
  r14: { offset: 0x370, size: 8 },
  r15: { offset: 0x378, size: 8 },
  swExitCode: { offset: 0x390, size: 8 },
  swExitInfo1: { offset: 0x398, size: 8 },
  swExitInfo2: { offset: 0x3a0, size: 8 },
  swScratch: { offset: 0x3a8, size: 8 },
  xcr0: { offset: 0x3e8, size: 8 },
} as const;

/** Name of a GHCB save-area field that has a valid bit. */
export type GhcbField = keyof typeof GHCB_FIELD;

/** Every GHCB field name, in offset order. */
export const GHCB_FIELDS: readonly GhcbField[] = Object.freeze(
  (Object.keys(GHCB_FIELD) as GhcbField[]).sort((a, b) => GHCB_FIELD[a].offset - GHCB_FIELD[b].offset),
);

/** Offsets and sizes of the GHCB page's parts (arch/x86/include/asm/svm.h `struct ghcb`). All little-endian. */
export const GHCB_LAYOUT = {
  SIZE: 4096,
  SAVE_AREA_SIZE: 0x408,
  VALID_BITMAP_OFFSET: 0x3f0,
  VALID_BITMAP_SIZE: 16,
  X87_STATE_GPA_OFFSET: 0x400,
  SHARED_BUFFER_OFFSET: 0x800,
  SHARED_BUFFER_SIZE: 2032,
  PROTOCOL_VERSION_OFFSET: 0xffa,
  USAGE_OFFSET: 0xffc,
} as const;

/** GHCB protocol versions: KVM offers 1..2 in its SEV_INFO reply (arch/x86/kvm/svm/sev.c: `GHCB_VERSION_MIN`/`GHCB_VERSION_MAX`, sev_handle_vmgexit_msr_protocol()). */
export const GHCB_PROTOCOL_VERSION = { MIN: 1, MAX: 2 } as const;

/** The only `ghcb_usage` value KVM accepts (arch/x86/kvm/svm/sev.c: sev_es_validate_vmgexit()). */
export const GHCB_DEFAULT_USAGE = 0;

/** Valid-bitmap bit of a field: its qword index, `offset / 8` (arch/x86/include/asm/svm.h `GHCB_BITMAP_IDX`). */
export function ghcbValidBit(field: GhcbField): number {
  const f = GHCB_FIELD[field];
  if (f === undefined)
    throw new CocoError(
      'UNKNOWN_CODE',
      `GHCB field ${JSON.stringify(field)} is not known (known: ${GHCB_FIELDS.join(', ')})`,
      {
        field,
      },
    );
  return Math.floor(f.offset / 8);
}

/** Hardware SVM exit codes, also #VC error codes (arch/x86/include/uapi/asm/svm.h `SVM_EXIT_*`). */
export const SVM_EXIT = {
  READ_DR7: 0x027,
  WRITE_DR7: 0x037,
  EXCP_BASE: 0x040,
  INTR: 0x060,
  NMI: 0x061,
  SMI: 0x062,
  INIT: 0x063,
  VINTR: 0x064,
  RDTSC: 0x06e,
  RDPMC: 0x06f,
  PUSHF: 0x070,
  POPF: 0x071,
  CPUID: 0x072,
  RSM: 0x073,
  IRET: 0x074,
  SWINT: 0x075,
  INVD: 0x076,
  PAUSE: 0x077,
  HLT: 0x078,
  INVLPG: 0x079,
  INVLPGA: 0x07a,
  IOIO: 0x07b,
  MSR: 0x07c,
  TASK_SWITCH: 0x07d,
  SHUTDOWN: 0x07f,
  VMRUN: 0x080,
  VMMCALL: 0x081,
  VMLOAD: 0x082,
  VMSAVE: 0x083,
  RDTSCP: 0x087,
  WBINVD: 0x089,
  MONITOR: 0x08a,
  MWAIT: 0x08b,
  XSETBV: 0x08d,
  RDPRU: 0x08e,
  NPF: 0x400,
  VMGEXIT: 0x403,
} as const;

/** Software exit codes a guest puts in sw_exit_code for VMGEXIT (arch/x86/include/uapi/asm/svm.h `SVM_VMGEXIT_*`). */
export const SVM_VMGEXIT = {
  MMIO_READ: 0x8000_0001,
  MMIO_WRITE: 0x8000_0002,
  NMI_COMPLETE: 0x8000_0003,
  AP_HLT_LOOP: 0x8000_0004,
  AP_JUMP_TABLE: 0x8000_0005,
  PSC: 0x8000_0010,
  GUEST_REQUEST: 0x8000_0011,
  EXT_GUEST_REQUEST: 0x8000_0012,
  AP_CREATION: 0x8000_0013,
  HV_FEATURES: 0x8000_fffd,
  TERM_REQUEST: 0x8000_fffe,
  UNSUPPORTED_EVENT: 0x8000_ffff,
} as const;

/** AP_CREATION request kinds, low 32 bits of sw_exit_info_1 (uapi svm.h `SVM_VMGEXIT_AP_*`). */
export const SVM_VMGEXIT_AP = { CREATE_ON_INIT: 0, CREATE: 1, DESTROY: 2 } as const;

/** Result in the low 32 bits of sw_exit_info_1 after a VMGEXIT: 0 ok, 1 exception in info_2, 2 GHCB error in info_2. */
export const GHCB_EXIT_RESULT = { OK: 0, EXCEPTION: 1, ERROR: 2 } as const;

/** GHCB error reasons KVM returns in sw_exit_info_2 with result 2 (arch/x86/include/asm/sev-common.h `GHCB_ERR_*`). */
export const GHCB_ERR = {
  NOT_REGISTERED: 1,
  INVALID_USAGE: 2,
  INVALID_SCRATCH_AREA: 3,
  MISSING_INPUT: 4,
  INVALID_INPUT: 5,
  INVALID_EVENT: 6,
} as const;

/**
 * A view over one 4096-byte GHCB page (arch/x86/include/asm/svm.h `struct ghcb`), shared by the guest that fills it and the hypervisor
 * that validates it. Setting a field marks its valid bit, as the kernel's `ghcb_set_*` accessors do.
 * All fields little-endian.
 */
export class Ghcb {
  /** The page's bytes; the view writes through to them. */
  readonly bytes: Uint8Array;
  readonly #view: DataView;

  constructor(bytes: Uint8Array = new Uint8Array(GHCB_LAYOUT.SIZE)) {
    if (!(bytes instanceof Uint8Array) || bytes.length !== GHCB_LAYOUT.SIZE)
      throw new CocoError(
        'BAD_LENGTH',
        `a GHCB is ${GHCB_LAYOUT.SIZE} bytes, got ${bytes?.length ?? String(bytes)}`,
        {
          expected: GHCB_LAYOUT.SIZE,
          got: bytes?.length,
        },
      );
    this.bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** The field's raw value, valid or not (`ghcb_get_*`). */
  get(field: GhcbField): bigint {
    const f = SET_INFO.get(field) ?? unknownField(field);
    return f.size === 1 ? BigInt(this.#view.getUint8(f.offset)) : this.#view.getBigUint64(f.offset, true);
  }

  /** The field's value if its valid bit is set, else 0n (`ghcb_get_*_if_valid`, what KVM reads). */
  getIfValid(field: GhcbField): bigint {
    return this.isValid(field) ? this.get(field) : 0n;
  }

  /** Writes the field and sets its valid bit (`ghcb_set_*`). `cpl` is one byte, the others u64. */
  set(field: GhcbField, value: bigint): void {
    const f = SET_INFO.get(field) ?? unknownField(field);
    // The range check inline; the message (and its name string) is only built on failure.
    if (typeof value !== 'bigint' || value < 0n || value > f.max)
      checkBigUint(`GHCB ${field}`, value, f.size * 8);
    if (f.size === 1) this.#view.setUint8(f.offset, Number(value));
    else this.#view.setBigUint64(f.offset, value, true);
    const i = f.bitmapIndex;
    this.bytes[i] = this.bytes[i]! | f.bitmapMask;
  }

  /** True when the field's valid bit is set (`ghcb_*_is_valid`). */
  isValid(field: GhcbField): boolean {
    const f = SET_INFO.get(field) ?? unknownField(field);
    return (this.bytes[f.bitmapIndex]! & f.bitmapMask) !== 0;
  }

  /** Clears one field's valid bit, leaving its bytes. */
  invalidate(field: GhcbField): void {
    this.#setValidBit(ghcbValidBit(field), false);
  }

  /** Names of the fields whose valid bit is set, in offset order. */
  validFields(): GhcbField[] {
    return GHCB_FIELDS.filter((f) => this.isValid(f));
  }

  /** The 128-bit valid bitmap (bit i ⇔ qword at offset 8·i). */
  get validBitmap(): bigint {
    const o = GHCB_LAYOUT.VALID_BITMAP_OFFSET;
    return this.#view.getBigUint64(o, true) | (this.#view.getBigUint64(o + 8, true) << 64n);
  }

  set validBitmap(v: bigint) {
    checkBigUint('GHCB valid bitmap', v, 128);
    const o = GHCB_LAYOUT.VALID_BITMAP_OFFSET;
    this.#view.setBigUint64(o, v & ((1n << 64n) - 1n), true);
    this.#view.setBigUint64(o + 8, v >> 64n, true);
  }

  /** Zeroes the valid bitmap (KVM does this after copying the GHCB in: arch/x86/kvm/svm/sev.c: sev_es_sync_from_ghcb()). */
  clearValidBitmap(): void {
    this.bytes.fill(
      0,
      GHCB_LAYOUT.VALID_BITMAP_OFFSET,
      GHCB_LAYOUT.VALID_BITMAP_OFFSET + GHCB_LAYOUT.VALID_BITMAP_SIZE,
    );
  }

  /** Prepares for a new request as a guest does: sw_exit_code = 0 and an empty valid bitmap. */
  reset(): void {
    this.#view.setBigUint64(GHCB_FIELD.swExitCode.offset, 0n, true);
    this.clearValidBitmap();
  }

  /** Zeroes the whole page. */
  clear(): void {
    this.bytes.fill(0);
  }

  /** x87_state_gpa (u64 at 0x400; has no valid bit). */
  get x87StateGpa(): bigint {
    return this.#view.getBigUint64(GHCB_LAYOUT.X87_STATE_GPA_OFFSET, true);
  }

  set x87StateGpa(v: bigint) {
    this.#view.setBigUint64(
      GHCB_LAYOUT.X87_STATE_GPA_OFFSET,
      checkBigUint('GHCB x87_state_gpa', v, 64),
      true,
    );
  }

  /** protocol_version (u16 at 0xFFA). */
  get protocolVersion(): number {
    return this.#view.getUint16(GHCB_LAYOUT.PROTOCOL_VERSION_OFFSET, true);
  }

  set protocolVersion(v: number) {
    this.#view.setUint16(
      GHCB_LAYOUT.PROTOCOL_VERSION_OFFSET,
      checkUint('GHCB protocol_version', v, 16),
      true,
    );
  }

  /** ghcb_usage (u32 at 0xFFC; KVM requires 0). */
  get usage(): number {
    return this.#view.getUint32(GHCB_LAYOUT.USAGE_OFFSET, true);
  }

  set usage(v: number) {
    this.#view.setUint32(GHCB_LAYOUT.USAGE_OFFSET, checkUint('GHCB ghcb_usage', v, 32), true);
  }

  /** The shared buffer, 2032 bytes at 0x800 (a view into the page, not a copy). */
  get sharedBuffer(): Uint8Array {
    return this.bytes.subarray(
      GHCB_LAYOUT.SHARED_BUFFER_OFFSET,
      GHCB_LAYOUT.SHARED_BUFFER_OFFSET + GHCB_LAYOUT.SHARED_BUFFER_SIZE,
    );
  }

  #setValidBit(bit: number, on: boolean): void {
    const i = GHCB_LAYOUT.VALID_BITMAP_OFFSET + (bit >> 3);
    const m = 1 << (bit & 7);
    this.bytes[i] = on ? this.bytes[i]! | m : this.bytes[i]! & ~m;
  }
}

// Per field, what `get`, `set` and `isValid` need: offset, size, largest value, and the valid bit's byte and mask.
const SET_INFO = new Map(
  GHCB_FIELDS.map((name) => {
    const { offset, size } = GHCB_FIELD[name];
    const bit = Math.floor(offset / 8);
    return [
      name as string,
      {
        offset,
        size,
        max: (1n << BigInt(size * 8)) - 1n,
        bitmapIndex: GHCB_LAYOUT.VALID_BITMAP_OFFSET + (bit >> 3),
        bitmapMask: 1 << (bit & 7),
      },
    ] as const;
  }),
);

function unknownField(field: string): never {
  throw new CocoError(
    'UNKNOWN_CODE',
    `GHCB field ${JSON.stringify(field)} is not known (known: ${GHCB_FIELDS.join(', ')})`,
    {
      field,
    },
  );
}

/** True when `code` is a sw_exit_code this package names (hardware SVM_EXIT_* or SVM_VMGEXIT_*). */
export function isKnownSvmExitCode(code: bigint | number): boolean {
  const n = typeof code === 'bigint' ? (code < 2n ** 32n && code >= 0n ? Number(code) : -1) : code;
  return (
    (Object.values(SVM_EXIT) as number[]).includes(n) || (Object.values(SVM_VMGEXIT) as number[]).includes(n)
  );
}

/** Kernel name of an exit code (`SVM_EXIT_IOIO`, `SVM_VMGEXIT_PSC`, …), or undefined when unnamed here. */
export function svmExitCodeName(code: bigint | number): string | undefined {
  const n = typeof code === 'bigint' ? Number(code) : code;
  for (const [k, v] of Object.entries(SVM_EXIT)) if (v === n) return `SVM_EXIT_${k}`;
  for (const [k, v] of Object.entries(SVM_VMGEXIT)) if (v === n) return `SVM_VMGEXIT_${k}`;
  return undefined;
}
