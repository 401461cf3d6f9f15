import { PAGE_SIZE } from '@kvmtest/guest-memory';
import { describe, expect, it } from 'vitest';
import {
  transportFor,
  UCALL_GLOBAL,
  UCALL_GUEST_GLOBALS,
  UCALL_SLOT_LAYOUT,
  UCALL_TRANSPORT_CODE,
  UcallError,
  ucallInit,
  ucallPoolLayout,
  ucallPoolOf,
  ucallReapply,
} from '../src/index.js';
import { createFakeVm } from './support/fake-kvm.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof UcallError) return e.code;
    throw e;
  }
  return undefined;
}

describe('layout', () => {
  it('puts cmd, args, buffer and the slot GPA at the documented offsets', () => {
    expect(UCALL_SLOT_LAYOUT).toEqual({ cmd: 0, args: 8, buffer: 64, gpa: 1088, size: 1096 });
    expect(UCALL_SLOT_LAYOUT.args + 7 * 8).toBe(UCALL_SLOT_LAYOUT.buffer);
    expect(UCALL_SLOT_LAYOUT.buffer + 1024).toBe(UCALL_SLOT_LAYOUT.gpa);
  });

  it('puts the bitmap first and the slots at the next 64-byte boundary', () => {
    expect(ucallPoolLayout(512)).toEqual({ bitmap: 0, bitmapBytes: 64, slots: 64, size: 64 + 512 * 1096 });
    expect(ucallPoolLayout(1)).toEqual({ bitmap: 0, bitmapBytes: 8, slots: 64, size: 64 + 1096 });
    expect(ucallPoolLayout(65).bitmapBytes).toBe(16);
    expect(() => ucallPoolLayout(0)).toThrow(RangeError);
    expect(() => ucallPoolLayout(513)).toThrow(/1–512/);
  });

  it('picks the transport from the VM type', () => {
    expect(transportFor('default')).toBe('pio');
    expect(transportFor('sw-protected')).toBe('pio');
    expect(transportFor('sev')).toBe('pio');
    expect(transportFor('sev-es')).toBe('ghcb');
    expect(transportFor('sev-snp')).toBe('ghcb');
    expect(transportFor('tdx')).toBe('tdvmcall');
  });

  it('declares every ucall global with a size', () => {
    const names = UCALL_GUEST_GLOBALS.map((g) => g.name);
    expect(names).toEqual(expect.arrayContaining(Object.values(UCALL_GLOBAL)));
    expect(Object.isFrozen(UCALL_GUEST_GLOBALS)).toBe(true);
  });
});

