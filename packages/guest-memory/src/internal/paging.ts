// x86-64 4- and 5-level paging in the architectural PTE format, written into guest memory, and
// the walk a CPU performs over it. The walk runs on 32-bit halves held as numbers (no bigint
// arithmetic per level); when the reader is a plain PhysicalMemory it reads the halves straight
// from the region's DataView.

import { PAGE_SIZE_1G, PAGE_SIZE_2M, PAGE_SIZE_4K } from './constants.js';
import { describe, GUEST_MEMORY_ERROR, GuestMemoryError, hex, toU64, U64_MAX } from './errors.js';
import { PhysicalMemory, type PhysReader, type PhysWriter, type Region } from './physical.js';
import type { Gpa, Gva } from './address.js';

/** x86-64 page-table entry bits. */
export const PTE = {
  PRESENT: 1n << 0n,
  WRITABLE: 1n << 1n,
  USER: 1n << 2n,
  PWT: 1n << 3n,
  PCD: 1n << 4n,
  ACCESSED: 1n << 5n,
  DIRTY: 1n << 6n,
  PS: 1n << 7n,
  GLOBAL: 1n << 8n,
  NX: 1n << 63n,
} as const;

/** Size of a leaf mapping: 4 KiB (PTE), 2 MiB (PDE with PS) or 1 GiB (PDPTE with PS). */
export type PageSize = 4096n | 2097152n | 1073741824n;

/** Leaf permissions for PageTables.map: writable (default true), user, no-execute, and the tag bit. */
export interface MapFlags {
  writable?: boolean;
  user?: boolean;
  nx?: boolean;
  /** Set PagingParams.tagBit in the leaf entry (C-bit for private SEV pages, S-bit for shared TDX pages). */
  tagged?: boolean;
}

/** Paging mode: levels (48- or 57-bit GVAs), MAXPHYADDR (default 52) and the optional tag bit position. */
export interface PagingParams {
  levels: 4 | 5;
  physBits?: number;
  tagBit?: number;
}

/** The access a walk checks permissions for (supervisor read when empty); `withPtes` also returns the entries read. */
export type AccessKind = { write?: boolean; user?: boolean; fetch?: boolean; withPtes?: boolean };

/** Why and where a walk faulted; `errorCode` is the architectural #PF error code (P=1, W=2, U=4, RSVD=8, I/D=16). */
export interface WalkFault {
  /** Level of the entry that faulted (1 = PTE … 5 = PML5E); the top level for a non-canonical GVA. */
  level: number;
  /** `non-canonical` is a #GP on a CPU, not a #PF; its errorCode is 0. */
  reason: 'not-present' | 'reserved-bit' | 'protection' | 'non-canonical';
  errorCode: number;
  gva: Gva;
}

/**
 * Outcome of a page walk. On success `gpa` is untagged; `writable`/`user`/`nx` are the effective
 * permissions (AND of W and U, OR of NX over all levels); `ptes` holds the entries read from the
 * top level down when the access asked `withPtes`, else it is a shared, frozen empty array.
 */
export type WalkResult =
  | {
      ok: true;
      gpa: Gpa;
      pageSize: PageSize;
      writable: boolean;
      user: boolean;
      nx: boolean;
      tagged: boolean;
      leafLevel: number;
      ptes: bigint[];
    }
  | { ok: false; fault: WalkFault };

const PF_P = 1;
const PF_W = 2;
const PF_U = 4;
const PF_RSVD = 8;
const PF_ID = 16;
const TWO32 = 4294967296;
const TWO53 = 2 ** 53;
const PS_BIT = 0x80;

/** @internal the paging parameters turned into 32-bit masks. */
interface Mode {
  levels: 4 | 5;
  physBits: number;
  tagBit: number | undefined;
  tagMask: bigint;
  /** hi >>> canonShift must be 0 or canonAll for a canonical GVA. */
  canonShift: number;
  canonAll: number;
  vaBits: number;
  /** Address bits of an entry, low and high word, tag bit excluded. */
  addrLo: number;
  addrHi: number;
  /** Reserved physical-address bits (≥ physBits, < 52) in the high word, tag bit excluded. */
  rsvdHi: number;
  tagLo: number;
  tagHi: number;
  /** All valid address bits below 2^physBits, as a bigint. */
  physLimit: bigint;
}

