// The simulated guest CPU, part 2: memory and TLB — physical access through the arch's page
// classification, translation through the guest's page tables with a small TLB, and the memory
// accessors (the synchronous ones, which never exit, and readAsync / writeAsync, which may).

import { CR, type ExceptionFrame, MEM_FLAG, VECTOR } from '@kvmtest/kvm';
import type { AccessSize } from '@kvmtest/kvm';
import { walk } from '@kvmtest/guest-memory';
import type { Memslot } from './memory.js';

import {
  U64,
  TWO53,
  SHARED,
  TLB_CAPACITY,
  AccessExit,
  u64CipherOf,
  type TlbEntry,
  type PageAccess,
  viewOf,
  hex,
  describeFault,
  le,
  leBytes,
  GUEST_MAX_READ,
  describeValue,
} from './guest-util.js';
import { GuestCpu } from './guest-cpu.js';

export abstract class GuestMem extends GuestCpu {
  // ---- physical access ----------------------------------------------------------------------

  /** Classifies the page holding `gpa` (the arch decides; the core resolves the backing). */
  protected page(gpa: bigint, write: boolean, tagged: boolean, implicit: boolean): PageAccess {
    const vm = this.vcpu.vm;
    const slot = vm.memslotAt(gpa);
    const ops = vm.ops;
    const d =
      ops.classifyAccess === undefined
        ? SHARED
        : ops.classifyAccess(vm, {
            gpa,
            tagged,
            write,
            implicit,
            slot,
            attributes: vm.attributes.empty ? 0n : vm.memoryAttributes(gpa),
            pvalidate: this.pvalidating,
          });
    const gpaPage = gpa & ~0xfffn;
    switch (d.kind) {
      case 'shared':
      case 'encrypted': {
        if (slot === undefined) return { kind: 'mmio', readonlySlot: false };
        const ro = (slot.flags & MEM_FLAG.READONLY) !== 0;
        if (write && ro) return { kind: 'mmio', readonlySlot: true };
        // A slot without host memory (userspace_addr 0): the host side of the fault fails (-EFAULT).
        if (slot.userspace.length === 0)
          return {
            kind: 'fault',
            exit: { reason: 'memory-fault', gpa: gpaPage, size: 4096n, private: false, errno: 'EFAULT' },
          };
        return {
          kind: 'ram',
          bytes: slot.userspace,
          base: Number(gpaPage - slot.gpa),
          cipher: d.kind === 'encrypted' ? d.cipher : undefined,
          readonlySlot: ro,
        };
      }
      case 'private':
        return this.privatePage(slot, gpaPage);
      case 'memory-fault':
        return {
          kind: 'fault',
          exit: { reason: 'memory-fault', gpa: gpaPage, size: 4096n, private: d.private, errno: 'EFAULT' },
        };
      case 'exception':
        return { kind: 'exception', e: d };
    }
  }

  /** kvm_mmu_faultin_pfn_private: no slot, a slot without guest_memfd, or a released gmem -> memory fault. */
  protected privatePage(slot: Memslot | undefined, gpaPage: bigint): PageAccess {
    const g = slot?.gmem;
    if (slot === undefined || g === undefined)
      return {
        kind: 'fault',
        exit: { reason: 'memory-fault', gpa: gpaPage, size: 4096n, private: true, errno: 'EFAULT' },
      };
    const index = Number((gpaPage - slot.gpa + slot.gmemOffset) >> 12n);
    return { kind: 'ram', bytes: g.page(index, true)!, base: 0, cipher: undefined, readonlySlot: false };
  }

  /** Page-table reads of the walker (implicit supervisor reads). */
  protected readPte(gpa: bigint): bigint {
    this.walked.push(gpa & ~0xfffn);
    const p = this.page(gpa, false, false, true);
    if (p.kind === 'ram') {
      const off = Number(gpa & 0xfffn);
      if (p.cipher === undefined)
        return viewOf(p.bytes).getBigUint64(p.bytes.byteOffset + p.base + off, true);
      const out = new Uint8Array(8);
      p.cipher.decrypt(p.bytes, p.base, off, out, 8);
      return new DataView(out.buffer).getBigUint64(0, true);
    }
    if (p.kind === 'fault') {
      if (this.exitMode) throw new AccessExit(gpa, p.exit);
      this.unwind(p.exit, `a page-table read at GPA ${hex(gpa)} needed a memory-fault exit`);
    }
    if (p.kind === 'mmio')
      this.crash(`the page walk read a page-table entry at GPA ${hex(gpa)}, which no memslot backs`);
    return this.crash(`the page walk read GPA ${hex(gpa)}: ${p.kind === 'exception' ? p.e.detail : ''}`);
  }

