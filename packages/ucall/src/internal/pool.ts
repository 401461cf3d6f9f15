// The per-VM pool: allocation in shared memory below 4 GiB, each slot's own GPA, the guest globals
// that tell this VM's image where the pool is and how to reach the host, and the Vm → pool registry.

import { hex, VM_TYPE_TRAITS } from '@kvmtest/coco';
import type { AddressSpace, Gpa, Gva, LoadedImage } from '@kvmtest/guest-memory';
import { argTypeError, describeValue, KvmError, type Vm } from '@kvmtest/kvm';
import {
  transportFor,
  UCALL_DEFAULT_SLOTS,
  UCALL_FLAG,
  UCALL_GLOBAL,
  UCALL_GUEST_GLOBALS,
  UCALL_MAX_SLOTS,
  UCALL_SLOT_LAYOUT,
  UCALL_TRANSPORT_CODE,
  type UcallPoolLayout,
  type UcallTransport,
  ucallPoolLayout,
} from './constants.js';
import { UcallError } from './errors.js';

/** What ucallInit works on: the VM, its address space and the guest image loaded into it. */
export interface UcallInitTarget {
  vm: Vm;
  space: AddressSpace;
  image: LoadedImage;
}

/** Options of ucallInit. */
export interface UcallInitOptions {
  /** Transport; default transportFor(vm.type). Only that one or 'mmio' is accepted. */
  transport?: UcallTransport;
  /** Slots in the pool; default 512 (KVM_MAX_VCPUS: one slot per possible vCPU). */
  slots?: number;
  /** GPA the mmio transport writes to; default the first GPA past memslot 0 (selftests' ucall_init call). */
  mmioGpa?: Gpa;
  /** vCPUs that need a GHCB page (ghcb transport): ids 0…n−1; default max(1, vCPUs the VM has now). */
  nrVcpus?: number;
}

const PAGE = 4096n;
const BELOW_4G = 0x1_0000_0000n;
/** The memslot the pool lives in (selftests: MEM_REGION_DATA → slot 0). */
const POOL_MEMSLOT = 0;

const pools = new WeakMap<Vm, UcallPool>();

/** The ucall pool of one VM: where it is, how its guest sends, and the GHCB pages of the ghcb transport. */
export class UcallPool {
  #vm: Vm;
  readonly space: AddressSpace;
  /** GVA of the pool (the in-use bitmap) in this VM's address space. */
  readonly gva: Gva;
  /** GPA of the pool; the pool is physically contiguous. */
  readonly gpa: Gpa;
  /** Number of slots. */
  readonly slots: number;
  readonly transport: UcallTransport;
  readonly layout: UcallPoolLayout;
  /** GPA of slot 0. */
  readonly firstSlotGpa: Gpa;
  /** First GPA past the last slot. */
  readonly endGpa: Gpa;
  /** The MMIO GPA a guest writes the slot GPA to (mmio transport), if any. */
  readonly mmioGpa: Gpa | undefined;
  /** GHCB pages of the ghcb transport: vCPU n's page is `gva/gpa + n * 4096`. */
  readonly ghcb: { readonly gva: Gva; readonly gpa: Gpa; readonly count: number } | undefined;
  #image: LoadedImage;
  // firstSlotGpa as a number (the pool lies below 4 GiB), for the decode's index arithmetic.
  readonly #firstSlotNum: number;

  /** @internal made by ucallInit. */
  constructor(
    target: UcallInitTarget,
    init: {
      gva: Gva;
      gpa: Gpa;
      slots: number;
      transport: UcallTransport;
      mmioGpa: Gpa | undefined;
      ghcb: { gva: Gva; gpa: Gpa; count: number } | undefined;
    },
  ) {
    this.#vm = target.vm;
    this.space = target.space;
    this.#image = target.image;
    this.gva = init.gva;
    this.gpa = init.gpa;
    this.slots = init.slots;
    this.transport = init.transport;
    this.layout = ucallPoolLayout(init.slots);
    this.firstSlotGpa = init.gpa + BigInt(this.layout.slots);
    this.endGpa = this.firstSlotGpa + BigInt(init.slots * UCALL_SLOT_LAYOUT.size);
    this.#firstSlotNum = Number(this.firstSlotGpa);
    this.mmioGpa = init.mmioGpa;
    this.ghcb = init.ghcb === undefined ? undefined : Object.freeze({ ...init.ghcb });
  }