const modes = new WeakMap<PagingParams, Mode>();

function modeOf(params: PagingParams): Mode {
  let m = modes.get(params);
  if (m === undefined) {
    m = makeMode(params);
    modes.set(params, m);
  }
  return m;
}

function makeMode(params: PagingParams): Mode {
  if (typeof params !== 'object' || params === null) throw new TypeError('paging params must be an object');
  const { levels } = params;
  if (levels !== 4 && levels !== 5) throw new RangeError(`paging levels ${String(levels)} must be 4 or 5`);
  const physBits = params.physBits ?? 52;
  if (typeof physBits !== 'number' || !Number.isInteger(physBits) || physBits < 32 || physBits > 52)
    throw new RangeError(`physBits ${String(physBits)} must be an integer in 32–52 (MAXPHYADDR)`);
  const tagBit = params.tagBit;
  if (
    tagBit !== undefined &&
    (typeof tagBit !== 'number' || !Number.isInteger(tagBit) || tagBit < 12 || tagBit > 62)
  )
    throw new RangeError(
      `tag bit ${String(tagBit)} must be an integer in 12–62 (an address or ignored PTE bit)`,
    );
  const tagLo = tagBit !== undefined && tagBit < 32 ? (1 << tagBit) >>> 0 : 0;
  const tagHi = tagBit !== undefined && tagBit >= 32 ? (2 ** (tagBit - 32)) >>> 0 : 0;
  const hiAddrBits = physBits - 32; // address bits in the high word: 0 … hiAddrBits-1
  const addrHiAll = hiAddrBits >= 32 ? 0xffff_ffff : (2 ** hiAddrBits - 1) >>> 0;
  const vaBits = levels === 5 ? 57 : 48;
  return {
    levels,
    physBits,
    tagBit,
    tagMask: tagBit === undefined ? 0n : 1n << BigInt(tagBit),
    canonShift: vaBits - 1 - 32,
    canonAll: (2 ** (64 - (vaBits - 1)) - 1) >>> 0,
    vaBits,
    addrLo: (0xffff_f000 & ~tagLo) >>> 0,
    addrHi: (addrHiAll & ~tagHi) >>> 0,
    rsvdHi: (0xf_ffff & ~addrHiAll & ~tagHi) >>> 0,
    tagLo,
    tagHi,
    physLimit: 1n << BigInt(physBits),
  };
}

function indexAt(level: number, lo: number, hi: number): number {
  switch (level) {
    case 1:
      return (lo >>> 12) & 511;
    case 2:
      return (lo >>> 21) & 511;
    case 3:
      return ((lo >>> 30) | (hi << 2)) & 511;
    case 4:
      return (hi >>> 7) & 511;
    default:
      return (hi >>> 16) & 511;
  }
}

function fault(level: number, reason: WalkFault['reason'], errorCode: number, gva: bigint): WalkResult {
  return { ok: false, fault: { level, reason, errorCode, gva } };
}

function isCanonical(hi: number, m: Mode): boolean {
  const top = hi >>> m.canonShift;
  return top === 0 || top === m.canonAll;
}

const NO_PAGES: bigint[] = [];

// Returned as `ptes` when the access did not ask for them: shared, so frozen.
const NO_PTES = Object.freeze([]) as unknown as bigint[];

/** @internal `reader` itself when it is a plain PhysicalMemory, whose regions the walk may read directly. */
function plainMemory(reader: PhysReader): PhysicalMemory | undefined {
  return Object.getPrototypeOf(reader) === PhysicalMemory.prototype ? (reader as PhysicalMemory) : undefined;
}

