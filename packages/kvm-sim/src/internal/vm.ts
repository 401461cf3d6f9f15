// VM scope: memslots, guest_memfd, memory attributes, vCPU creation, capabilities, encryption ops.

import { VM_TYPE_NUMBER, type VmType } from '@kvmtest/coco';
import {
  CAP,
  type EncRegion,
  KvmError,
  tryKvm,
  MEM_FLAG,
  type MemoryAttributes,
  type SevCommand,
  type TdxCommand,
  type UserMemoryRegion,
  type Vcpu,
  type Vm,
} from '@kvmtest/kvm';
import type { ArchOps, HostPtrTarget } from './arch/ops.js';
import { checkInt, checkU64 } from './check.js';
import type { KvmCore, VmCore } from './core.js';
import { AttributeMap, GmemFile, Memslot, PAGE } from './memory.js';
import { simPreempt, simYield } from './sched.js';
import { type StatsBlock, statsPid, vmStats } from './stats.js';
import { SimVcpu } from './vcpu.js';

const U64 = (1n << 64n) - 1n;
/** KVM_MEM_MAX_NR_PAGES: (1 << 31) - 1 pages per memslot. */
const MAX_NR_PAGES = (1n << 31n) - 1n;
/**
 * MAX_NR_RESERVED_IOAPIC_PINS, the most reserved pins KVM_CAP_SPLIT_IRQCHIP takes: arch/x86/kvm/ioapic.h
 * defines it as KVM_MAX_IRQ_ROUTES, 4096 (include/linux/kvm_host.h).
 */
const MAX_RESERVED_IOAPIC_PINS = 4096n;
/** KVM_EXIT_HYPERCALL_VALID_MASK: only KVM_HC_MAP_GPA_RANGE. */
const EXIT_HYPERCALL_VALID = 1n << 12n;

function u32(name: string, v: unknown, op: string): number {
  checkInt(name, v, op);
  if (v < 0 || v > 0xffff_ffff) throw new RangeError(`${op}: ${name} ${v} does not fit in a u32`);
  return v;
}

const hex = (v: bigint | number) => `0x${v.toString(16)}`;

/** A simulated VM (the VM file and `struct kvm`). */
export class SimVm implements VmCore {
  readonly fd: number;
  readonly typeNumber: number;
  arch: unknown = undefined;
  hasPrivateMem = false;
  hasProtectedState = false;
  dead = false;
  /** kvm->created_vcpus. */
  createdVcpus = 0;
  readonly vcpuList: SimVcpu[] = [];
  private readonly vcpuIds = new Set<number>();
  /** Memslots per address space, by slot id. */
  private readonly slots: Map<number, Memslot>[];
  /** Address space 0's memslots sorted by GPA, for lookups. */
  private sorted: Memslot[] = [];
  readonly attributes = new AttributeMap();
  private hypercallExitMask = 0n;
  /** kvm->arch.max_vcpu_ids (0 = not set, KVM_CAP_MAX_VCPU_ID). */
  private maxVcpuIds = 0;
  private splitIrqchip = false;
  symbols: ReadonlyMap<string, bigint> = new Map();
  /** References keeping `struct kvm` alive: the VM fd, each vCPU fd, each guest_memfd file. */
  private refs = 1;
  /** The VM's binary statistics (KVM_GET_STATS_FD). */
  readonly stats: StatsBlock = vmStats();
  vmFdOpen = true;
  destroyed = false;
  /** Bumped whenever a change invalidates guest translations or access decisions (vCPUs compare it). */
  memGeneration = 0;

  constructor(
    readonly kvm: KvmCore,
    readonly type: VmType,
    readonly ops: ArchOps,
  ) {
    this.typeNumber = VM_TYPE_NUMBER[type];
    this.slots = Array.from({ length: kvm.config.addressSpaces }, () => new Map());
    ops.vmInit(this);
    this.fd = kvm.allocFd({ kind: 'vm', vm: this });
  }

  [Symbol.dispose](): void {
    if (this.vmFdOpen) this.close();
  }

  get vcpus(): readonly SimVcpu[] {
    return this.vcpuList;
  }

  get closed(): boolean {
    return !this.vmFdOpen;
  }