  /** The VM whose guest uses this pool (the destination, after ucallMovePool). */
  get vm(): Vm {
    return this.#vm;
  }

  /** @internal ucallMovePool re-homes the pool. */
  moveTo(vm: Vm): void {
    this.#vm = vm;
  }

  /** The image whose globals point at this pool (the latest one ucallReapply wrote). */
  get image(): LoadedImage {
    return this.#image;
  }

  /** GPA of slot `index`. */
  slotGpa(index: number): Gpa {
    return this.firstSlotGpa + BigInt(this.checkIndex(index) * UCALL_SLOT_LAYOUT.size);
  }

  /** GVA of slot `index`. */
  slotGva(index: number): Gva {
    return this.gva + BigInt(this.layout.slots + this.checkIndex(index) * UCALL_SLOT_LAYOUT.size);
  }

  /** Index of the slot that starts at `gpa`, or undefined when `gpa` is not the start of one of this pool's slots. */
  slotIndexOf(gpa: Gpa): number | undefined {
    if (typeof gpa !== 'bigint' || gpa < this.firstSlotGpa || gpa >= this.endGpa) return undefined;
    const off = Number(gpa) - this.#firstSlotNum;
    return off % UCALL_SLOT_LAYOUT.size === 0 ? off / UCALL_SLOT_LAYOUT.size : undefined;
  }

  /** True while slot `index` is taken (its in-use bit is set), read through host memory. */
  inUse(index: number): boolean {
    const i = this.checkIndex(index);
    const byte = this.space.memory.readU8(this.gpa + BigInt(this.layout.bitmap + (i >> 3)));
    return ((byte >> (i & 7)) & 1) === 1;
  }

  /** GPA and GVA of vCPU `vcpuId`'s GHCB page (ghcb transport), or undefined. */
  ghcbPage(vcpuId: number): { gva: Gva; gpa: Gpa } | undefined {
    if (this.ghcb === undefined || !Number.isInteger(vcpuId) || vcpuId < 0 || vcpuId >= this.ghcb.count)
      return undefined;
    const off = BigInt(vcpuId) * PAGE;
    return { gva: this.ghcb.gva + off, gpa: this.ghcb.gpa + off };
  }

  /** `pool GPA 0x…–0x… (N slots of 1096 bytes from 0x…)`, for messages. */
  describe(): string {
    return `ucall pool at GPA ${hex(this.gpa)}–${hex(this.endGpa - 1n)} (${this.slots} slots of ${UCALL_SLOT_LAYOUT.size} bytes from ${hex(this.firstSlotGpa)})`;
  }

  /** @internal */
  setImage(image: LoadedImage): void {
    this.#image = image;
  }

  private checkIndex(index: number): number {
    if (typeof index !== 'number')
      throw argTypeError('UcallPool', 'slot index', `an integer in 0–${this.slots - 1}`, index);
    if (!Number.isInteger(index) || index < 0 || index >= this.slots)
      throw new RangeError(`ucall slot index ${index} must be an integer in 0–${this.slots - 1}`);
    return index;
  }
}