/** @internal the walk, with the mode precomputed and the root as a number. */
function walkMode(
  reader: PhysReader,
  mem: PhysicalMemory | undefined,
  root: number,
  gva: bigint,
  m: Mode,
  access?: AccessKind,
): WalkResult {
  if (typeof gva !== 'bigint') toU64(gva, 'GVA');
  let lo: number;
  let hi: number;
  const n = Number(gva);
  if (n >= 0 && n < TWO53) {
    // Exact as a number (every lower-half GVA): split without bigint arithmetic.
    lo = n >>> 0;
    hi = (n - lo) / TWO32;
  } else {
    toU64(gva, 'GVA');
    lo = Number(gva & 0xffff_ffffn);
    hi = Number(gva >> 32n);
  }
  let accessCode = 0;
  let withPtes = false;
  if (access !== undefined) {
    if (access.write) accessCode |= PF_W;
    if (access.user) accessCode |= PF_U;
    if (access.fetch) accessCode |= PF_ID;
    withPtes = access.withPtes === true;
  }
  if (!isCanonical(hi, m)) return fault(m.levels, 'non-canonical', 0, gva);
  const ptes: bigint[] = withPtes ? [] : NO_PTES;
  let r: Region | undefined;
  let table = root;
  let w = 1;
  let u = 1;
  let nx = 0;
  for (let level: number = m.levels; level >= 1; level--) {
    const ea = table + indexAt(level, lo, hi) * 8;
    let plo: number;
    let phi: number;
    if (mem !== undefined && (r === undefined || !(ea >= r.gpaNum && ea + 8 <= r.endNum)))
      r = mem.regionAtNum(ea);
    if (r !== undefined && ea >= r.gpaNum && ea + 8 <= r.endNum) {
      const off = ea - r.gpaNum;
      plo = r.view.getUint32(off, true);
      phi = r.view.getUint32(off + 4, true);
      if (withPtes) ptes.push((BigInt(phi) << 32n) | BigInt(plo));
    } else {
      const pte = reader.readU64(BigInt(ea));
      plo = Number(pte & 0xffff_ffffn);
      phi = Number(pte >> 32n);
      if (withPtes) ptes.push(pte);
    }
    if ((plo & 1) === 0) return fault(level, 'not-present', accessCode, gva);
    const leaf = level === 1 || (plo & PS_BIT) !== 0;
    if (
      (phi & m.rsvdHi) !== 0 ||
      (leaf && level >= 4) ||
      (leaf && level === 2 && (plo & 0x1f_e000 & ~m.tagLo) !== 0) ||
      (leaf && level === 3 && (plo & 0x3fff_e000 & ~m.tagLo) !== 0)
    )
      return fault(level, 'reserved-bit', accessCode | PF_P | PF_RSVD, gva);
    w &= plo >>> 1;
    u &= plo >>> 2;
    nx |= phi >>> 31;
    if (leaf) {
      if (
        ((accessCode & PF_W) !== 0 && (w & 1) === 0) ||
        ((accessCode & PF_U) !== 0 && (u & 1) === 0) ||
        ((accessCode & PF_ID) !== 0 && nx !== 0)
      )
        return fault(level, 'protection', accessCode | PF_P, gva);
      const offMask = level === 1 ? 0xfff : level === 2 ? 0x1f_ffff : 0x3fff_ffff;
      const base = ((plo & m.addrLo & ~offMask) >>> 0) + (phi & m.addrHi) * TWO32;
      return {
        ok: true,
        gpa: BigInt(base + (lo & offMask)),
        pageSize: level === 1 ? PAGE_SIZE_4K : level === 2 ? PAGE_SIZE_2M : PAGE_SIZE_1G,
        writable: (w & 1) === 1,
        user: (u & 1) === 1,
        nx: nx !== 0,
        tagged: (plo & m.tagLo) !== 0 || (phi & m.tagHi) !== 0,
        leafLevel: level,
        ptes,
      };
    }
    table = ((plo & m.addrLo) >>> 0) + (phi & m.addrHi) * TWO32;
  }
  /* c8 ignore next */
  throw new Error('unreachable: level 1 entries are always leaves');
}

let splitLo = 0;
let splitHi = 0;

