// Guest physical memory: memslot regions over host byte buffers, GPA → region lookup and
// little-endian accessors. The hot accessors go through a last-hit region cache and a DataView
// cached on each Region, comparing the GPA as a number (exact: regions reaching above 2^53 have
// NaN number bounds and always take the bigint slow path); a miss falls back to a binary search
// over the regions sorted by GPA.

import { SparseBitmap } from './bitmap.js';
import { PAGE_SHIFT, PAGE_SIZE } from './constants.js';
import { GUEST_MEMORY_ERROR, GuestMemoryError, hex, toCount, toSlot, toU64, U64_MAX } from './errors.js';
import type { Gpa, HostOffset } from './address.js';

/** Memslot flags: `readOnly` = KVM_MEM_READONLY (guest writes fault; host writes still land); `privateBacking` = guest_memfd-backed. */
export interface RegionFlags {
  readonly readOnly?: boolean;
  readonly privateBacking?: boolean;
}

/** Description of a memslot to add: id, GPA and size (both 4 KiB aligned), flags and optional host backing of exactly `size` bytes. */
export interface RegionSpec {
  slot: number;
  gpa: Gpa;
  size: bigint;
  flags?: RegionFlags;
  backing?: Uint8Array;
}

/** A reader of guest-physical memory (all the page-table walker needs); a CPU model may pass a decrypting view. */
export interface PhysReader {
  readU64(gpa: Gpa): bigint;
}

/** A reader and writer of 64-bit little-endian guest-physical words (what page tables are built with). */
export interface PhysWriter extends PhysReader {
  writeU64(gpa: Gpa, v: bigint): void;
}

/** One memslot: a GPA range [gpa, end) backed by a host byte buffer, with its physical page bitmaps. */
export class Region {
  readonly slot: number;
  readonly gpa: Gpa;
  readonly size: bigint;
  /** First GPA past the region. */
  readonly end: Gpa;
  readonly flags: Readonly<RegionFlags>;
  readonly backing: Uint8Array;
  /** Number of 4 KiB pages. */
  readonly pages: number;
  /** @internal little-endian view over `backing`, used by the accessors. */
  readonly view: DataView;
  /** @internal allocated pages (selftests' unused_phy_pages, inverted so that absent chunks mean free). */
  readonly used: SparseBitmap;
  /** @internal protected pages (selftests' protected_phy_pages). */
  readonly protectedPages: SparseBitmap;
  /** @internal allocator search cursors: for each minimum page index k seen, every page in [k, cursor) is allocated. */
  readonly cursors = new Map<number, number>();
  /** @internal `gpa` and `end` as numbers, exact when below 2^53 (else NaN: the number fast paths skip the region). */
  readonly gpaNum: number;
  /** @internal */
  readonly endNum: number;
  /** @internal highest GPA (as a number) where an access of 2/4/8 bytes still fits. */
  readonly last2Num: number;
  /** @internal */
  readonly last4Num: number;
  /** @internal */
  readonly last8Num: number;

  /** @internal Regions are created by PhysicalMemory.addRegion, which validates the arguments. */
  constructor(slot: number, gpa: Gpa, size: bigint, flags: RegionFlags, backing: Uint8Array) {
    this.slot = slot;
    this.gpa = gpa;
    this.size = size;
    this.end = gpa + size;
    this.flags = Object.freeze({ ...flags });
    this.backing = backing;
    this.pages = Number(size >> BigInt(PAGE_SHIFT));
    this.view = new DataView(backing.buffer, backing.byteOffset, backing.byteLength);
    this.used = new SparseBitmap(this.pages);
    const exact = this.end <= 2n ** 53n;
    this.gpaNum = exact ? Number(gpa) : Number.NaN;
    this.endNum = exact ? Number(this.end) : Number.NaN;
    this.last2Num = this.endNum - 2;
    this.last4Num = this.endNum - 4;
    this.last8Num = this.endNum - 8;
    this.protectedPages = new SparseBitmap(this.pages);
  }

  /** True when `gpa` lies inside [gpa, end). */
  contains(gpa: Gpa): boolean {
    if (typeof gpa !== 'bigint' || gpa < 0n || gpa > U64_MAX) toU64(gpa, 'GPA');
    return gpa >= this.gpa && gpa < this.end;
  }

