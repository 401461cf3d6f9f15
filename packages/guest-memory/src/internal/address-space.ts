// A guest address space as the selftests library builds it: physical memory + physical page
// allocator + page tables + GVA allocator, with the confidential-computing tag policy deciding
// which leaf PTEs carry the tag bit (selftests' __virt_pg_map: only leaves are tagged).

import { PageAllocator } from './allocator.js';
import {
  KVM_GUEST_PAGE_TABLE_MIN_PADDR,
  KVM_UTIL_MIN_PFN,
  KVM_UTIL_MIN_VADDR,
  PAGE_SIZE,
  PAGE_SIZE_1G,
  PAGE_SIZE_2M,
  PAGE_SIZE_4K,
} from './constants.js';
import { describe, GUEST_MEMORY_ERROR, GuestMemoryError, hex, toSlot, toU64, U64_MAX } from './errors.js';
import { type MapFlags, type PageSize, PageTables } from './paging.js';
import { PhysicalMemory } from './physical.js';
import type { Gpa, Gva } from './address.js';

/** Whether guest memory is private (encrypted / protected) or shared with the host. */
export type Visibility = 'private' | 'shared';

/** Which leaf PTEs carry the tag bit: SEV `{ bit: cbit, setWhen: 'private' }`, TDX `{ bit: gpaw - 1, setWhen: 'shared' }`. */
export interface TagPolicy {
  bit: number;
  setWhen: Visibility;
}

/** Options of AddressSpace: memory, paging mode, tag policy, CoCo default, memslot per region type and the selftests' minimum addresses. */
export interface AddressSpaceOptions {
  memory: PhysicalMemory;
  levels?: 4 | 5;
  physBits?: number;
  tag?: TagPolicy;
  /** CoCo VMs: allocations are private unless asked shared. */
  protectedByDefault?: boolean;
  /** Memslot per region type (selftests' memslots[]); all default to 0. */
  slots?: { code?: number; data?: number; pageTables?: number };
  /** Lowest GPA of page-table pages (default 0x180000, KVM_GUEST_PAGE_TABLE_MIN_PADDR). */
  pageTableMinGpa?: Gpa;
  /** Lowest GPA of data pages (default 0x2000, KVM_UTIL_MIN_PFN pages). */
  physMinGpa?: Gpa;
  /** Lowest GVA handed out (default 0x2000, KVM_UTIL_MIN_VADDR). */
  minGva?: Gva;
}

/** Options of AddressSpace.vaddrAlloc (defaults: the space's minGva, its default visibility, the data slot, writable, executable). */
export interface VaddrAllocOptions {
  minGva?: Gva;
  visibility?: Visibility;
  slot?: number;
  writable?: boolean;
  nx?: boolean;
}

/**
 * Flags of AddressSpace.mapRange: leaf permissions, leaf size, and visibility (default: private iff
 * the page is protected) which decides the tag bit; an explicit `tagged` overrides the policy.
 */
export interface MapRangeFlags extends MapFlags {
  visibility?: Visibility;
  pageSize?: PageSize;
}

interface Interval {
  start: bigint;
  end: bigint;
}

const PAGE = BigInt(PAGE_SIZE);

/** Rounds up to a page boundary. */
function alignUp(v: bigint): bigint {
  return (v + PAGE - 1n) & ~(PAGE - 1n);
}

// 512 pages (2 KiB of counts) per chunk: a VM's few allocations in distinct 2 MiB GVA ranges each
// allocate and zero one small chunk instead of 16 KiB.
const CHUNK_PAGES = 512;
/** Pages indexed by the chunk table: their GVAs are below 2^53, so `Number(gva)` is exact. */
const INDEXED_PAGES = 2 ** 41;

/**
 * Page counts by start GVA: a sparse two-level table of Uint32Arrays indexed by page number for
 * GVAs below 2^53 (a Map entry per allocation costs more than the allocation itself), a Map by
 * decimal string for the rest.
 */
class AllocationIndex {
  private readonly chunks = new Map<number, Uint32Array>();
  private readonly other = new Map<string, number>();

  set(gva: bigint, pages: number): void {
    const page = Number(gva) / PAGE_SIZE;
    if (page < INDEXED_PAGES && pages <= 0xffff_ffff) {
      const c = Math.floor(page / CHUNK_PAGES);
      let chunk = this.chunks.get(c);
      if (chunk === undefined) {
        chunk = new Uint32Array(CHUNK_PAGES);
        this.chunks.set(c, chunk);
      }
      chunk[page % CHUNK_PAGES] = pages;
    } else this.other.set(gva.toString(), pages);
  }