  /** kvm_arch_nr_memslot_as_ids(): KVM_MAX_NR_ADDRESS_SPACES, or 1 for a VM with private memory (no SMM). */
  get nrAddressSpaces(): number {
    return this.hasPrivateMem ? 1 : this.kvm.config.addressSpaces;
  }

  get memslotCount(): number {
    let n = 0;
    for (const m of this.slots) n += m.size;
    return n;
  }

  /** True when a memslot of this VM is backed by (part of) `buffer`. */
  mapsBuffer(buffer: ArrayBufferLike): boolean {
    for (const table of this.slots)
      for (const s of table.values()) if (s.userspace.buffer === buffer) return true;
    return false;
  }

  // ---- the ioctl gate -----------------------------------------------------------------------

  /** The fd check (EBADF) and the dead-VM gate (virt/kvm/kvm_main.c: kvm_vm_ioctl(): every VM ioctl, EIO) in that order. */
  gate(op: string): void {
    if (!this.vmFdOpen) throw new KvmError('EBADF', op, `VM descriptor ${this.fd} is closed`);
    if (this.dead)
      throw new KvmError('EIO', op, 'the VM is dead (kvm->vm_dead), virt/kvm/kvm_main.c: kvm_vm_ioctl()');
  }

  /** EBADF once the VM fd is closed, for the calls that are not ioctls (no dead-VM gate). */
  checkFd(op: string): void {
    if (!this.vmFdOpen) throw new KvmError('EBADF', op, `VM descriptor ${this.fd} is closed`);
  }

  markDead(): void {
    this.dead = true;
  }

  hypercallExitEnabled(nr: number): boolean {
    return nr >= 0 && nr < 64 && (this.hypercallExitMask & (1n << BigInt(nr))) !== 0n;
  }

  /** Invalidates every vCPU's TLB: bumps memGeneration, which each guest compares on its next access. */
  flushTlbs(): void {
    this.memGeneration++;
  }

  // ---- capabilities -------------------------------------------------------------------------

  checkExtension(cap: number): number {
    checkInt('cap', cap, 'KVM_CHECK_EXTENSION');
    this.gate('KVM_CHECK_EXTENSION');
    return this.kvm.extension(this, cap);
  }

  /**
   * KVM_ENABLE_CAP from a host thread of its own (Vm.enableCapAsync). KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM
   * runs as its steps (arch/x86/kvm/svm/sev.c: sev_vm_move_enc_context_from()): with the two-VM lock
   * held (sev_lock_two_vms() set both migration_in_progress flags) it may be preempted at the
   * points the kernel may sleep (mutex_lock_killable of both kvm->lock, kvm_lock_all_vcpus()), the
   * seeded scheduler deciding; a concurrent MOVE touching either VM then fails with EBUSY. Every
   * other cap runs as enableCap does.
   */
  enableCapAsync(cap: number, args: readonly (number | bigint | Vm)[] = [], flags = 0): Promise<void> {
    if (cap !== CAP.VM_MOVE_ENC_CONTEXT_FROM || this.ops.vmMoveEncContextSteps === undefined) {
      try {
        this.enableCap(cap, args, flags);
        return Promise.resolve();
      } catch (e) {
        return Promise.reject(e);
      }
    }
    let steps: Generator<unknown, void, void>;
    try {
      const a = this.capArgs('KVM_ENABLE_CAP', cap, args, flags);
      steps = this.ops.vmMoveEncContextSteps(this, fdArg(a[0]!));
    } catch (e) {
      return Promise.reject(e);
    }
    return this.driveMove(steps);
  }

  /** Runs MOVE steps until done, failed, or preempted (then goes on after the scheduler's turn). */
  private driveMove(steps: Generator<unknown, void, void>): Promise<void> {
    for (;;) {
      // A step runs inside tryKvm so its KvmError is built without a stack trace (~3 µs, which
      // would dominate the selftests' loops of expected failures); the error itself is rethrown.
      let failure: unknown;
      let done = false;
      tryKvm(() => {
        try {
          done = steps.next().done === true;
        } catch (e) {
          failure = e;
          throw e;
        }
      });
      if (failure !== undefined) return Promise.reject(failure);
      if (done) {
        this.flushTlbs();
        return Promise.resolve();
      }
      // A point where the kernel may sleep holding both VMs' locks: maybe another task runs now.
      if (simPreempt(LOCK_PREEMPT_ONE_IN)) return simYield().then(() => this.driveMove(steps));
    }
  }