  /** Byte offset of `gpa` in `backing`; the caller guarantees contains(gpa). */
  offsetOf(gpa: Gpa): HostOffset {
    return Number(gpa - this.gpa);
  }

  /** True when page `pageIndex` of this region is not allocated by the physical page allocator. */
  isPageFree(pageIndex: number): boolean {
    return !this.used.get(this.checkPage(pageIndex));
  }

  /** True when page `pageIndex` is allocated as protected (private) memory. */
  isPageProtected(pageIndex: number): boolean {
    return this.protectedPages.get(this.checkPage(pageIndex));
  }

  private checkPage(pageIndex: number): number {
    toCount(pageIndex, 'page index');
    if (pageIndex >= this.pages)
      throw new RangeError(`page index ${pageIndex} is outside memslot ${this.slot} (${this.pages} pages)`);
    return pageIndex;
  }

  /** `slot 0 [0x0–0x21fffff]`, for messages. */
  describe(): string {
    return `memslot ${this.slot} [${hex(this.gpa)}–${hex(this.end - 1n)}]`;
  }
}

const MAX_SLOT_LIST = 8;

/** Guest physical memory: the set of memslot regions and byte/word access by GPA (little-endian). */
export class PhysicalMemory implements PhysWriter {
  private sorted: Region[] = [];
  private readonly bySlot = new Map<number, Region>();
  private last: Region | undefined;