  get(gva: bigint): number | undefined {
    const page = Number(gva) / PAGE_SIZE;
    if (page < INDEXED_PAGES && Number.isInteger(page)) {
      const n = this.chunks.get(Math.floor(page / CHUNK_PAGES))?.[page % CHUNK_PAGES];
      if (n) return n;
    }
    return this.other.get(gva.toString());
  }

  delete(gva: bigint): void {
    const page = Number(gva) / PAGE_SIZE;
    const chunk = this.chunks.get(Math.floor(page / CHUNK_PAGES));
    if (chunk !== undefined && Number.isInteger(page)) chunk[page % CHUNK_PAGES] = 0;
    this.other.delete(gva.toString());
  }
}

/** A guest address space: physical memory, page allocator, page tables and GVA allocator under one tag policy. */
export class AddressSpace {
  readonly memory: PhysicalMemory;
  readonly allocator: PageAllocator;
  readonly pageTables: PageTables;
  readonly tag?: TagPolicy;
  readonly protectedByDefault: boolean;
  /** Memslot per region type. */
  readonly slots: { readonly code: number; readonly data: number; readonly pageTables: number };
  readonly pageTableMinGpa: Gpa;
  readonly physMinGpa: Gpa;
  readonly minGva: Gva;
  private readonly minGvaAligned: bigint;
  // Reserved GVA ranges (allocated, mapped by mapRange, or the non-canonical hole), sorted, disjoint, merged.
  private reserved: Interval[] = [];
  // Page count of each vaddrAlloc allocation by start GVA (the GPA is found again by a walk).
  private readonly allocations = new AllocationIndex();

  constructor(opts: AddressSpaceOptions) {
    if (typeof opts !== 'object' || opts === null)
      throw new TypeError('address space options must be an object');
    if (!(opts.memory instanceof PhysicalMemory))
      throw new TypeError(
        `address space options.memory must be a PhysicalMemory, got ${describe(opts.memory)}`,
      );
    this.memory = opts.memory;
    if (opts.tag !== undefined) {
      const { bit, setWhen } = opts.tag;
      if (setWhen !== 'private' && setWhen !== 'shared')
        throw new RangeError(`tag policy setWhen ${String(setWhen)} must be 'private' or 'shared'`);
      this.tag = Object.freeze({ bit, setWhen });
    }
    this.protectedByDefault = opts.protectedByDefault === true;
    this.slots = Object.freeze({
      code: toSlot(opts.slots?.code ?? 0),
      data: toSlot(opts.slots?.data ?? 0),
      pageTables: toSlot(opts.slots?.pageTables ?? 0),
    });
    this.pageTableMinGpa = toU64(
      opts.pageTableMinGpa ?? KVM_GUEST_PAGE_TABLE_MIN_PADDR,
      'page-table minimum GPA',
    );
    this.physMinGpa = toU64(opts.physMinGpa ?? BigInt(KVM_UTIL_MIN_PFN * PAGE_SIZE), 'data minimum GPA');
    this.minGva = toU64(opts.minGva ?? KVM_UTIL_MIN_VADDR, 'minimum GVA');
    this.minGvaAligned = alignUp(this.minGva);
    this.allocator = new PageAllocator(this.memory);
    const levels = opts.levels ?? 4;
    this.pageTables = new PageTables(
      this.memory,
      { levels, physBits: opts.physBits ?? 52, tagBit: this.tag?.bit },
      () => this.allocPageTable(),
    );
    const half = 1n << BigInt(levels === 5 ? 56 : 47);
    this.reserved.push({ start: half, end: U64_MAX + 1n - half });
  }

  /** Allocates, zeroes and returns one page-table page (selftests' vm_alloc_page_table: private on CoCo VMs). */
  allocPageTable(): Gpa {
    const gpa = this.allocator.alloc({
      slot: this.slots.pageTables,
      minGpa: this.pageTableMinGpa,
      protected: this.protectedByDefault,
    });
    const region = this.memory.findRegion(gpa)!;
    const off = region.offsetOf(gpa);
    region.backing.fill(0, off, off + PAGE_SIZE);
    return gpa;
  }