/** Splits a u64 into splitLo/splitHi (32-bit halves), without bigint arithmetic below 2^53. */
function splitU64(v: bigint): void {
  const n = Number(v);
  if (n < TWO53) {
    splitLo = n >>> 0;
    splitHi = (n - splitLo) / TWO32;
  } else {
    splitLo = Number(v & 0xffff_ffffn);
    splitHi = Number(v >> 32n);
  }
}

function rootNumber(root: unknown, m: Mode): number {
  const r = toU64(root, 'page-table root');
  if ((r & 0xfffn) !== 0n || r >= m.physLimit)
    throw new RangeError(
      `page-table root ${hex(r)} must be a 4 KiB aligned GPA below 2^${m.physBits} (tag bit stripped)`,
    );
  return Number(r);
}

/**
 * Walks the page tables rooted at `root` for `gva` exactly as the CPU would (CR0.WP=1, EFER.NXE=1,
 * no SMEP/SMAP/PKE; 1 GiB pages supported) and checks `access`; never throws for a fault.
 */
export function walk(
  reader: PhysReader,
  root: Gpa,
  gva: Gva,
  params: PagingParams,
  access?: AccessKind,
): WalkResult {
  const m = modeOf(params);
  checkAccess(access);
  return walkMode(reader, plainMemory(reader), rootNumber(root, m), gva, m, access);
}

function checkAccess(access: unknown): void {
  if (access !== undefined && (typeof access !== 'object' || access === null))
    throw new TypeError(`walk access must be an object or undefined, got ${describe(access)}`);
}

function sizeName(size: bigint): string {
  return size === PAGE_SIZE_4K ? '4 KiB' : size === PAGE_SIZE_2M ? '2 MiB' : '1 GiB';
}

function levelShift(level: number): bigint {
  return BigInt(12 + 9 * (level - 1));
}

/** x86-64 page tables living in guest memory: map/unmap leaves of any page size and walk them. */
export class PageTables {
  /** GPA of the top-level table (the CR3 value, untagged). */
  readonly root: Gpa;
  readonly params: PagingParams;
  readonly memory: PhysWriter;
  private readonly mode: Mode;
  private readonly rootNum: number;
  private readonly plain: PhysicalMemory | undefined;
  private readonly allocTablePage: () => Gpa;
  // While an undo log is open: table pages allocated, and the entries written to link them in.
  private undoLog: { pages: bigint[]; links: number[] } | undefined;
  // Every table page in use (root included), for tablePages(); a Set add per new table page.
  private readonly tables = new Set<bigint>();

  /** Allocates the root table with `allocTablePage`, which must return the GPA of a fresh zeroed page. */
  constructor(memory: PhysWriter, params: PagingParams, allocTablePage: () => Gpa) {
    this.mode = makeMode(params);
    this.params = Object.freeze({ ...params });
    modes.set(this.params, this.mode);
    this.memory = memory;
    this.plain = plainMemory(memory);
    if (typeof allocTablePage !== 'function') throw new TypeError('allocTablePage must be a function');
    this.allocTablePage = allocTablePage;
    this.rootNum = rootNumber(allocTablePage(), this.mode);
    this.root = BigInt(this.rootNum);
    this.tables.add(this.root);
  }

  /** GPAs of the table pages these tables use (root first, then in allocation order); read-only bookkeeping. */
  tablePages(): Gpa[] {
    return [...this.tables];
  }