  enableCap(cap: number, args: readonly (number | bigint | Vm)[] = [], flags = 0): void {
    const op = 'KVM_ENABLE_CAP';
    const a = this.capArgs(op, cap, args, flags);
    if (this.ops.enableCap?.(this, cap, a) === 'handled') return;
    this.enableCapChecked(op, cap, a);
  }

  /** KVM_ENABLE_CAP's argument checks, the gate and the flags check; returns args[0..3] as u64s. */
  private capArgs(op: string, cap: number, args: readonly (number | bigint | Vm)[], flags: number): bigint[] {
    checkInt('cap', cap, op);
    checkInt('flags', flags, op);
    if (!Array.isArray(args)) throw new TypeError(`${op}: args must be an array`);
    if (args.length > 4) throw new RangeError(`${op}: struct kvm_enable_cap has 4 args, got ${args.length}`);
    const a: bigint[] = [0n, 0n, 0n, 0n];
    args.forEach((v, i) => {
      if (typeof v === 'bigint') a[i] = checkU64(`args[${i}]`, v, op);
      else if (typeof v === 'number') {
        checkInt(`args[${i}]`, v, op);
        a[i] = BigInt.asUintN(64, BigInt(v));
      } else if (v !== null && typeof v === 'object' && typeof (v as Vm).fd === 'number')
        a[i] = BigInt((v as Vm).fd);
      else throw new TypeError(`${op}: args[${i}] must be a number, bigint or Vm`);
    });
    this.gate(op);
    // arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap(): flags != 0 -> EINVAL before anything cap-specific.
    if (flags !== 0) throw new KvmError('EINVAL', op, `flags ${hex(flags)} must be 0`, { cap, flags });
    return a;
  }

  /** The rest of enableCap, after the argument checks. */
  private enableCapChecked(op: string, cap: number, a: bigint[]): void {
    const arg0 = a[0]!;
    switch (cap) {
      case CAP.EXIT_HYPERCALL:
        if ((arg0 & ~EXIT_HYPERCALL_VALID) !== 0n)
          throw new KvmError(
            'EINVAL',
            op,
            `KVM_CAP_EXIT_HYPERCALL bitmask ${hex(arg0)} has bits other than 1<<12`,
          );
        this.hypercallExitMask = arg0;
        return;
      case CAP.VM_COPY_ENC_CONTEXT_FROM:
      case CAP.VM_MOVE_ENC_CONTEXT_FROM: {
        const copy = cap === CAP.VM_COPY_ENC_CONTEXT_FROM;
        const f = copy ? this.ops.vmCopyEncContextFrom : this.ops.vmMoveEncContextFrom;
        // arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap(): a NULL vendor op -> EINVAL.
        if (f === undefined)
          throw new KvmError(
            'EINVAL',
            op,
            `KVM_CAP_VM_${copy ? 'COPY' : 'MOVE'}_ENC_CONTEXT_FROM: no vendor op on ${this.ops.name}`,
          );
        f.call(this.ops, this, fdArg(arg0));
        this.flushTlbs();
        return;
      }
      case CAP.MAX_VCPU_ID: {
        // arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap(): above KVM_MAX_VCPU_IDS -> EINVAL; the value in
        // force (set by this cap, or KVM_MAX_VCPU_IDS set at the first vCPU's pre-create) is accepted
        // again; an unset one is set; anything else -> EINVAL.
        const max = this.kvm.config.maxVcpuId;
        if (arg0 > BigInt(max))
          throw new KvmError('EINVAL', op, `KVM_CAP_MAX_VCPU_ID ${arg0} exceeds KVM_MAX_VCPU_IDS ${max}`);
        const v = Number(arg0);
        if (this.maxVcpuIds === v) return;
        if (this.maxVcpuIds === 0) {
          this.maxVcpuIds = v;
          return;
        }
        throw new KvmError(
          'EINVAL',
          op,
          `KVM_CAP_MAX_VCPU_ID ${v}: the VM's maximum vCPU id is already ${this.maxVcpuIds}${this.createdVcpus > 0 && this.maxVcpuIds === max ? ' (KVM_MAX_VCPU_IDS, set when the first vCPU was created)' : ''}`,
        );
      }
      case CAP.SPLIT_IRQCHIP:
        // arch/x86/kvm/x86.c: kvm_vm_ioctl_enable_cap(): more than MAX_NR_RESERVED_IOAPIC_PINS -> EINVAL;
        // an irqchip already, or vCPUs created -> EEXIST.
        if (arg0 > MAX_RESERVED_IOAPIC_PINS)
          throw new KvmError(
            'EINVAL',
            op,
            `KVM_CAP_SPLIT_IRQCHIP: ${arg0} reserved pins exceed MAX_NR_RESERVED_IOAPIC_PINS ${MAX_RESERVED_IOAPIC_PINS}`,
          );
        if (this.splitIrqchip || this.createdVcpus > 0)
          throw new KvmError('EEXIST', op, 'KVM_CAP_SPLIT_IRQCHIP: an irqchip exists or vCPUs were created');
        this.splitIrqchip = true;
        return;
      default:
        throw new KvmError('EINVAL', op, `capability ${cap} cannot be enabled on a VM`, { cap });
    }
  }