  // ---- translation --------------------------------------------------------------------------

  /** The TLB entry for `gva`, filling it on a miss; undefined when the handler skipped the access. */
  protected entry(gva: bigint, write: boolean, op: string): TlbEntry | undefined {
    const vpn = this.split(gva, op);
    if (this.gen !== this.vm.memGeneration) this.flush();
    let e = this.last;
    if (e === undefined || e.vpn !== vpn) {
      const p = this.prev;
      if (p !== undefined && p.vpn === vpn) {
        this.prev = e;
        e = p;
      } else {
        e = this.tlb.get(vpn);
        if (e === undefined) return this.fill(gva, vpn, write, op);
        if (this.last !== undefined) this.prev = this.last;
      }
      this.last = e;
    }
    if (write && !e.writeOk) return this.fill(gva, vpn, true, op);
    return e;
  }

  protected fill(gva: bigint, vpn: number, write: boolean, op: string): TlbEntry | undefined {
    // An exception handler may access guest memory (testkit's dispatcher reads its handler table),
    // which splits other GVAs: the caller's page offset is restored for the retried access.
    const off = this.off;
    for (;;) {
      const r = this.translate(gva, vpn, write, op);
      if (!('vector' in r)) {
        this.off = off;
        return r;
      }
      if (this.deliver(r) === 'skip') return undefined;
      this.tick(op);
    }
  }

  protected translate(gva: bigint, vpn: number, write: boolean, op: string): TlbEntry | ExceptionFrame {
    const s = this.vcpu.sregs;
    const operation = `${op}(${hex(gva)})`;
    let gpa: bigint;
    let writable = true;
    let tagged = false;
    this.walked = [];
    if ((s.cr0 & CR.CR0_PG) === 0n) {
      // Paging off: linear = physical.
      gpa = gva;
    } else {
      if ((s.cr4 & CR.CR4_PAE) === 0n || (s.efer & CR.EFER_LMA) === 0n)
        this.crash(
          `${operation}: only 64-bit (4- and 5-level) paging is modelled; CR4.PAE and EFER.LMA must be set`,
        );
      const params = (s.cr4 & CR.CR4_LA57) !== 0n ? this.params5 : this.params4;
      const tagMask = params.tagBit === undefined ? 0n : 1n << BigInt(params.tagBit);
      const root = s.cr3 & ~0xfffn & ~tagMask & ((1n << BigInt(params.physBits ?? 52)) - 1n);
      const w = walk(this.reader, root, gva, params, write ? { write: true } : undefined);
      if (!w.ok) {
        const f = w.fault;
        if (f.reason === 'non-canonical')
          return { vector: VECTOR.GP, errorCode: 0, operation, detail: `GVA ${hex(gva)} is not canonical` };
        return {
          vector: VECTOR.PF,
          errorCode: f.errorCode,
          cr2: gva,
          operation,
          detail: `${f.reason === 'protection' ? 'write to a read-only page' : f.reason === 'reserved-bit' ? 'reserved bit set in the entry' : 'entry not present'} at level ${f.level}`,
        };
      }
      gpa = w.gpa;
      writable = w.writable;
      tagged = w.tagged;
    }
    const p = this.page(gpa, write, tagged, false);
    switch (p.kind) {
      case 'mmio':
        if (this.exitMode) throw new AccessExit(gpa, undefined);
        return this.crash(
          p.readonlySlot
            ? `${operation} wrote GPA ${hex(gpa)} in a READONLY memslot: that is an MMIO write, and a synchronous accessor never exits; use g.writeAsync (or g.mmioWrite)`
            : `${operation} reached GPA ${hex(gpa)}, which no memslot backs: that is MMIO, and a synchronous accessor never exits; use g.readAsync / g.writeAsync (or g.mmioRead / g.mmioWrite)`,
        );
      case 'fault':
        if (this.exitMode) throw new AccessExit(gpa, p.exit);
        return this.unwind(
          p.exit,
          `${operation} needed a ${describeFault(p.exit)} exit, which a synchronous accessor cannot resume from (it never exits); use g.readAsync / g.writeAsync where an access may fault`,
        );
      case 'exception':
        return { vector: p.e.vector, errorCode: p.e.errorCode, operation, detail: p.e.detail };
      case 'ram':
        break;
    }
    const gpaPage = gpa & ~0xfffn;
    for (const pt of this.walked) {
      if (this.ptPages.has(pt)) continue;
      this.ptPages.add(pt);
      for (const e of this.tlb.values()) if (e.gpaPage === pt) e.ptPage = true;
    }
    if (this.tlb.size >= TLB_CAPACITY) {
      this.tlb.clear();
      this.last = undefined;
      this.prev = undefined;
    }
    const e: TlbEntry = {
      vpn,
      view: p.cipher === undefined ? viewOf(p.bytes) : undefined,
      bytes: p.bytes,
      base: p.bytes.byteOffset + p.base,
      writeOk: writable && !p.readonlySlot,
      gpaPage,
      ptPage: this.ptPages.has(gpaPage),
      cipher: p.cipher,
      u64: u64CipherOf(p.cipher),
    };
    this.tlb.set(vpn, e);
    // `last` moves to `prev` unless it was this page's entry, which `e` replaces (prev is never this page:
    // it and `last` are different pages, and `last` was checked first).
    if (this.last !== undefined && this.last.vpn !== vpn) this.prev = this.last;
    else if (this.prev?.vpn === vpn) this.prev = undefined;
    this.last = e;
    return e;
  }