function checkTarget(target: UcallInitTarget, what: string): void {
  if (typeof target !== 'object' || target === null)
    throw new TypeError(`${what} needs { vm, space, image }`);
  const { vm, space, image } = target;
  if (typeof vm !== 'object' || vm === null) throw new TypeError(`${what}: target.vm must be a Vm`);
  if (vm.closed) throw new KvmError('EBADF', what, `VM fd ${vm.fd} is closed`, { fd: vm.fd });
  if (typeof space !== 'object' || space === null || typeof space.vaddrAlloc !== 'function')
    throw new TypeError(`${what}: target.space must be an AddressSpace`);
  if (typeof image !== 'object' || image === null || typeof image.symbol !== 'function')
    throw new TypeError(`${what}: target.image must be a LoadedImage`);
  if (image.space !== space)
    throw new UcallError(
      'BAD_TARGET',
      `${what}: the image was loaded into another address space than target.space`,
      {
        image: image.image.name,
      },
    );
  for (const g of UCALL_GUEST_GLOBALS) {
    const s = image.symbols.get(g.name);
    if (s === undefined)
      throw new UcallError(
        'MISSING_GLOBAL',
        `${what}: guest image ${image.image.name} has no global ${g.name}; every image must declare UCALL_GUEST_GLOBALS`,
        { image: image.image.name, global: g.name },
      );
    if (s.size < g.size)
      throw new UcallError(
        'MISSING_GLOBAL',
        `${what}: global ${g.name} of image ${image.image.name} has ${s.size} bytes; ucall needs ${g.size}`,
        { image: image.image.name, global: g.name, size: s.size, needed: g.size },
      );
  }
}

function checkTransport(vm: Vm, transport: UcallTransport): void {
  if (!Object.hasOwn(UCALL_TRANSPORT_CODE, transport))
    throw new TypeError(
      `ucall transport ${describeValue(transport)} is not one of pio, ghcb, tdvmcall, mmio`,
    );
  const native = transportFor(vm.type);
  if (transport !== native && transport !== 'mmio')
    throw new UcallError(
      'BAD_TRANSPORT',
      `ucall transport ${transport} cannot carry ucalls for a ${vm.type} VM (its port requests go by ${native}); use ${native} or mmio`,
      { transport, type: vm.type, native },
    );
}

function zero(space: AddressSpace, gpa: bigint, bytes: number): void {
  const region = space.memory.findRegion(gpa)!;
  const off = region.offsetOf(gpa);
  region.backing.fill(0, off, off + bytes);
}

// vaddrAlloc in memslot 0, shared, whose GPA range must end below 4 GiB (the port carries 4 bytes).
function allocShared(space: AddressSpace, bytes: number, what: string): { gva: bigint; gpa: bigint } {
  const gva = space.vaddrAlloc(BigInt(bytes), { visibility: 'shared', slot: POOL_MEMSLOT });
  const gpa = space.gvaToGpa(gva);
  // vaddrAlloc hands out physically contiguous pages; check it, since the host decodes by GPA arithmetic.
  const pages = Math.ceil(bytes / 4096);
  for (let i = 1; i < pages; i++) {
    const off = BigInt(i) * PAGE;
    if (space.gvaToGpa(gva + off) !== gpa + off) {
      space.vaddrFree(gva);
      throw new UcallError('BAD_TARGET', `${what} at GVA ${hex(gva)} is not physically contiguous`, { gva });
    }
  }
  if (gpa + BigInt(bytes) >= UCALL_FAILED_LIMIT) {
    space.vaddrFree(gva);
    throw new UcallError(
      'POOL_ABOVE_4G',
      `${what} landed at GPA ${hex(gpa)}–${hex(gpa + BigInt(bytes) - 1n)}; it must end below 4 GiB (0xffffffff is the failure value of the 4-byte port write)`,
      { gpa, bytes },
    );
  }
  zero(space, gpa, bytes);
  return { gva, gpa };
}
const UCALL_FAILED_LIMIT = BELOW_4G - 1n;