describe('ucallInit', () => {
  it('writes each slot its own GPA and this VM’s globals', () => {
    const f = createFakeVm();
    const pool = ucallInit(f.target);
    expect(pool.slots).toBe(512);
    expect(pool.transport).toBe('pio');
    expect(pool.gpa + BigInt(pool.layout.size)).toBeLessThan(0xffffffffn);
    for (const i of [0, 1, 255, 511]) {
      const gpa = pool.slotGpa(i);
      expect(f.space.memory.readU64(gpa + BigInt(UCALL_SLOT_LAYOUT.gpa))).toBe(gpa);
      expect(f.space.gvaToGpa(pool.slotGva(i))).toBe(gpa);
      expect(pool.slotIndexOf(gpa)).toBe(i);
    }
    expect(pool.slotIndexOf(pool.slotGpa(1) + 8n)).toBeUndefined();
    expect(pool.slotIndexOf(pool.gpa)).toBeUndefined();
    expect(f.image.readGlobalU64(UCALL_GLOBAL.pool)).toBe(pool.gva);
    expect(f.image.readGlobalU64(UCALL_GLOBAL.nrSlots)).toBe(512n);
    expect(f.image.readGlobalU64(UCALL_GLOBAL.transport)).toBe(BigInt(UCALL_TRANSPORT_CODE.pio));
    expect(f.image.readGlobalU64(UCALL_GLOBAL.ghcbCount)).toBe(0n);
    expect(ucallPoolOf(f.vm.asVm())).toBe(pool);
  });

  it('zeroes pages that held old bytes', () => {
    const f = createFakeVm();
    const size = BigInt(ucallPoolLayout(512).size);
    const gva = f.space.vaddrAlloc(size, { visibility: 'shared', slot: 0 });
    const gpa = f.space.gvaToGpa(gva);
    f.space.memory.write(gpa, new Uint8Array(Number(size)).fill(0xa5));
    f.space.vaddrFree(gva);
    const pool = ucallInit(f.target);
    expect(pool.gpa).toBe(gpa);
    const bytes = f.space.memory.read(pool.gpa, 64 + 64);
    expect(bytes.every((b) => b === 0)).toBe(true);
    expect(pool.inUse(0)).toBe(false);
  });

  it('allocates the pool in shared memory of a CoCo VM', () => {
    for (const type of ['sev', 'sev-es', 'sev-snp', 'tdx', 'sw-protected'] as const) {
      const f = createFakeVm({ type });
      const pool = ucallInit(f.target);
      expect(f.space.isPrivate(pool.gpa)).toBe(false);
      expect(f.space.isPrivate(pool.slotGpa(511))).toBe(false);
      expect(pool.transport).toBe(transportFor(type));
    }
  });

  it('gives each of nrVcpus a shared GHCB page on SEV-ES and SNP', () => {
    const f = createFakeVm({ type: 'sev-snp' });
    const pool = ucallInit(f.target, { nrVcpus: 3 });
    expect(pool.ghcb?.count).toBe(3);
    const p2 = pool.ghcbPage(2)!;
    expect(f.space.gvaToGpa(p2.gva)).toBe(p2.gpa);
    expect(p2.gpa % BigInt(PAGE_SIZE)).toBe(0n);
    expect(f.space.isPrivate(p2.gpa)).toBe(false);
    expect(pool.ghcbPage(3)).toBeUndefined();
    expect(f.image.readGlobalU64(UCALL_GLOBAL.ghcbGpa)).toBe(pool.ghcb!.gpa);
    expect(f.image.readGlobalU64(UCALL_GLOBAL.flags)).toBe(1n);
  });

  it('refuses a second pool for the same VM', () => {
    const f = createFakeVm();
    ucallInit(f.target);
    expect(codeOf(() => ucallInit(f.target))).toBe('ALREADY_INITIALIZED');
    expect(() => ucallInit(f.target)).toThrow(/already has a ucall pool/);
  });

  it('refuses a transport that cannot reach the host for the VM type', () => {
    const f = createFakeVm({ type: 'sev-es' });
    expect(codeOf(() => ucallInit(f.target, { transport: 'pio' }))).toBe('BAD_TRANSPORT');
    expect(() => ucallInit(f.target, { transport: 'tdvmcall' })).toThrow(/use ghcb or mmio/);
    expect(ucallPoolOf(f.vm.asVm())).toBeUndefined();
  });

  it('refuses an MMIO GPA that a memslot backs', () => {
    const f = createFakeVm();
    expect(codeOf(() => ucallInit(f.target, { transport: 'mmio', mmioGpa: 0x1000n }))).toBe('BAD_MMIO_GPA');
    const pool = ucallInit(f.target, { transport: 'mmio' });
    expect(pool.mmioGpa).toBe(8n << 20n);
  });

  it('refuses an image without the ucall globals, allocating nothing', () => {
    const f = createFakeVm({ omitGlobals: [UCALL_GLOBAL.transport] });
    expect(codeOf(() => ucallInit(f.target))).toBe('MISSING_GLOBAL');
    expect(() => ucallInit(f.target)).toThrow(/no global ucall_transport/);
    expect(ucallPoolOf(f.vm.asVm())).toBeUndefined();
  });

  it('rewrites the globals into a reloaded image', () => {
    const f = createFakeVm();
    const pool = ucallInit(f.target);
    const fresh = f.reloadImage();
    expect(fresh.readGlobalU64(UCALL_GLOBAL.pool)).toBe(0n);
    ucallReapply(f.target);
    expect(fresh.readGlobalU64(UCALL_GLOBAL.pool)).toBe(pool.gva);
    expect(pool.image).toBe(fresh);
    const other = createFakeVm();
    expect(codeOf(() => ucallReapply(other.target))).toBe('NO_POOL');
  });
});

describe('closed VMs', () => {
  it('closed-vm-ebadf: ucallInit and ucallReapply fail with EBADF on a closed VM and change nothing', () => {
    const f = createFakeVm();
    f.vm.closed = true;
    const free = f.space.vaddrAlloc(PAGE_SIZE_BIG);
    f.space.vaddrFree(free);
    expect(() => ucallInit(f.target)).toThrow(expect.objectContaining({ name: 'KvmError', code: 'EBADF' }));
    expect(ucallPoolOf(f.target.vm)).toBeUndefined();
    expect(f.space.vaddrAlloc(PAGE_SIZE_BIG)).toBe(free); // nothing was allocated
    const g = createFakeVm();
    ucallInit(g.target);
    g.vm.closed = true;
    expect(() => ucallReapply(g.target)).toThrow(
      expect.objectContaining({ name: 'KvmError', code: 'EBADF' }),
    );
  });
});

const PAGE_SIZE_BIG = BigInt(PAGE_SIZE);