  // ---- memory accessors ---------------------------------------------------------------------

  readU64(gva: bigint): bigint {
    this.tick('readU64');
    const e = this.entry(gva, false, 'readU64');
    if (e === undefined) return 0n;
    const off = this.off;
    if (off <= 4088) {
      if (e.view !== undefined) return e.view.getBigUint64(e.base + off, true);
      // The same bytes readSlow would decrypt (one page, offset `off`), without the copy.
      if (e.u64 !== undefined) return e.u64.readU64(e.bytes, e.base - e.bytes.byteOffset, off);
    }
    return le(this.readSlow(gva, 8, 'readU64'));
  }

  readU32(gva: bigint): number {
    this.tick('readU32');
    const e = this.entry(gva, false, 'readU32');
    if (e === undefined) return 0;
    const off = this.off;
    if (off <= 4092 && e.view !== undefined) return e.view.getUint32(e.base + off, true);
    return Number(le(this.readSlow(gva, 4, 'readU32')));
  }

  readU16(gva: bigint): number {
    this.tick('readU16');
    const e = this.entry(gva, false, 'readU16');
    if (e === undefined) return 0;
    const off = this.off;
    if (off <= 4094 && e.view !== undefined) return e.view.getUint16(e.base + off, true);
    return Number(le(this.readSlow(gva, 2, 'readU16')));
  }

  readU8(gva: bigint): number {
    this.tick('readU8');
    const e = this.entry(gva, false, 'readU8');
    if (e === undefined) return 0;
    if (e.view !== undefined) return e.view.getUint8(e.base + this.off);
    return this.readSlow(gva, 1, 'readU8')[0]!;
  }

  writeU64(gva: bigint, v: bigint): void {
    if (typeof v !== 'bigint') throw new TypeError(`writeU64: value must be a bigint, got ${typeof v}`);
    this.tick('writeU64');
    const e = this.entry(gva, true, 'writeU64');
    if (e === undefined) return;
    const off = this.off;
    if (off <= 4088 && e.view !== undefined) {
      e.view.setBigUint64(e.base + off, BigInt.asUintN(64, v), true);
      if (e.ptPage) this.flush();
      return;
    }
    if (off <= 4088 && e.u64 !== undefined) {
      // What writeSlow does for one page: encrypt the 8 LE bytes at `off`, flush if it is a page table.
      e.u64.writeU64(e.bytes, e.base - e.bytes.byteOffset, off, BigInt.asUintN(64, v));
      if (e.ptPage) this.flush();
      return;
    }
    this.writeSlow(gva, leBytes(BigInt.asUintN(64, v), 8), 'writeU64');
  }

  writeU32(gva: bigint, v: number): void {
    this.writeNum('writeU32', gva, v, 4);
  }

  writeU16(gva: bigint, v: number): void {
    this.writeNum('writeU16', gva, v, 2);
  }

  writeU8(gva: bigint, v: number): void {
    this.writeNum('writeU8', gva, v, 1);
  }

  protected writeNum(op: string, gva: bigint, v: number, size: 1 | 2 | 4): void {
    if (typeof v !== 'number' || !Number.isInteger(v))
      throw new TypeError(`${op}: value must be an integer, got ${describeValue(v)}`);
    this.tick(op);
    const e = this.entry(gva, true, op);
    if (e === undefined) return;
    const off = this.off;
    if (off <= 4096 - size && e.view !== undefined) {
      const at = e.base + off;
      if (size === 4) e.view.setUint32(at, v >>> 0, true);
      else if (size === 2) e.view.setUint16(at, v & 0xffff, true);
      else e.view.setUint8(at, v & 0xff);
      if (e.ptPage) this.flush();
      return;
    }
    this.writeSlow(gva, leBytes(BigInt(v >>> 0) & ((1n << BigInt(size * 8)) - 1n), size), op);
  }

