// Memslots, guest_memfd files and the memory-attribute map of one VM.

import type { ArchMemslot } from './arch/ops.js';

/** 4 KiB, the only page size of the memslot and attribute rules. */
export const PAGE = 4096n;
/** PAGE as a number, for host buffer sizes. */
const PAGE_BYTES = 4096;

/** A guest_memfd file (virt/kvm/guest_memfd.c): private memory the host cannot map. */
export class GmemFile {
  /** Allocated pages by page index (allocated on first access, zeroed, like a fresh folio). */
  readonly pages = new Map<number, Uint8Array>();
  /** Slots bound to this file: [first page, end page) of the file. */
  readonly bindings = new Set<Memslot>();
  released = false;

  constructor(
    readonly fd: number,
    readonly owner: object,
    readonly size: bigint,
    readonly flags: bigint,
  ) {}

  /** The page at `index`, allocated if `allocate` (guest faults allocate; lookups do not). */
  page(index: number, allocate: boolean): Uint8Array | undefined {
    let p = this.pages.get(index);
    if (p === undefined && allocate) {
      p = new Uint8Array(PAGE_BYTES);
      this.pages.set(index, p);
    }
    return p;
  }

  /** kvm_gmem_allocate(): pages [first, end) get backing now (zeroed, like a fresh folio). */
  allocate(first: number, end: number): void {
    for (let i = first; i < end; i++) this.page(i, true);
  }

  /** kvm_gmem_punch_hole(): pages [first, end) lose their backing; a later fault finds a zeroed page. */
  punchHole(first: number, end: number): void {
    if (end - first > this.pages.size) {
      for (const i of [...this.pages.keys()]) if (i >= first && i < end) this.pages.delete(i);
    } else for (let i = first; i < end; i++) this.pages.delete(i);
  }

  /** kvm_gmem_bind overlap test: any existing binding intersecting [start, end) (in file pages). */
  overlaps(start: bigint, end: bigint): boolean {
    for (const s of this.bindings) {
      const bs = s.gmemOffset / PAGE;
      const be = bs + s.npages;
      if (start < be && bs < end) return true;
    }
    return false;
  }

  get bytes(): number {
    return this.pages.size * PAGE_BYTES;
  }
}

/** One memslot (`struct kvm_memory_slot`). */
export class Memslot implements ArchMemslot {
  readonly end: bigint;
  readonly npages: bigint;
  gmem: GmemFile | undefined;

  constructor(
    readonly asId: number,
    readonly id: number,
    readonly flags: number,
    readonly gpa: bigint,
    readonly size: bigint,
    readonly userspace: Uint8Array,
    gmem: GmemFile | undefined,
    readonly gmemOffset: bigint,
  ) {
    this.end = gpa + size;
    this.npages = size / PAGE;
    this.gmem = gmem;
  }

  get hasGmem(): boolean {
    return this.gmem !== undefined;
  }
}

/** The memory-attribute xarray as a sorted list of disjoint page ranges with non-zero attributes. */
export class AttributeMap {
  // Parallel arrays of [start, end) page numbers and their attribute.
  private starts: bigint[] = [];
  private ends: bigint[] = [];
  private attrs: bigint[] = [];

  /** Attributes of page `pfn` (0 when never set). */
  get(pfn: bigint): bigint {
    const i = this.find(pfn);
    return i >= 0 ? this.attrs[i]! : 0n;
  }

  get empty(): boolean {
    return this.starts.length === 0;
  }

  /** Index of the range containing `pfn`, or -1. */
  private find(pfn: bigint): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (pfn < this.starts[mid]!) hi = mid - 1;
      else if (pfn >= this.ends[mid]!) lo = mid + 1;
      else return mid;
    }
    return -1;
  }

  /** Sets pages [start, end) to `attr` (0 clears). */
  set(start: bigint, end: bigint, attr: bigint): void {
    const s: bigint[] = [];
    const e: bigint[] = [];
    const a: bigint[] = [];
    const push = (rs: bigint, re: bigint, ra: bigint) => {
      if (rs >= re || ra === 0n) return;
      const n = s.length - 1;
      if (n >= 0 && e[n] === rs && a[n] === ra) e[n] = re;
      else {
        s.push(rs);
        e.push(re);
        a.push(ra);
      }
    };
    let inserted = false;
    for (let i = 0; i < this.starts.length; i++) {
      const rs = this.starts[i]!;
      const re = this.ends[i]!;
      const ra = this.attrs[i]!;
      if (re <= start) {
        push(rs, re, ra);
        continue;
      }
      if (!inserted && rs >= start) {
        push(start, end, attr);
        inserted = true;
      }
      if (rs < start) {
        push(rs, start, ra);
        if (!inserted) {
          push(start, end, attr);
          inserted = true;
        }
      }
      if (re > end) push(end > rs ? end : rs, re, ra);
    }
    if (!inserted) push(start, end, attr);
    this.starts = s;
    this.ends = e;
    this.attrs = a;
  }

  /** True when every page of [start, end) already has exactly `attr` (kvm_range_has_memory_attributes). */
  uniform(start: bigint, end: bigint, attr: bigint): boolean {
    let p = start;
    while (p < end) {
      const i = this.find(p);
      if (i < 0) {
        if (attr !== 0n) return false;
        // Skip to the next stored range.
        let next = end;
        for (const st of this.starts)
          if (st > p) {
            next = st < end ? st : end;
            break;
          }
        p = next;
      } else {
        if (this.attrs[i] !== attr) return false;
        p = this.ends[i]!;
      }
    }
    return true;
  }
}