  /**
   * Allocates `size` bytes (rounded up to pages) of fresh physically contiguous pages, maps them at
   * the lowest free GVA ≥ minGva and returns it; private pages are marked protected and tagged per the policy.
   * Page contents are not cleared (fresh memory is zero; a reused page keeps its old bytes).
   */
  vaddrAlloc(size: bigint, opts: VaddrAllocOptions = {}): Gva {
    toU64(size, 'allocation size');
    if (typeof opts !== 'object' || opts === null)
      throw new TypeError(`vaddrAlloc options must be an object, got ${describe(opts)}`);
    if (size === 0n)
      throw new GuestMemoryError(GUEST_MEMORY_ERROR.ZERO_SIZE, 'vaddrAlloc of 0 bytes', { size });
    const sizeNum = Number(size);
    if (sizeNum > Number.MAX_SAFE_INTEGER - PAGE_SIZE)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.OUT_OF_VA,
        `vaddrAlloc of ${hex(size)} bytes is too large`,
        {
          size,
        },
      );
    const n = Math.ceil(sizeNum / PAGE_SIZE);
    const bytes = BigInt(n * PAGE_SIZE);
    const minGva =
      opts.minGva === undefined ? this.minGvaAligned : alignUp(toU64(opts.minGva, 'minimum GVA'));
    const visibility = this.visibilityOf(opts.visibility);
    const slot = opts.slot === undefined ? this.slots.data : toSlot(opts.slot);
    const isPrivate = visibility === 'private';
    const flags: MapFlags = {
      writable: opts.writable !== false,
      nx: opts.nx === true,
      tagged: this.tagged(isPrivate),
    };
    for (;;) {
      const gva = this.findGap(bytes, minGva);
      const gpa = this.allocator.alloc({ slot, pages: n, minGpa: this.physMinGpa, protected: isPrivate });
      let mapped = 0;
      try {
        this.pageTables.withUndo(
          () => {
            try {
              if (n === 1) {
                this.pageTables.map(gva, gpa, PAGE_SIZE_4K, flags);
                mapped = 1;
              } else
                for (; mapped < n; mapped++) {
                  const off = BigInt(mapped * PAGE_SIZE);
                  this.pageTables.map(gva + off, gpa + off, PAGE_SIZE_4K, flags);
                }
            } catch (e) {
              for (let i = 0; i < mapped; i++) this.pageTables.unmap(gva + BigInt(i * PAGE_SIZE));
              throw e;
            }
          },
          (page) => this.allocator.free(page),
        );
      } catch (e) {
        this.allocator.free(gpa, n);
        // A mapping made behind the allocator's back (PageTables.map): skip it and search again.
        if (e instanceof GuestMemoryError && e.code === GUEST_MEMORY_ERROR.ALREADY_MAPPED) {
          const start = e.details.existingGva as bigint;
          this.reserve(start, start + (e.details.existingPageSize as bigint));
          continue;
        }
        throw e;
      }
      this.reserve(gva, gva + bytes);
      this.allocations.set(gva, n);
      return gva;
    }
  }

  /** Frees an allocation made by vaddrAlloc (unmaps it, frees its pages, releases its GVAs); NOT_MAPPED otherwise. */
  vaddrFree(gva: Gva): void {
    toU64(gva, 'GVA');
    const pages = this.allocations.get(gva);
    if (pages === undefined)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.NOT_MAPPED,
        `GVA ${hex(gva)} is not the start of a vaddrAlloc allocation`,
        { gva },
      );
    const gpa = this.gvaToGpa(gva);
    for (let i = 0; i < pages; i++) this.pageTables.unmap(gva + BigInt(i * PAGE_SIZE));
    this.allocator.free(gpa, pages);
    this.release(gva, gva + BigInt(pages * PAGE_SIZE));
    this.allocations.delete(gva);
  }

  /** Maps [gva, gva+size) → [gpa, gpa+size) without allocating (selftests' virt_map); failures change nothing. */
  mapRange(gva: Gva, gpa: Gpa, size: bigint, flags: MapRangeFlags = {}): void {
    toU64(gva, 'GVA');
    toU64(gpa, 'GPA');
    toU64(size, 'size');
    if (typeof flags !== 'object' || flags === null)
      throw new TypeError(`mapRange flags must be an object, got ${describe(flags)}`);
    const pageSize = flags.pageSize ?? (PAGE as PageSize);
    if (pageSize !== PAGE && pageSize !== PAGE_SIZE_2M && pageSize !== PAGE_SIZE_1G)
      throw new TypeError(
        `mapRange flags.pageSize must be 4096n, 2097152n or 1073741824n, got ${describe(pageSize)}`,
      );
    if (size === 0n)
      throw new GuestMemoryError(GUEST_MEMORY_ERROR.ZERO_SIZE, 'mapRange of 0 bytes', { gva, gpa });
    if (size % pageSize !== 0n)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.UNALIGNED,
        `mapRange size ${hex(size)} is not a multiple of the page size ${hex(pageSize)}`,
        { size, pageSize },
      );
    if (gva + size - 1n > U64_MAX || gpa + size - 1n > U64_MAX)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.BAD_ADDRESS,
        `mapRange of ${hex(size)} bytes at GVA ${hex(gva)} → GPA ${hex(gpa)} wraps past 2^64`,
        { gva, gpa, size },
      );
    const visibility = flags.visibility === undefined ? undefined : this.visibilityOf(flags.visibility);
    const mapFlags: MapFlags = { writable: flags.writable !== false, user: flags.user, nx: flags.nx };
    let done = 0n;
    // withUndo: table pages allocated on the way are unlinked and freed if a later page fails.
    this.pageTables.withUndo(
      () => {
        try {
          for (; done < size; done += pageSize) {
            const p = gpa + done;
            const isPrivate =
              visibility === undefined ? this.allocator.isProtected(p) : visibility === 'private';
            mapFlags.tagged = flags.tagged ?? this.tagged(isPrivate);
            this.pageTables.map(gva + done, p, pageSize, mapFlags);
          }
        } catch (e) {
          for (let off = 0n; off < done; off += pageSize) this.pageTables.unmap(gva + off);
          throw e;
        }
      },
      (page) => this.allocator.free(page),
    );
    this.reserve(gva, gva + size);
  }

  /** The GPA (untagged) that `gva` maps to; NOT_MAPPED when the walk faults. */
  gvaToGpa(gva: Gva): Gpa {
    const r = this.pageTables.walk(gva);
    if (r.ok) return r.gpa;
    throw new GuestMemoryError(
      GUEST_MEMORY_ERROR.NOT_MAPPED,
      `GVA ${hex(gva)} is not mapped (${r.fault.reason} at level ${r.fault.level})`,
      { gva, reason: r.fault.reason, level: r.fault.level },
    );
  }

  /** True when the page holding `gpa` was allocated private (protected). */
  isPrivate(gpa: Gpa): boolean {
    return this.allocator.isProtected(gpa);
  }

  /** Whether a leaf for memory of this visibility carries the tag bit. */
  private tagged(isPrivate: boolean): boolean {
    return this.tag !== undefined && (this.tag.setWhen === 'private') === isPrivate;
  }

  private visibilityOf(v: unknown): Visibility {
    if (v === undefined) return this.protectedByDefault ? 'private' : 'shared';
    if (v !== 'private' && v !== 'shared')
      throw new RangeError(`visibility ${String(v)} must be 'private' or 'shared'`);
    return v;
  }

  /** Lowest page-aligned GVA ≥ min with [gva, gva+bytes) free of reservations. */
  private findGap(bytes: bigint, min: bigint): bigint {
    const list = this.reserved;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid]!.end <= min) lo = mid + 1;
      else hi = mid;
    }
    let start = min;
    for (let i = lo; i < list.length; i++) {
      const iv = list[i]!;
      if (start + bytes <= iv.start) return start;
      if (iv.end > start) start = iv.end;
    }
    if (start + bytes - 1n <= U64_MAX) return start;
    throw new GuestMemoryError(
      GUEST_MEMORY_ERROR.OUT_OF_VA,
      `no unused GVA gap of ${hex(bytes)} bytes at or above ${hex(min)}`,
      { bytes, minGva: min },
    );
  }

  /** Adds [start, end) to the reserved set, merging with overlapping or touching ranges. */
  private reserve(start: bigint, end: bigint): void {
    const list = this.reserved;
    let i = 0;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid]!.end < start) lo = mid + 1;
      else hi = mid;
    }
    i = lo;
    let j = i;
    while (j < list.length && list[j]!.start <= end) {
      if (list[j]!.start < start) start = list[j]!.start;
      if (list[j]!.end > end) end = list[j]!.end;
      j++;
    }
    if (j === i + 1) {
      const iv = list[i]!;
      iv.start = start;
      iv.end = end;
    } else list.splice(i, j - i, { start, end });
  }

  /** Removes [start, end) from the reserved set. */
  private release(start: bigint, end: bigint): void {
    const next: Interval[] = [];
    for (const iv of this.reserved) {
      if (iv.end <= start || iv.start >= end) next.push(iv);
      else {
        if (iv.start < start) next.push({ start: iv.start, end: start });
        if (iv.end > end) next.push({ start: end, end: iv.end });
      }
    }
    this.reserved = next;
  }
}