  readBytes(gva: bigint, length: number): Uint8Array {
    if (typeof length !== 'number' || !Number.isInteger(length) || length < 0)
      throw new TypeError(`readBytes: length must be a non-negative integer, got ${describeValue(length)}`);
    // The copy is allocated before the walk: a guest-chosen length is bounded first.
    if (length > GUEST_MAX_READ)
      throw new RangeError(`readBytes: length ${length} is more than ${GUEST_MAX_READ} bytes in one access`);
    this.tick('readBytes');
    return this.readSlow(gva, length, 'readBytes');
  }

  writeBytes(gva: bigint, data: Uint8Array): void {
    if (!(data instanceof Uint8Array)) throw new TypeError('writeBytes: data must be a Uint8Array');
    this.tick('writeBytes');
    const n = typeof gva === 'bigint' ? Number(gva) : -1;
    const off = n % 4096;
    if (n >= 0 && n < TWO53 && data.length > 0 && off + data.length <= 4096) {
      // Inside one page (and gva a u64, so writeSlow's wrap-around is a no-op): writeSlow's single
      // iteration, without the BigInt arithmetic and the subarray.
      const e = this.entry(gva, true, 'writeBytes');
      if (e === undefined) return;
      const start = e.base - e.bytes.byteOffset;
      if (e.cipher !== undefined) e.cipher.encrypt(e.bytes, start, off, data);
      else e.bytes.set(data, start + off);
      if (e.ptPage) this.flush();
      return;
    }
    this.writeSlow(gva, data, 'writeBytes');
  }