  get hasSplitIrqchip(): boolean {
    return this.splitIrqchip;
  }

  // ---- memslots -----------------------------------------------------------------------------

  setUserMemoryRegion(region: UserMemoryRegion): void {
    const op = 'KVM_SET_USER_MEMORY_REGION2';
    if (typeof region !== 'object' || region === null) throw new TypeError(`${op}: region must be an object`);
    const slotArg = u32('slot', region.slot, op);
    const flags = u32('flags', region.flags, op);
    const gpa = checkU64('guestPhysAddr', region.guestPhysAddr, op);
    const size = checkU64('memorySize', region.memorySize, op);
    const us = region.userspace;
    if (us !== undefined && !(us instanceof Uint8Array))
      throw new TypeError(`${op}: userspace must be a Uint8Array or undefined`);
    if (us !== undefined && BigInt(us.length) !== size && size !== 0n)
      throw new RangeError(`${op}: userspace has ${us.length} bytes but memorySize is ${size}`);
    const gmemOffset =
      region.guestMemfdOffset === undefined ? 0n : checkU64('guestMemfdOffset', region.guestMemfdOffset, op);
    const gmemFd = region.guestMemfd === undefined ? undefined : u32('guestMemfd', region.guestMemfd, op);
    this.gate(op);
    const cfg = this.kvm.config;
    const fail = (why: string, details: Record<string, unknown> = {}): never => {
      throw new KvmError('EINVAL', op, why, { slot: slotArg, ...details });
    };
    // kvm_vm_ioctl_set_memory_region: slot id (low 16 bits) beyond the user slots -> EINVAL first.
    const id = slotArg & 0xffff;
    const asId = slotArg >>> 16;
    if (id >= cfg.memslotsPerAddressSpace)
      fail(`slot id ${id} is not below KVM_USER_MEM_SLOTS ${cfg.memslotsPerAddressSpace}`);
    // check_memory_region_flags.
    let valid = MEM_FLAG.LOG_DIRTY_PAGES;
    if (this.hasPrivateMem) valid |= MEM_FLAG.GUEST_MEMFD;
    if ((flags & MEM_FLAG.GUEST_MEMFD) !== 0) valid &= ~MEM_FLAG.LOG_DIRTY_PAGES;
    // READONLY: only without protected state (kvm_arch_has_readonly_mem) and not with guest_memfd.
    if (!this.hasProtectedState && (flags & MEM_FLAG.GUEST_MEMFD) === 0) valid |= MEM_FLAG.READONLY;
    if ((flags & ~valid) !== 0)
      fail(`flags ${hex(flags)} are not valid for a ${this.type} VM (valid: ${hex(valid)})`, { flags });
    // __kvm_set_memory_region general sanity checks.
    if ((size & (PAGE - 1n)) !== 0n) fail(`memorySize ${hex(size)} is not a multiple of 4 KiB`);
    if ((gpa & (PAGE - 1n)) !== 0n) fail(`guestPhysAddr ${hex(gpa)} is not 4 KiB aligned`);
    // A slot of guest memory needs host memory behind it (userspace_addr): without it every guest
    // access would fault, so the simulator refuses it the way kvm-linux refuses memory it cannot map.
    if (us === undefined && size !== 0n)
      throw new KvmError(
        'EFAULT',
        op,
        `slot ${slotArg} of ${hex(size)} bytes has no host memory (userspace is undefined)`,
        {
          slot: slotArg,
        },
      );
    if (us !== undefined && us.byteOffset % 4096 !== 0)
      fail(`userspace_addr is not 4 KiB aligned (byteOffset ${us.byteOffset})`);
    const hasGmemFlag = (flags & MEM_FLAG.GUEST_MEMFD) !== 0;
    if (hasGmemFlag && ((gmemOffset & (PAGE - 1n)) !== 0n || gmemOffset + size > U64))
      fail(`guest_memfd_offset ${hex(gmemOffset)} is unaligned or wraps`);
    // kvm_arch_nr_memslot_as_ids(): 2 with SMM, but 1 for a VM with private memory.
    const nrAs = this.nrAddressSpaces;
    if (asId >= nrAs) fail(`address space ${asId} is not below ${nrAs} for a ${this.type} VM`);
    if (gpa + size > U64) fail('guestPhysAddr + memorySize wraps');
    if (size / PAGE > MAX_NR_PAGES) fail(`${size / PAGE} pages exceed KVM_MEM_MAX_NR_PAGES`);
    const table = this.slots[asId]!;
    const old = table.get(id);
    if (size === 0n) {
      // Deleting a slot that does not exist -> EINVAL.
      if (old === undefined) fail(`slot ${id} of address space ${asId} does not exist`);
      this.removeSlot(old!);
      return;
    }
    const npages = size / PAGE;
    let change: 'create' | 'move' | 'flags';
    if (old === undefined) change = 'create';
    else {
      // Private memslots are immutable: they can only be deleted.
      if (hasGmemFlag) fail('a guest_memfd memslot cannot be modified, only deleted');
      const sameAddr =
        us !== undefined && us.buffer === old.userspace.buffer && us.byteOffset === old.userspace.byteOffset;
      if (!sameAddr) fail('userspace_addr of an existing slot cannot change');
      if (npages !== old.npages) fail('the size of an existing slot cannot change');
      if (((flags ^ old.flags) & MEM_FLAG.READONLY) !== 0)
        fail('READONLY cannot be toggled on an existing slot');
      if (gpa !== old.gpa) change = 'move';
      else if (flags !== old.flags) change = 'flags';
      else return; // nothing to change
    }
    if (change !== 'flags') {
      for (const s of table.values()) {
        if (s.id === id) continue;
        if (gpa < s.end && s.gpa < gpa + size)
          throw new KvmError(
            'EEXIST',
            op,
            `GPA range ${hex(gpa)}-${hex(gpa + size - 1n)} overlaps slot ${s.id}`,
            {
              slot: slotArg,
              other: s.id,
            },
          );
      }
      // x86 kvm_arch_prepare_memory_region: the last GFN must be within kvm_mmu_max_gfn() — host
      // MAXPHYADDR with TDP, 52 bits with shadow paging (arch/x86/kvm/mmu.h).
      const gpaBits = cfg.tdp ? cfg.maxPhysAddr : 52;
      const maxGfn = (1n << BigInt(gpaBits - 12)) - 1n;
      if (gpa / PAGE + npages - 1n > maxGfn)
        fail(
          `the slot ends beyond ${cfg.tdp ? `MAXPHYADDR ${gpaBits}` : '52 bits (shadow paging)'} (max GFN ${hex(maxGfn)})`,
        );
      this.ops.prepareMemoryRegion?.(this, gpa, size, flags);
    }
    let gmem: GmemFile | undefined;
    if (hasGmemFlag) gmem = this.gmemForBind(op, gmemFd, gmemOffset, npages);
    const backing = us ?? new Uint8Array(0);
    const slot = new Memslot(asId, id, flags, gpa, size, backing, gmem, gmemOffset);
    if (old !== undefined) this.removeSlot(old);
    if (gmem !== undefined) gmem.bindings.add(slot);
    table.set(id, slot);
    this.resort();
  }