function writeGlobals(pool: UcallPool, image: LoadedImage): void {
  image.writeGlobalU64(UCALL_GLOBAL.pool, pool.gva);
  image.writeGlobalU64(UCALL_GLOBAL.nrSlots, BigInt(pool.slots));
  image.writeGlobalU64(UCALL_GLOBAL.transport, BigInt(UCALL_TRANSPORT_CODE[pool.transport]));
  image.writeGlobalU64(UCALL_GLOBAL.mmioGpa, pool.mmioGpa ?? 0n);
  image.writeGlobalU64(UCALL_GLOBAL.ghcbGva, pool.ghcb?.gva ?? 0n);
  image.writeGlobalU64(UCALL_GLOBAL.ghcbGpa, pool.ghcb?.gpa ?? 0n);
  image.writeGlobalU64(UCALL_GLOBAL.ghcbCount, BigInt(pool.ghcb?.count ?? 0));
  image.writeGlobalU64(
    UCALL_GLOBAL.flags,
    VM_TYPE_TRAITS[pool.vm.type].registersGhcb && pool.ghcb ? UCALL_FLAG.REGISTER_GHCB : 0n,
  );
  image.writeGlobal(UCALL_GLOBAL.ghcbRegistered, new Uint8Array(UCALL_MAX_SLOTS / 8));
}

/**
 * Creates the VM's ucall pool (selftests' ucall_init): allocates the in-use bitmap and the slots in
 * shared memory in memslot 0 below 4 GiB, zeroes them, writes each slot's own GPA into its `gpa`
 * field, allocates one shared GHCB page per vCPU for the ghcb transport, and writes the pool's GVA,
 * slot count and transport (and MMIO GPA / GHCB pages) into THIS VM's copy of the image globals.
 * Everything is checked before anything is allocated. Throws ALREADY_INITIALIZED on a second call
 * for the same VM, BAD_TRANSPORT, MISSING_GLOBAL, BAD_MMIO_GPA, POOL_ABOVE_4G.
 */
export function ucallInit(target: UcallInitTarget, opts: UcallInitOptions = {}): UcallPool {
  checkTarget(target, 'ucallInit');
  if (typeof opts !== 'object' || opts === null) throw argTypeError('ucallInit', 'opts', 'an object', opts);
  const { vm, space, image } = target;
  const existing = pools.get(vm);
  if (existing !== undefined)
    throw new UcallError(
      'ALREADY_INITIALIZED',
      `ucallInit: VM fd ${vm.fd} already has a ${existing.describe()}; a VM gets one pool (ucallReapply rewrites the globals after an image reload)`,
      { fd: vm.fd, gpa: existing.gpa },
    );
  const slots = opts.slots ?? UCALL_DEFAULT_SLOTS;
  const layout = ucallPoolLayout(slots);
  const transport = opts.transport ?? transportFor(vm.type);
  checkTransport(vm, transport);
  let mmioGpa: bigint | undefined;
  if (opts.mmioGpa !== undefined || transport === 'mmio') {
    const slot0 = space.memory.getRegion(POOL_MEMSLOT);
    mmioGpa = opts.mmioGpa ?? slot0?.end;
    if (typeof mmioGpa !== 'bigint' || mmioGpa < 0n || mmioGpa > 0xffff_ffff_ffff_fff8n)
      throw new UcallError(
        'BAD_MMIO_GPA',
        `ucall MMIO GPA ${String(mmioGpa)} must be a bigint GPA (no memslot 0 to default from?)`,
        {
          mmioGpa,
        },
      );
    if ((mmioGpa & 7n) !== 0n)
      throw new UcallError(
        'BAD_MMIO_GPA',
        `ucall MMIO GPA ${hex(mmioGpa)} must be 8-byte aligned (an 8-byte write)`,
        {
          mmioGpa,
        },
      );
    const backed = space.memory.findRegion(mmioGpa);
    if (backed !== undefined)
      throw new UcallError(
        'BAD_MMIO_GPA',
        `ucall MMIO GPA ${hex(mmioGpa)} is backed by memslot ${backed.slot} (${hex(backed.gpa)}–${hex(backed.end - 1n)}); a write there would not exit`,
        { mmioGpa, slot: backed.slot },
      );
  }
  let ghcbCount = 0;
  if (transport === 'ghcb') {
    ghcbCount = opts.nrVcpus ?? Math.max(1, vm.vcpus.length);
    if (!Number.isInteger(ghcbCount) || ghcbCount < 1 || ghcbCount > UCALL_MAX_SLOTS)
      throw new RangeError(
        `ucallInit nrVcpus must be an integer in 1–${UCALL_MAX_SLOTS}, got ${describeValue(ghcbCount)}`,
      );
  } else if (opts.nrVcpus !== undefined && (!Number.isInteger(opts.nrVcpus) || opts.nrVcpus < 1))
    throw new RangeError(`ucallInit nrVcpus must be a positive integer, got ${describeValue(opts.nrVcpus)}`);

  const pool = allocShared(space, layout.size, `ucall pool of ${slots} slots`);
  let ghcb: { gva: bigint; gpa: bigint; count: number } | undefined;
  if (ghcbCount > 0) {
    try {
      ghcb = { ...allocShared(space, ghcbCount * 4096, `${ghcbCount} GHCB pages`), count: ghcbCount };
    } catch (e) {
      space.vaddrFree(pool.gva);
      throw e;
    }
  }
  const p = new UcallPool(target, { gva: pool.gva, gpa: pool.gpa, slots, transport, mmioGpa, ghcb });
  const region = space.memory.findRegion(p.firstSlotGpa)!;
  const view = new DataView(region.backing.buffer, region.backing.byteOffset, region.backing.byteLength);
  const base = region.offsetOf(p.firstSlotGpa);
  for (let i = 0; i < slots; i++)
    view.setBigUint64(
      base + i * UCALL_SLOT_LAYOUT.size + UCALL_SLOT_LAYOUT.gpa,
      p.firstSlotGpa + BigInt(i * UCALL_SLOT_LAYOUT.size),
      true,
    );
  writeGlobals(p, image);
  pools.set(vm, p);
  return p;
}