  /** Page-by-page read (page crossings, ciphers); a skipped page reads as zeros. */
  protected readSlow(gva: bigint, length: number, op: string): Uint8Array {
    if (typeof gva !== 'bigint') throw new TypeError(`${op}: gva must be a bigint, got ${typeof gva}`);
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const at = BigInt.asUintN(64, gva + BigInt(done));
      const off = Number(at & 0xfffn);
      const n = Math.min(length - done, 4096 - off);
      const e = this.entry(at, false, op);
      if (e !== undefined) {
        if (e.cipher !== undefined) {
          const part = new Uint8Array(n);
          e.cipher.decrypt(e.bytes, e.base - e.bytes.byteOffset, off, part, n);
          out.set(part, done);
        } else
          out.set(
            e.bytes.subarray(e.base - e.bytes.byteOffset + off, e.base - e.bytes.byteOffset + off + n),
            done,
          );
      }
      done += n;
    }
    return out;
  }

  protected writeSlow(gva: bigint, data: Uint8Array, op: string): void {
    if (typeof gva !== 'bigint') throw new TypeError(`${op}: gva must be a bigint, got ${typeof gva}`);
    let done = 0;
    let flush = false;
    while (done < data.length) {
      const at = BigInt.asUintN(64, gva + BigInt(done));
      const off = Number(at & 0xfffn);
      const n = Math.min(data.length - done, 4096 - off);
      const e = this.entry(at, true, op);
      if (e !== undefined) {
        const part = data.subarray(done, done + n);
        const start = e.base - e.bytes.byteOffset;
        if (e.cipher !== undefined) e.cipher.encrypt(e.bytes, start, off, part);
        else e.bytes.set(part, start + off);
        if (e.ptPage) flush = true;
      }
      done += n;
    }
    if (flush) this.flush();
  }

  readAsync(gva: bigint, size: AccessSize): Promise<bigint> {
    return this.access('readAsync', gva, size, undefined);
  }

  async writeAsync(gva: bigint, size: AccessSize, value: bigint): Promise<void> {
    if (typeof value !== 'bigint')
      throw new TypeError(`writeAsync: value must be a bigint, got ${describeValue(value)}`);
    await this.access('writeAsync', gva, size, BigInt.asUintN(size * 8, value));
  }

  /**
   * A memory access that may exit: MMIO becomes an `mmio` exit (a read returns the host's data),
   * a memory fault a `memory-fault` exit after which the access is retried from its translation.
   */
  protected async access(
    op: string,
    gva: bigint,
    size: AccessSize,
    value: bigint | undefined,
  ): Promise<bigint> {
    if (typeof gva !== 'bigint')
      throw new TypeError(`${op}: gva must be a bigint, got ${describeValue(gva)}`);
    if (size !== 1 && size !== 2 && size !== 4 && size !== 8)
      throw new TypeError(`${op}: size must be 1, 2, 4 or 8, got ${describeValue(size)}`);
    const write = value !== undefined;
    for (;;) {
      if (this.tickAsync(op)) await this.budgetPause();
      let pending: AccessExit;
      this.exitMode = true;
      try {
        return this.accessNow(op, gva, size, value);
      } catch (x) {
        if (!(x instanceof AccessExit)) throw x;
        pending = x;
      } finally {
        this.exitMode = false;
      }
      if (pending.fault !== undefined) {
        // KVM_EXIT_MEMORY_FAULT: the host resolves it (attributes, memslots) and the access is retried.
        await this.vcpu.exitToHost(pending.fault);
        continue;
      }
      const data = write ? leBytes(value, size) : new Uint8Array(size);
      const exit = { reason: 'mmio', gpa: pending.gpa, isWrite: write, len: size, data } as const;
      const got = (await this.vcpu.exitToHost(exit, (e) => {
        const d = (e as { data?: unknown }).data;
        const out = new Uint8Array(size);
        if (d instanceof Uint8Array) out.set(d.subarray(0, size));
        return out;
      })) as Uint8Array;
      return write ? 0n : le(got);
    }
  }

  /** One attempt of `access` with translation in exit mode; AccessExit when it needs the host. */
  protected accessNow(op: string, gva: bigint, size: AccessSize, value: bigint | undefined): bigint {
    const write = value !== undefined;
    const e = this.entry(gva, write, op);
    if (e === undefined) return 0n;
    const off = this.off;
    if (off <= 4096 - size && e.view !== undefined) {
      const v = e.view;
      const at = e.base + off;
      if (!write) {
        if (size === 8) return v.getBigUint64(at, true);
        return BigInt(
          size === 4 ? v.getUint32(at, true) : size === 2 ? v.getUint16(at, true) : v.getUint8(at),
        );
      }
      if (size === 8) v.setBigUint64(at, value, true);
      else if (size === 4) v.setUint32(at, Number(value), true);
      else if (size === 2) v.setUint16(at, Number(value), true);
      else v.setUint8(at, Number(value));
      if (e.ptPage) this.flush();
      return 0n;
    }
    if (!write) return le(this.readSlow(gva, size, op));
    this.writeSlow(gva, leBytes(value, size), op);
    return 0n;
  }

  testAndSetBit(gva: bigint, bit: number): boolean {
    return this.bitOp('testAndSetBit', gva, bit, true);
  }

  clearBit(gva: bigint, bit: number): void {
    this.bitOp('clearBit', gva, bit, false);
  }

  /** LOCK BTS / BTR on the u64 word holding `bit` of the bit array at `gva` (a locked write). */
  protected bitOp(op: string, gva: bigint, bit: number, set: boolean): boolean {
    if (typeof bit !== 'number' || !Number.isInteger(bit) || bit < 0)
      throw new TypeError(`${op}: bit must be a non-negative integer, got ${describeValue(bit)}`);
    if (typeof gva !== 'bigint') throw new TypeError(`${op}: gva must be a bigint, got ${typeof gva}`);
    this.tick(op);
    const q = Math.floor(bit / 64);
    // No BigInt arithmetic when the bit is in the first word and gva is already a u64.
    const word = q === 0 && gva >= 0n && gva <= U64 ? gva : BigInt.asUintN(64, gva + BigInt(q) * 8n);
    const r = bit % 64;
    const e = this.entry(word, true, op);
    if (e === undefined) return false;
    const off = this.off;
    if (off <= 4088 && e.view !== undefined) {
      // Plain memory: the read-modify-write of the one byte of the LE u64 word that holds the bit,
      // which is what rewriting the whole word with that bit changed amounts to.
      const at = e.base + off + (r >> 3);
      const m = 1 << (r & 7);
      const oldByte = e.view.getUint8(at);
      e.view.setUint8(at, set ? oldByte | m : oldByte & ~m);
      if (e.ptPage) this.flush();
      return (oldByte & m) !== 0;
    }
    const mask = 1n << BigInt(r);
    const old = le(this.readSlow(word, 8, op));
    this.writeSlow(word, leBytes(set ? old | mask : old & ~mask, 8), op);
    return (old & mask) !== 0n;
  }

  global(name: string): bigint {
    if (typeof name !== 'string')
      throw new TypeError(`global: name must be a string, got ${describeValue(name)}`);
    const v = this.vcpu.vm.symbols.get(name);
    if (v === undefined)
      throw new RangeError(
        `global ${JSON.stringify(name)} is not in this VM's symbol table (${this.vcpu.vm.symbols.size} symbols; the host sets them with vm.setGuestSymbols)`,
      );
    return v;
  }
}