  /** kvm_gmem_bind checks: EBADF, not a guest_memfd / another VM's -> EINVAL, range -> EINVAL, overlap -> EEXIST. */
  private gmemForBind(op: string, fd: number | undefined, offset: bigint, npages: bigint): GmemFile {
    const e = fd === undefined ? undefined : this.kvm.fdEntry(fd);
    if (e === undefined)
      throw new KvmError('EBADF', op, `guest_memfd ${String(fd)} is not an open descriptor`);
    if (e.kind !== 'guest-memfd')
      throw new KvmError('EINVAL', op, `descriptor ${fd} is a ${e.kind} file, not a guest_memfd`);
    if (e.vm !== this) throw new KvmError('EINVAL', op, `guest_memfd ${fd} belongs to another VM`);
    const g = e.gmem;
    if (offset + npages * PAGE > g.size)
      throw new KvmError(
        'EINVAL',
        op,
        `offset ${hex(offset)} + size exceeds the guest_memfd size ${hex(g.size)}`,
      );
    if (g.overlaps(offset / PAGE, offset / PAGE + npages))
      throw new KvmError(
        'EEXIST',
        op,
        `guest_memfd ${fd} range ${hex(offset)} is already bound to a memslot`,
      );
    return g;
  }

  private removeSlot(s: Memslot): void {
    this.slots[s.asId]!.delete(s.id);
    s.gmem?.bindings.delete(s);
    s.gmem = undefined;
    this.resort();
  }