  /** Adds a memslot; GPA and size must be 4 KiB aligned, non-empty, inside 2^64, not overlapping, with an unused slot id. */
  addRegion(spec: RegionSpec): Region {
    if (typeof spec !== 'object' || spec === null) throw new TypeError('region spec must be an object');
    const slot = toSlot(spec.slot);
    const gpa = toU64(spec.gpa, 'region GPA');
    const size = toU64(spec.size, 'region size');
    const flags = spec.flags ?? {};
    if (typeof flags !== 'object' || flags === null) throw new TypeError('region flags must be an object');
    if (size === 0n)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.ZERO_SIZE,
        `memslot ${slot} at GPA ${hex(gpa)} has size 0`,
        {
          slot,
          gpa,
        },
      );
    if (gpa & 0xfffn)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.UNALIGNED,
        `memslot ${slot} GPA ${hex(gpa)} is not aligned to the 4 KiB page size`,
        { slot, gpa, alignment: PAGE_SIZE },
      );
    if (size & 0xfffn)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.UNALIGNED,
        `memslot ${slot} size ${hex(size)} is not a multiple of the 4 KiB page size`,
        { slot, size, alignment: PAGE_SIZE },
      );
    if (gpa + size - 1n > U64_MAX)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.BAD_ADDRESS,
        `memslot ${slot} [${hex(gpa)}, +${hex(size)}) ends beyond the 64-bit GPA space`,
        { slot, gpa, size },
      );
    const inUse = this.bySlot.get(slot);
    if (inUse)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.SLOT_IN_USE,
        `memslot id ${slot} is already used by ${inUse.describe()}`,
        { slot, existing: { gpa: inUse.gpa, size: inUse.size } },
      );
    const end = gpa + size;
    const at = this.lowerBound(gpa);
    for (const other of [this.sorted[at - 1], this.sorted[at]]) {
      if (other && other.gpa < end && gpa < other.end)
        throw new GuestMemoryError(
          GUEST_MEMORY_ERROR.OVERLAP,
          `memslot ${slot} [${hex(gpa)}–${hex(end - 1n)}] overlaps ${other.describe()}`,
          { slot, gpa, size, otherSlot: other.slot, otherGpa: other.gpa, otherSize: other.size },
        );
    }
    let backing = spec.backing;
    if (backing !== undefined) {
      if (!(backing instanceof Uint8Array)) throw new TypeError('region backing must be a Uint8Array');
      if (BigInt(backing.byteLength) !== size)
        throw new GuestMemoryError(
          GUEST_MEMORY_ERROR.BAD_BACKING,
          `memslot ${slot} backing has ${backing.byteLength} bytes but the region size is ${hex(size)} (${size} bytes)`,
          { slot, size, backingBytes: backing.byteLength },
        );
    } else {
      if (size > BigInt(Number.MAX_SAFE_INTEGER))
        throw new RangeError(`memslot ${slot} size ${hex(size)} is too large for a host buffer`);
      try {
        // Zero-filled ArrayBuffers are calloc'ed: like an anonymous mmap, only touched pages cost RSS.
        backing = new Uint8Array(Number(size));
      } catch (e) {
        throw new RangeError(
          `memslot ${slot} size ${hex(size)} cannot be backed by a host buffer: ${(e as Error).message}`,
        );
      }
    }
    const region = new Region(slot, gpa, size, flags, backing);
    this.sorted = [...this.sorted.slice(0, at), region, ...this.sorted.slice(at)];
    this.bySlot.set(slot, region);
    return region;
  }

  /** Removes memslot `slot` and returns its region; NO_SUCH_SLOT when absent. */
  removeRegion(slot: number): Region {
    const region = this.bySlot.get(toSlot(slot));
    if (!region)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.NO_SUCH_SLOT,
        `memslot ${slot} does not exist (slots: ${this.slotIds()})`,
        { slot },
      );
    this.bySlot.delete(slot);
    this.sorted = this.sorted.filter((r) => r !== region);
    if (this.last === region) this.last = undefined;
    return region;
  }

  /** The region with memslot id `slot`, or undefined. */
  getRegion(slot: number): Region | undefined {
    return this.bySlot.get(toSlot(slot));
  }

  /** The region backing `gpa`, or undefined when unbacked. */
  findRegion(gpa: Gpa): Region | undefined {
    if (typeof gpa !== 'bigint' || gpa < 0n || gpa > U64_MAX) toU64(gpa, 'GPA');
    const last = this.last;
    if (last !== undefined && gpa >= last.gpa && gpa < last.end) return last;
    const sorted = this.sorted;
    let lo = 0;
    let hi = sorted.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = sorted[mid]!;
      if (gpa < r.gpa) hi = mid - 1;
      else if (gpa >= r.end) lo = mid + 1;
      else {
        this.last = r;
        return r;
      }
    }
    return undefined;
  }

  /** @internal findRegion for a GPA held as a number (exact below 2^53): the page-table walker's fast path. */
  regionAtNum(gpa: number): Region | undefined {
    const last = this.last;
    if (last !== undefined && gpa >= last.gpaNum && gpa < last.endNum) return last;
    const sorted = this.sorted;
    let lo = 0;
    let hi = sorted.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = sorted[mid]!;
      // Regions above 2^53 have NaN bounds and sort last: treat them as above any number GPA.
      if (Number.isNaN(r.gpaNum) || gpa < r.gpaNum) hi = mid - 1;
      else if (gpa >= r.endNum) lo = mid + 1;
      else {
        this.last = r;
        return r;
      }
    }
    return undefined;
  }

  /** All regions, sorted by GPA. */
  regions(): readonly Region[] {
    return this.sorted;
  }

  /** Copies `length` bytes at `gpa` (may span adjacent regions); UNBACKED if any byte is unbacked, then nothing is read. */
  read(gpa: Gpa, length: number): Uint8Array {
    toU64(gpa, 'GPA');
    toCount(length, 'read length');
    if (length === 0) return new Uint8Array(0);
    // Backed first: the copy is only allocated for bytes that exist.
    const segs = this.segments(gpa, length, 'read');
    const out = new Uint8Array(length);
    let o = 0;
    for (let i = 0; i < segs.length; i += 3) {
      const r = this.sorted[segs[i]!]!;
      const off = segs[i + 1]!;
      const n = segs[i + 2]!;
      out.set(r.backing.subarray(off, off + n), o);
      o += n;
    }
    return out;
  }

  /** Writes `data` at `gpa` (may span adjacent regions); UNBACKED if any byte is unbacked, then nothing is written. */
  write(gpa: Gpa, data: Uint8Array): void {
    toU64(gpa, 'GPA');
    if (!(data instanceof Uint8Array)) throw new TypeError('data must be a Uint8Array');
    if (data.length === 0) return;
    const segs = this.segments(gpa, data.length, 'write');
    let o = 0;
    for (let i = 0; i < segs.length; i += 3) {
      const r = this.sorted[segs[i]!]!;
      const off = segs[i + 1]!;
      const n = segs[i + 2]!;
      r.backing.set(data.subarray(o, o + n), off);
      o += n;
    }
  }

  /** Reads one byte. */
  readU8(gpa: Gpa): number {
    const r = this.last;
    if (r !== undefined && typeof gpa === 'bigint') {
      const n = Number(gpa);
      if (n >= r.gpaNum && n < r.endNum) return r.backing[n - r.gpaNum]!;
    }
    return this.slowRegion(gpa, 1, 'read').view.getUint8(this.scratchOff);
  }

  /** Reads a little-endian u16. */
  readU16(gpa: Gpa): number {
    const r = this.last;
    if (r !== undefined && typeof gpa === 'bigint') {
      const n = Number(gpa);
      if (n >= r.gpaNum && n <= r.last2Num) return r.view.getUint16(n - r.gpaNum, true);
    }
    return this.slowRegion(gpa, 2, 'read').view.getUint16(this.scratchOff, true);
  }

  /** Reads a little-endian u32. */
  readU32(gpa: Gpa): number {
    const r = this.last;
    if (r !== undefined && typeof gpa === 'bigint') {
      const n = Number(gpa);
      if (n >= r.gpaNum && n <= r.last4Num) return r.view.getUint32(n - r.gpaNum, true);
    }
    return this.slowRegion(gpa, 4, 'read').view.getUint32(this.scratchOff, true);
  }

  /** Reads a little-endian u64. */
  readU64(gpa: Gpa): bigint {
    const r = this.last;
    if (r !== undefined && typeof gpa === 'bigint') {
      const n = Number(gpa);
      if (n >= r.gpaNum && n <= r.last8Num) return r.view.getBigUint64(n - r.gpaNum, true);
    }
    return this.slowRegion(gpa, 8, 'read').view.getBigUint64(this.scratchOff, true);
  }

  /** Writes one byte (0–255). */
  writeU8(gpa: Gpa, v: number): void {
    checkUint(v, 8);
    const r = this.last;
    if (r !== undefined && typeof gpa === 'bigint') {
      const n = Number(gpa);
      if (n >= r.gpaNum && n < r.endNum) {
        r.backing[n - r.gpaNum] = v;
        return;
      }
    }
    this.slowWrite(gpa, 1, (view, off) => view.setUint8(off, v));
  }

  /** Writes a little-endian u16 (0–0xffff). */
  writeU16(gpa: Gpa, v: number): void {
    checkUint(v, 16);
    const r = this.last;
    if (r !== undefined && typeof gpa === 'bigint') {
      const n = Number(gpa);
      if (n >= r.gpaNum && n <= r.last2Num) {
        r.view.setUint16(n - r.gpaNum, v, true);
        return;
      }
    }
    this.slowWrite(gpa, 2, (view, off) => view.setUint16(off, v, true));
  }

  /** Writes a little-endian u32 (0–0xffffffff). */
  writeU32(gpa: Gpa, v: number): void {
    checkUint(v, 32);
    const r = this.last;
    if (r !== undefined && typeof gpa === 'bigint') {
      const n = Number(gpa);
      if (n >= r.gpaNum && n <= r.last4Num) {
        r.view.setUint32(n - r.gpaNum, v, true);
        return;
      }
    }
    this.slowWrite(gpa, 4, (view, off) => view.setUint32(off, v, true));
  }

  /** Writes a little-endian u64 (0–2^64−1). */
  writeU64(gpa: Gpa, v: bigint): void {
    if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) toU64(v, 'u64 value');
    const r = this.last;
    if (r !== undefined && typeof gpa === 'bigint') {
      const n = Number(gpa);
      if (n >= r.gpaNum && n <= r.last8Num) {
        r.view.setBigUint64(n - r.gpaNum, v, true);
        return;
      }
    }
    this.slowWrite(gpa, 8, (view, off) => view.setBigUint64(off, v, true));
  }

  /** Comma-separated GPA ranges of the memslots, for messages. */
  describeSlots(): string {
    if (this.sorted.length === 0) return 'no memslots';
    const parts = this.sorted.slice(0, MAX_SLOT_LIST).map((r) => `${hex(r.gpa)}–${hex(r.end - 1n)}`);
    if (this.sorted.length > MAX_SLOT_LIST) parts.push(`… ${this.sorted.length - MAX_SLOT_LIST} more`);
    return `slots: ${parts.join(', ')}`;
  }

  private slotIds(): string {
    return this.sorted.length === 0 ? 'none' : this.sorted.map((r) => r.slot).join(', ');
  }

  /** @internal the error for an access of `length` bytes at `gpa` whose byte `bad` is unbacked. */
  unbacked(op: string, gpa: bigint, length: number, bad: bigint): GuestMemoryError {
    const access = length > 1 ? ` (${op} of ${length} bytes at GPA ${hex(gpa)})` : '';
    return new GuestMemoryError(
      GUEST_MEMORY_ERROR.UNBACKED,
      `GPA ${hex(bad)} is not backed by any memslot (${this.describeSlots()})${access}`,
      { gpa: bad, start: gpa, length, op },
    );
  }

  // Offset of the last slow-path access inside the region returned by slowRegion, or inside
  // `scratch` when the access spans two regions.
  private scratchOff = 0;
  private readonly scratch = new DataView(new ArrayBuffer(8));
  private readonly scratchRegion = { view: this.scratch };

  private slowRegion(gpa: bigint, n: number, op: string): { view: DataView } {
    toU64(gpa, 'GPA');
    const r = this.findRegion(gpa);
    if (r !== undefined && gpa + BigInt(n) <= r.end) {
      this.scratchOff = Number(gpa - r.gpa);
      return r;
    }
    // The access spans a region boundary (or is unbacked: read() throws).
    const bytes = this.read2(gpa, n, op);
    new Uint8Array(this.scratch.buffer).set(bytes);
    this.scratchOff = 0;
    return this.scratchRegion;
  }

  private read2(gpa: bigint, n: number, op: string): Uint8Array {
    const out = new Uint8Array(n);
    const segs = this.segments(gpa, n, op);
    let o = 0;
    for (let i = 0; i < segs.length; i += 3) {
      const r = this.sorted[segs[i]!]!;
      out.set(r.backing.subarray(segs[i + 1]!, segs[i + 1]! + segs[i + 2]!), o);
      o += segs[i + 2]!;
    }
    return out;
  }

  private slowWrite(gpa: bigint, n: number, put: (view: DataView, off: number) => void): void {
    toU64(gpa, 'GPA');
    const r = this.findRegion(gpa);
    if (r !== undefined && gpa + BigInt(n) <= r.end) {
      put(r.view, Number(gpa - r.gpa));
      return;
    }
    this.segments(gpa, n, 'write'); // throws UNBACKED before anything is written
    put(this.scratch, 0);
    this.write(gpa, new Uint8Array(this.scratch.buffer, 0, n));
  }

  /**
   * Splits [gpa, gpa + length) into (regionIndex, offset, count) triples over adjacent regions;
   * throws UNBACKED naming the first unbacked byte.
   */
  private segments(gpa: bigint, length: number, op: string): number[] {
    const end = gpa + BigInt(length);
    const out: number[] = [];
    let pos = gpa;
    let idx = -1;
    while (pos < end) {
      let r: Region | undefined;
      if (idx >= 0 && this.sorted[idx + 1]?.gpa === pos) {
        idx++;
        r = this.sorted[idx];
      } else {
        r = this.findRegion(pos);
        idx = r ? this.sorted.indexOf(r) : -1;
      }
      if (!r || pos > U64_MAX) throw this.unbacked(op, gpa, length, pos);
      const segEnd = end < r.end ? end : r.end;
      out.push(idx, Number(pos - r.gpa), Number(segEnd - pos));
      pos = segEnd;
    }
    return out;
  }

  /** Index of the first region whose gpa ≥ `gpa`. */
  private lowerBound(gpa: bigint): number {
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.sorted[mid]!.gpa < gpa) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

function checkUint(v: number, bits: 8 | 16 | 32): void {
  if (typeof v === 'number' && v >= 0 && v <= 2 ** bits - 1 && Number.isInteger(v)) return;
  if (typeof v !== 'number') throw new TypeError(`u${bits} value must be a number, got ${typeof v}`);
  throw new RangeError(`u${bits} value ${v} must be an integer in 0–${hex(2 ** bits - 1)}`);
}