  /** Maps `gva` → `gpa` with one leaf of `pageSize` (default 4 KiB); ALREADY_MAPPED on any overlap; failures change nothing. */
  map(gva: Gva, gpa: Gpa, pageSize: PageSize = PAGE_SIZE_4K, flags: MapFlags = {}): void {
    if (typeof gva !== 'bigint' || gva < 0n || gva > U64_MAX) toU64(gva, 'GVA');
    if (typeof gpa !== 'bigint' || gpa < 0n || gpa > U64_MAX) toU64(gpa, 'GPA');
    const m = this.mode;
    const leafLevel =
      pageSize === PAGE_SIZE_4K ? 1 : pageSize === PAGE_SIZE_2M ? 2 : pageSize === PAGE_SIZE_1G ? 3 : 0;
    if (leafLevel === 0)
      throw new RangeError(`page size ${describe(pageSize)} must be 4096n, 2097152n or 1073741824n`);
    if (typeof flags !== 'object' || flags === null)
      throw new TypeError(`map flags must be an object, got ${describe(flags)}`);
    if (flags.tagged && m.tagBit === undefined)
      throw new RangeError('flags.tagged needs a tag bit in the paging params');
    // All checks below run on 32-bit halves: every valid GPA is below 2^52 and needs no bigint math.
    splitU64(gva);
    const lo = splitLo;
    const hi = splitHi;
    if (!isCanonical(hi, m)) this.checkCanonical(gva);
    const offMask = leafLevel === 1 ? 0xfff : leafLevel === 2 ? 0x1f_ffff : 0x3fff_ffff;
    if ((lo & offMask) !== 0)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.UNALIGNED,
        `GVA ${hex(gva)} is not aligned to the ${sizeName(pageSize)} page size`,
        { gva, pageSize },
      );
    const g = Number(gpa);
    const glo = g >>> 0;
    if ((glo & offMask) !== 0 && g < TWO53)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.UNALIGNED,
        `GPA ${hex(gpa)} is not aligned to the ${sizeName(pageSize)} page size`,
        { gpa, pageSize },
      );
    if (g + (offMask + 1) > 2 ** m.physBits)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.BAD_ADDRESS,
        `GPA ${hex(gpa)} + ${sizeName(pageSize)} exceeds MAXPHYADDR (${m.physBits} bits)`,
        { gpa, pageSize, physBits: m.physBits },
      );
    const ghi = (g - glo) / TWO32;
    if ((glo & m.tagLo) !== 0 || (ghi & m.tagHi) !== 0)
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.BAD_ADDRESS,
        `GPA ${hex(gpa)} has the tag bit ${m.tagBit} set; pass it untagged and use flags.tagged`,
        { gpa, tagBit: m.tagBit },
      );

    // Validate the whole path before writing anything.
    let table = this.rootNum;
    let level: number = m.levels;
    for (; level > leafLevel; level--) {
      this.readEntry(table + indexAt(level, lo, hi) * 8);
      if ((this.elo & 1) === 0) break;
      if (this.elo & PS_BIT) throw this.alreadyMapped(gva, pageSize, level, this.entry());
      table = this.entryTable();
    }
    if (level === leafLevel) {
      this.readEntry(table + indexAt(level, lo, hi) * 8);
      if (this.elo & 1) {
        const e = this.entry();
        if (level === 1 || this.elo & PS_BIT) throw this.alreadyMapped(gva, pageSize, level, e);
        const inner = this.firstMapping(this.entryAddress(e), level - 1, gva);
        if (inner !== undefined) throw this.alreadyMapped(gva, pageSize, inner.level, inner.entry, inner.gva);
        // An empty table under the new huge leaf is dropped (its page stays allocated).
      }
    }
    // Allocate the missing tables (the only step that can still fail), then write top-down.
    // (If allocTablePage throws part-way, the pages it returned are freed only under withUndo.)
    const fresh: bigint[] = level > leafLevel ? [] : NO_PAGES;
    for (let l = level; l > leafLevel; l--) {
      const page = this.checkedTablePage();
      fresh.push(page);
      this.undoLog?.pages.push(page);
    }
    for (const page of fresh) {
      const p = Number(page);
      const plo = p >>> 0;
      const at = table + indexAt(level, lo, hi) * 8;
      this.writeEntry(at, (plo | 7) >>> 0, (p - plo) / TWO32);
      this.undoLog?.links.push(at);
      table = p;
      level--;
    }
    let llo = glo | 1;
    let lhi = ghi;
    if (flags.writable !== false) llo |= 2;
    if (flags.user) llo |= 4;
    if (leafLevel > 1) llo |= PS_BIT;
    if (flags.nx) lhi |= 0x8000_0000;
    if (flags.tagged) {
      llo |= m.tagLo;
      lhi |= m.tagHi;
    }
    this.writeEntry(table + indexAt(leafLevel, lo, hi) * 8, llo >>> 0, lhi >>> 0);
  }

  /**
   * Runs `fn` (which maps) so that a throw leaves the tables as they were: `fn` undoes its own leaves,
   * then every table page allocated inside it is unlinked and handed to `freePage`. Not reentrant.
   */
  withUndo<T>(fn: () => T, freePage: (gpa: Gpa) => void): T {
    if (this.undoLog !== undefined) return fn();
    const log: { pages: bigint[]; links: number[] } = { pages: [], links: [] };
    this.undoLog = log;
    try {
      return fn();
    } catch (e) {
      for (let i = log.links.length - 1; i >= 0; i--) this.writeEntry(log.links[i]!, 0, 0);
      for (const page of log.pages) {
        this.tables.delete(page);
        freePage(page);
      }
      throw e;
    } finally {
      this.undoLog = undefined;
    }
  }

  /** Removes the leaf mapping that starts at `gva`; NOT_MAPPED when absent, UNALIGNED when `gva` is inside a larger page. */
  unmap(gva: Gva): { gpa: Gpa; pageSize: PageSize } {
    toU64(gva, 'GVA');
    this.checkCanonical(gva);
    splitU64(gva);
    const lo = splitLo;
    const hi = splitHi;
    let table = this.rootNum;
    for (let level: number = this.mode.levels; level >= 1; level--) {
      const ea = table + indexAt(level, lo, hi) * 8;
      this.readEntry(ea);
      if ((this.elo & 1) === 0)
        throw new GuestMemoryError(
          GUEST_MEMORY_ERROR.NOT_MAPPED,
          `GVA ${hex(gva)} is not mapped (level-${level} entry not present)`,
          { gva, level },
        );
      if (level === 1 || this.elo & PS_BIT) {
        const pageSize = (1n << levelShift(level)) as PageSize;
        if (gva & (pageSize - 1n))
          throw new GuestMemoryError(
            GUEST_MEMORY_ERROR.UNALIGNED,
            `GVA ${hex(gva)} is inside the ${sizeName(pageSize)} mapping at GVA ${hex(gva & ~(pageSize - 1n))}; unmap it by its base`,
            { gva, pageSize },
          );
        const e = this.entry();
        this.writeEntry(ea, 0, 0);
        return { gpa: this.entryAddress(e) & ~(pageSize - 1n), pageSize };
      }
      table = this.entryTable();
    }
    /* c8 ignore next */
    throw new Error('unreachable');
  }

  // The entry last read by readEntry, as 32-bit halves.
  private elo = 0;
  private ehi = 0;

  /** Reads the entry at GPA `ea` (a number below 2^52) into elo/ehi. */
  private readEntry(ea: number): void {
    const mem = this.plain;
    if (mem !== undefined) {
      const r = mem.regionAtNum(ea);
      if (r !== undefined && ea + 8 <= r.endNum) {
        const off = ea - r.gpaNum;
        this.elo = r.view.getUint32(off, true);
        this.ehi = r.view.getUint32(off + 4, true);
        return;
      }
    }
    const e = this.memory.readU64(BigInt(ea));
    this.elo = Number(e & 0xffff_ffffn);
    this.ehi = Number(e >> 32n);
  }

  private writeEntry(ea: number, lo: number, hi: number): void {
    const mem = this.plain;
    if (mem !== undefined) {
      const r = mem.regionAtNum(ea);
      if (r !== undefined && ea + 8 <= r.endNum) {
        const off = ea - r.gpaNum;
        r.view.setUint32(off, lo, true);
        r.view.setUint32(off + 4, hi, true);
        return;
      }
    }
    this.memory.writeU64(BigInt(ea), (BigInt(hi) << 32n) | BigInt(lo));
  }

  /** The entry last read, as a bigint. */
  private entry(): bigint {
    return (BigInt(this.ehi) << 32n) | BigInt(this.elo);
  }

  /** Untagged table address of the entry last read. */
  private entryTable(): number {
    return ((this.elo & this.mode.addrLo) >>> 0) + (this.ehi & this.mode.addrHi) * TWO32;
  }

  /** Walks these tables for `gva` (see walk()). */
  walk(gva: Gva, access?: AccessKind): WalkResult {
    checkAccess(access);
    return walkMode(this.memory, this.plain, this.rootNum, gva, this.mode, access);
  }

  /** The GPA `gva` maps to for a supervisor read, or undefined when the walk faults. */
  translate(gva: Gva): Gpa | undefined {
    const r = walkMode(this.memory, this.plain, this.rootNum, gva, this.mode);
    return r.ok ? r.gpa : undefined;
  }

  /** Every leaf mapping, in GVA order (lower half first). */
  mappings(): Array<{ gva: Gva; gpa: Gpa; pageSize: PageSize; entry: bigint }> {
    const out: Array<{ gva: bigint; gpa: bigint; pageSize: PageSize; entry: bigint }> = [];
    const visit = (table: bigint, level: number, base: bigint): void => {
      for (let i = 0n; i < 512n; i++) {
        const e = this.memory.readU64(table + i * 8n);
        if ((e & PTE.PRESENT) === 0n) continue;
        let gva = base | (i << levelShift(level));
        if (level === this.mode.levels && i >= 256n) gva |= U64_MAX ^ ((1n << BigInt(this.mode.vaBits)) - 1n);
        if (level === 1 || e & PTE.PS) {
          const pageSize = (1n << levelShift(level)) as PageSize;
          out.push({ gva, gpa: this.entryAddress(e) & ~(pageSize - 1n), pageSize, entry: e });
        } else visit(this.entryAddress(e), level - 1, gva);
      }
    };
    visit(this.root, this.mode.levels, 0n);
    return out;
  }

  /** @internal untagged address bits of an entry. */
  private entryAddress(e: bigint): bigint {
    return e & (this.mode.physLimit - 1n) & ~0xfffn & ~this.mode.tagMask;
  }

  private checkCanonical(gva: bigint): void {
    if (!isCanonical(Number(gva >> 32n), this.mode))
      throw new GuestMemoryError(
        GUEST_MEMORY_ERROR.NON_CANONICAL,
        `GVA ${hex(gva)} is not canonical for ${this.mode.levels}-level paging (bits 63–${this.mode.vaBits - 1} must all equal bit ${this.mode.vaBits - 1})`,
        { gva, levels: this.mode.levels },
      );
  }

  private checkedTablePage(): bigint {
    const page = this.allocTablePage();
    if (typeof page !== 'bigint' || page & 0xfffn || page < 0n || page >= this.mode.physLimit)
      throw new RangeError(
        `allocTablePage returned ${String(page)}, not a 4 KiB aligned GPA below 2^${this.mode.physBits}`,
      );
    this.tables.add(page);
    return page;
  }

  private firstMapping(
    table: bigint,
    level: number,
    base: bigint,
  ): { level: number; entry: bigint; gva: bigint } | undefined {
    for (let i = 0n; i < 512n; i++) {
      const e = this.memory.readU64(table + i * 8n);
      if ((e & PTE.PRESENT) === 0n) continue;
      const gva = base | (i << levelShift(level));
      if (level === 1 || e & PTE.PS) return { level, entry: e, gva };
      const inner = this.firstMapping(this.entryAddress(e), level - 1, gva);
      if (inner) return inner;
    }
    return undefined;
  }

  private alreadyMapped(
    gva: bigint,
    pageSize: PageSize,
    level: number,
    entry: bigint,
    at?: bigint,
  ): GuestMemoryError {
    const existingSize = (1n << levelShift(level)) as PageSize;
    const existingGva = (at ?? gva) & ~(existingSize - 1n);
    const existingGpa = this.entryAddress(entry) & ~(existingSize - 1n);
    return new GuestMemoryError(
      GUEST_MEMORY_ERROR.ALREADY_MAPPED,
      `cannot map ${sizeName(pageSize)} at GVA ${hex(gva)}: it overlaps the existing ${sizeName(existingSize)} mapping ` +
        `GVA ${hex(existingGva)} → GPA ${hex(existingGpa)}`,
      { gva, pageSize, existingGva, existingGpa, existingPageSize: existingSize },
    );
  }
}