  private resort(): void {
    this.sorted = [...this.slots[0]!.values()].sort((a, b) => (a.gpa < b.gpa ? -1 : 1));
    this.flushTlbs();
  }

  memslots(asId = 0): readonly Memslot[] {
    const t = this.slots[asId];
    return t === undefined ? [] : [...t.values()].sort((a, b) => a.id - b.id);
  }

  memslotAt(gpa: bigint): Memslot | undefined {
    const s = this.sorted;
    let lo = 0;
    let hi = s.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const m = s[mid]!;
      if (gpa < m.gpa) hi = mid - 1;
      else if (gpa >= m.end) lo = mid + 1;
      else return m;
    }
    return undefined;
  }

  hostPtrTarget(buffer: Uint8Array, offset: number): HostPtrTarget | undefined {
    const addr = buffer.byteOffset + offset;
    for (const s of this.sorted) {
      const u = s.userspace;
      if (u.buffer === buffer.buffer && addr >= u.byteOffset && addr < u.byteOffset + u.length)
        return { slot: s, gpa: s.gpa + BigInt(addr - u.byteOffset) };
    }
    return undefined;
  }

  // ---- guest_memfd --------------------------------------------------------------------------

  createGuestMemfd(size: bigint, flags: bigint = 0n): number {
    const op = 'KVM_CREATE_GUEST_MEMFD';
    checkU64('size', size, op);
    checkU64('flags', flags, op);
    this.gate(op);
    // Without guest_memfd, kvm_vm_ioctl() has no such case and falls through to ENOTTY.
    if (!this.kvm.config.guestMemfd)
      throw new KvmError('ENOTTY', op, 'this host has no guest_memfd (KVM_CAP_GUEST_MEMFD is 0)');
    // guest_memfd.c kvm_gmem_create: no flags are supported (6.17); size > 0 and page aligned.
    if (flags !== 0n) throw new KvmError('EINVAL', op, `flags ${hex(flags)} are not supported`);
    if (size === 0n || (size & (PAGE - 1n)) !== 0n || size > (1n << 63n) - 1n)
      throw new KvmError('EINVAL', op, `size ${hex(size)} must be a positive multiple of 4 KiB`);
    const g = new GmemFile(-1, this, size, flags);
    const fd = this.kvm.allocFd({ kind: 'guest-memfd', gmem: g, vm: this });
    (g as { fd: number }).fd = fd;
    // The file holds a reference on the VM (kvm_get_kvm in __kvm_gmem_create).
    this.refs++;
    this.kvm.liveGmem.add(g);
    return fd;
  }

  /** Last close of a guest_memfd (kvm_gmem_release): bound slots lose their private backing. */
  releaseGmem(g: GmemFile): void {
    g.released = true;
    for (const s of g.bindings) s.gmem = undefined;
    g.bindings.clear();
    g.pages.clear();
    this.kvm.liveGmem.delete(g);
    this.flushTlbs();
    this.put();
  }

  // ---- memory attributes --------------------------------------------------------------------

  setMemoryAttributes(attrs: MemoryAttributes): void {
    const op = 'KVM_SET_MEMORY_ATTRIBUTES';
    if (typeof attrs !== 'object' || attrs === null) throw new TypeError(`${op}: attrs must be an object`);
    const address = checkU64('address', attrs.address, op);
    const size = checkU64('size', attrs.size, op);
    const value = checkU64('attributes', attrs.attributes, op);
    const flags = attrs.flags === undefined ? 0n : checkU64('flags', attrs.flags, op);
    this.gate(op);
    // Without CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES, kvm_vm_ioctl() has no such case: ENOTTY.
    if (!this.kvm.config.memoryAttributes)
      throw new KvmError('ENOTTY', op, 'this host has no memory attributes (KVM_CAP_MEMORY_ATTRIBUTES is 0)');
    // kvm_main.c kvm_vm_ioctl_set_mem_attributes, in its order.
    if (flags !== 0n) throw new KvmError('EINVAL', op, `flags ${hex(flags)} must be 0`);
    const supported = BigInt(this.kvm.extension(this, CAP.MEMORY_ATTRIBUTES));
    if ((value & ~supported) !== 0n)
      throw new KvmError(
        'EINVAL',
        op,
        `attributes ${hex(value)} not supported (supported: ${hex(supported)})`,
      );
    if (size === 0n || address + size > U64) throw new KvmError('EINVAL', op, 'size is 0 or the range wraps');
    if ((address & (PAGE - 1n)) !== 0n || (size & (PAGE - 1n)) !== 0n)
      throw new KvmError('EINVAL', op, `address ${hex(address)} / size ${hex(size)} are not 4 KiB aligned`);
    const start = address / PAGE;
    const end = (address + size) / PAGE;
    if (this.attributes.uniform(start, end, value)) return;
    this.attributes.set(start, end, value);
    this.flushTlbs();
  }

  getMemoryAttributes(gpa: bigint): bigint {
    checkU64('gpa', gpa, 'getMemoryAttributes');
    this.checkFd('getMemoryAttributes');
    return this.attributes.get(gpa / PAGE);
  }

  memoryAttributes(gpa: bigint): bigint {
    return this.attributes.get(gpa / PAGE);
  }

  // ---- vCPUs --------------------------------------------------------------------------------

  createVcpu(id: number): Vcpu {
    const op = 'KVM_CREATE_VCPU';
    checkInt('id', id, op);
    this.gate(op);
    const cfg = this.kvm.config;
    // kvm_vm_ioctl_create_vcpu: id >= KVM_MAX_VCPU_IDS -> EINVAL (ids are unsigned: negative is huge).
    if (id < 0 || id >= cfg.maxVcpuId)
      throw new KvmError('EINVAL', op, `vCPU id ${id} is not below KVM_MAX_VCPU_IDS ${cfg.maxVcpuId}`, {
        id,
      });
    if (this.createdVcpus >= cfg.maxVcpus)
      throw new KvmError('EINVAL', op, `the VM already has KVM_MAX_VCPUS ${cfg.maxVcpus} vCPUs`, { id });
    // arch/x86/kvm/x86.c: kvm_arch_vcpu_precreate(): an unset max_vcpu_ids becomes KVM_MAX_VCPU_IDS
    // (and stays so even if this creation fails); an id beyond it -> EINVAL, then the vendor.
    if (this.maxVcpuIds === 0) this.maxVcpuIds = cfg.maxVcpuId;
    if (id >= this.maxVcpuIds)
      throw new KvmError(
        'EINVAL',
        op,
        `vCPU id ${id} is not below the VM's KVM_CAP_MAX_VCPU_ID ${this.maxVcpuIds}`,
      );
    this.ops.vcpuPrecreate?.(this, id);
    // Duplicate ids are found after creation in the kernel (EEXIST), after the count checks.
    if (this.vcpuIds.has(id)) throw new KvmError('EEXIST', op, `vCPU id ${id} already exists`, { id });
    this.createdVcpus++;
    const v = new SimVcpu(this, id);
    this.vcpuIds.add(id);
    this.vcpuList.push(v);
    this.refs++;
    this.ops.vcpuCreated?.(v);
    return v;
  }

  // ---- encryption ops -----------------------------------------------------------------------

  memEncryptOp(cmd: SevCommand | TdxCommand | undefined): void {
    const op = 'KVM_MEMORY_ENCRYPT_OP';
    if (cmd !== undefined && (typeof cmd !== 'object' || cmd === null))
      throw new TypeError(`${op}: cmd must be a command object or undefined (NULL)`);
    this.gate(op);
    const f = this.ops.memEncryptOp;
    // arch/x86/kvm/x86.c: kvm_arch_vm_ioctl(): a missing vendor op -> ENOTTY.
    if (f === undefined)
      throw new KvmError('ENOTTY', op, `no memory-encryption op for a ${this.type} VM on this host`);
    f.call(this.ops, this, cmd);
  }

  memEncryptRegRegion(region: EncRegion): void {
    this.region('KVM_MEMORY_ENCRYPT_REG_REGION', region, this.ops.memEncryptRegRegion);
  }

  memEncryptUnregRegion(region: EncRegion): void {
    this.region('KVM_MEMORY_ENCRYPT_UNREG_REGION', region, this.ops.memEncryptUnregRegion);
  }

  private region(op: string, region: EncRegion, f: ArchOps['memEncryptRegRegion']): void {
    if (typeof region !== 'object' || region === null) throw new TypeError(`${op}: region must be an object`);
    const size = checkU64('size', region.size, op);
    const addr = region.addr;
    if (typeof addr !== 'object' || addr === null || !(addr.buffer instanceof Uint8Array))
      throw new TypeError(`${op}: region.addr must be a HostPtr`);
    checkInt('addr.offset', addr.offset, op);
    this.gate(op);
    if (f === undefined)
      throw new KvmError('ENOTTY', op, `no memory-encryption op for a ${this.type} VM on this host`);
    f.call(this.ops, this, addr.buffer, addr.offset, size);
  }

  setGuestSymbols(symbols: ReadonlyMap<string, bigint>): void {
    if (!(symbols instanceof Map)) throw new TypeError('setGuestSymbols: symbols must be a Map');
    for (const [k, v] of symbols) {
      if (typeof k !== 'string') throw new TypeError('setGuestSymbols: symbol names must be strings');
      checkU64(`symbol ${k}`, v, 'setGuestSymbols');
    }
    this.checkFd('setGuestSymbols');
    this.symbols = new Map(symbols);
  }

  // ---- lifetime -----------------------------------------------------------------------------

  close(): void {
    if (!this.vmFdOpen) throw new KvmError('EBADF', 'close', `VM descriptor ${this.fd} is already closed`);
    for (const v of this.vcpuList) if (v.fdOpen) this.kvm.closeFd(v.fd);
    this.kvm.closeFd(this.fd);
  }

  /** The VM fd was closed. */
  releaseVmFd(): void {
    this.vmFdOpen = false;
    this.put();
  }

  /**
   * KVM_GET_STATS_FD on the VM (virt/kvm/kvm_main.c: kvm_vm_ioctl_get_stats_fd()): a read-only file
   * of the VM's statistics; it holds a reference on the VM (kvm_get_kvm).
   */
  getStatsFd(): number {
    this.gate('KVM_GET_STATS_FD');
    return this.openStatsFd(this.stats, `kvm-${statsPid()}`);
  }

  /** @internal a stats descriptor of this VM or one of its vCPUs. */
  openStatsFd(block: StatsBlock, id: string): number {
    const fd = this.kvm.allocFd({ kind: 'stats', block, id, vm: this });
    this.refs++;
    return fd;
  }

  /** A stats fd was closed (kvm_vm_stats_release / kvm_vcpu_stats_release -> kvm_put_kvm). */
  statsFdReleased(): void {
    this.put();
  }

  /** A vCPU fd was closed (kvm_vcpu_release -> kvm_put_kvm). */
  vcpuFdReleased(): void {
    this.put();
  }

  private put(): void {
    if (--this.refs > 0) return;
    // kvm_destroy_vm: vendor destroy, vCPUs freed, memslots freed.
    this.destroyed = true;
    for (const v of this.vcpuList) {
      this.ops.vcpuDestroy?.(v);
      v.destroy();
    }
    this.ops.vmDestroy?.(this);
    for (const t of this.slots) {
      for (const s of t.values()) s.gmem?.bindings.delete(s);
      t.clear();
    }
    this.sorted = [];
    this.kvm.liveVms.delete(this);
  }
}

/** One lock point in this many preempts the MOVE holding the two-VM lock (the seeded scheduler draws). */
const LOCK_PREEMPT_ONE_IN = 256;

function fdArg(v: bigint): number {
  // args[0] is an int fd; values beyond int range cannot name a descriptor.
  return v > 0x7fff_ffffn ? -1 : Number(v);
}