/**
 * Moves `from`'s ucall pool to `to`, a VM that maps the same guest memory (the destination of an
 * intra-host migration, KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM): the guest keeps its pool and the host
 * decodes its ucalls on `to`'s vCPUs. NO_POOL when `from` has none, ALREADY_INITIALIZED when `to` has one.
 */
export function ucallMovePool(from: Vm, to: Vm): UcallPool {
  const pool = pools.get(from);
  if (pool === undefined)
    throw new UcallError('NO_POOL', `ucallMovePool: VM fd ${from.fd} has no ucall pool to move`, {
      fd: from.fd,
    });
  const existing = pools.get(to);
  if (existing !== undefined)
    throw new UcallError(
      'ALREADY_INITIALIZED',
      `ucallMovePool: VM fd ${to.fd} already has a ${existing.describe()}`,
      { fd: to.fd, gpa: existing.gpa },
    );
  pools.delete(from);
  pool.moveTo(to);
  pools.set(to, pool);
  return pool;
}

/** The ucall pool of `vm`, or undefined when ucallInit was not called for it. */
export function ucallPoolOf(vm: Vm): UcallPool | undefined {
  return pools.get(vm);
}

/**
 * Rewrites the ucall globals into `target.image` after the image was (re)loaded: a reload puts fresh
 * globals in place and would otherwise leave this VM's guest without its pool (the clobbering hazard
 * of selftests' write_guest_global). NO_POOL when the VM has no pool, BAD_TARGET for another space.
 */
export function ucallReapply(target: UcallInitTarget): void {
  checkTarget(target, 'ucallReapply');
  const pool = pools.get(target.vm);
  if (pool === undefined)
    throw new UcallError(
      'NO_POOL',
      `ucallReapply: VM fd ${target.vm.fd} has no ucall pool (call ucallInit first)`,
      {
        fd: target.vm.fd,
      },
    );
  if (target.space !== pool.space)
    throw new UcallError(
      'BAD_TARGET',
      'ucallReapply: target.space is not the address space the pool was allocated in',
      {
        fd: target.vm.fd,
      },
    );
  writeGlobals(pool, target.image);
  pool.setImage(target.image);
}
