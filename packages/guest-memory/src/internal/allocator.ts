// Physical page allocator over the per-region bitmaps (selftests' __vm_phy_pages_alloc):
// n contiguous free pages at or above a minimum GPA in one memslot, optionally marked protected.

import { PAGE_SHIFT, PAGE_SIZE } from './constants.js';
import { describe, GUEST_MEMORY_ERROR, GuestMemoryError, hex, toCount, toSlot, toU64 } from './errors.js';
import { PhysicalMemory, type Region } from './physical.js';
import type { Gpa } from './address.js';

/** Options of PageAllocator.alloc: memslot, page count (default 1), lowest GPA, protected (private) or not. */
export interface AllocOptions {
  slot: number;
  pages?: number;
  minGpa?: Gpa;
  protected?: boolean;
}

const SHIFT = BigInt(PAGE_SHIFT);

/** Physical page allocator: hands out runs of free 4 KiB pages per memslot and tracks protected pages. */
export class PageAllocator {
  readonly memory: PhysicalMemory;

  constructor(memory: PhysicalMemory) {
    if (!(memory instanceof PhysicalMemory))
      throw new TypeError(`PageAllocator needs a PhysicalMemory, got ${describe(memory)}`);
    this.memory = memory;
  }

  /** Allocates `pages` contiguous free pages at/above `minGpa` in `slot`; returns the first GPA; OUT_OF_PAGES when none fit. */
  alloc(opts: AllocOptions): Gpa {
    if (typeof opts !== 'object' || opts === null)
      throw new TypeError(`alloc options must be an object, got ${describe(opts)}`);
    const slot = toSlot(opts.slot);
    const pages = opts.pages === undefined ? 1 : toCount(opts.pages, 'page count', 1);
    const minGpa = opts.minGpa === undefined ? 0n : toU64(opts.minGpa, 'minimum GPA');
    const region = this.regionOf(slot);
    const min = Number(minGpa);
    // Number arithmetic when exact (the common case), bigint otherwise.
    const exact = min <= Number.MAX_SAFE_INTEGER && !Number.isNaN(region.endNum);
    if (exact ? min % PAGE_SIZE !== 0 : minGpa & 0xfffn)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.UNALIGNED,
        `minimum GPA ${hex(minGpa)} is not aligned to the 4 KiB page size`,
        { minGpa },
      );
    const minPage = exact
      ? min <= region.gpaNum
        ? 0
        : min >= region.endNum
          ? region.pages
          : (min - region.gpaNum) / PAGE_SIZE
      : minGpa <= region.gpa
        ? 0
        : minGpa >= region.end
          ? region.pages
          : Number((minGpa - region.gpa) >> SHIFT);
    const from = region.cursors.get(minPage) ?? minPage;
    const start = from >= region.pages ? -1 : region.used.findClearRun(from, pages);
    if (start < 0) {
      const { clear, longestRun } = region.used.clearStats(Math.min(minPage, region.pages));
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.OUT_OF_PAGES,
        `cannot allocate ${pages} contiguous page(s) in memslot ${slot} at or above GPA ${hex(minGpa)}: ` +
          `${clear} free page(s) left there (longest free run ${longestRun}) in ${region.describe()}`,
        { slot, pages, minGpa, freePages: clear, longestRun },
      );
    }
    region.used.fill(start, pages, true);
    if (opts.protected) region.protectedPages.fill(start, pages, true);
    // Advance the cursor over [from, first free page): with one page, everything before `start` is used.
    let cursor = start + pages;
    if (start !== from && pages !== 1) {
      const firstFree = region.used.findClearRun(from, 1);
      cursor = firstFree < 0 ? region.pages : firstFree;
    }
    region.cursors.set(minPage, cursor);
    return exact ? BigInt(region.gpaNum + start * PAGE_SIZE) : region.gpa + (BigInt(start) << SHIFT);
  }

  /** Frees `pages` (default 1) allocated pages at `gpa`; NOT_ALLOCATED (and nothing freed) if any is free or unbacked. */
  free(gpa: Gpa, pages = 1): void {
    toU64(gpa, 'GPA');
    toCount(pages, 'page count', 1);
    if (gpa & 0xfffn)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.UNALIGNED,
        `GPA ${hex(gpa)} to free is not aligned to the 4 KiB page size`,
        { gpa },
      );
    const region = this.memory.findRegion(gpa);
    const start = region ? Number((gpa - region.gpa) >> SHIFT) : 0;
    if (!region || start + pages > region.pages || !region.used.allSet(start, pages)) {
      let bad = gpa;
      if (region)
        for (let i = 0; i < pages; i++)
          if (start + i >= region.pages || !region.used.get(start + i)) {
            bad = gpa + (BigInt(i) << SHIFT);
            break;
          }
      const why =
        region && bad < region.end ? 'is not allocated (double free?)' : 'is not backed by the same memslot';
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.NOT_ALLOCATED,
        `cannot free ${pages} page(s) at GPA ${hex(gpa)}: page ${hex(bad)} ${region ? why : 'is not backed by any memslot'}`,
        { gpa, pages, page: bad },
      );
    }
    region.used.fill(start, pages, false);
    region.protectedPages.fill(start, pages, false);
    for (const [k, cursor] of region.cursors)
      if (start < cursor && start + pages > k) region.cursors.set(k, Math.max(k, start));
  }

  /** True when the page holding `gpa` is allocated as protected; false when unbacked. */
  isProtected(gpa: Gpa): boolean {
    const region = this.memory.findRegion(gpa);
    if (!region) return false;
    return region.protectedPages.get(Number((gpa - region.gpa) >> SHIFT));
  }

  /** Contiguous runs of protected allocated pages in `slot`, in GPA order (what a CoCo launch encrypts and measures). */
  protectedRanges(slot: number): Array<{ gpa: Gpa; pages: number }> {
    const region = this.regionOf(toSlot(slot));
    return region.protectedPages
      .setRuns()
      .map((r) => ({ gpa: region.gpa + (BigInt(r.start) << SHIFT), pages: r.length }));
  }

  private regionOf(slot: number): Region {
    const region = this.memory.getRegion(slot);
    if (!region)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.NO_SUCH_SLOT,
        `memslot ${slot} does not exist (${this.memory.describeSlots()})`,
        { slot },
      );
    return region;
  }
}
