// System scope: one simulated process with /dev/kvm open, and its descriptor table.

import { isVmType, VM_TYPE_NUMBER, type VmType, vmTypeFromNumber } from '@kvmtest/coco';
import {
  CAP,
  type CpuidEntry,
  describeValue,
  FALLOC_FL,
  KvmError,
  MEMORY_ATTRIBUTE,
  type UserMemory,
  type Vm,
} from '@kvmtest/kvm';
import { hostArchOps } from './arch-registry.js';
import { checkInt } from './check.js';
import type { ArchOps, ArchVm, FdKind } from './arch/ops.js';
import { type ResolvedConfig, resolveConfig, type SimConfig, supportedCpuid } from './config.js';
import type { FdEntryOf, KvmCore } from './core.js';
import type { GmemFile } from './memory.js';
import { UserMemoryPool } from './user-memory.js';
import { SimVm } from './vm.js';
import type { SimVcpu } from './vcpu.js';

/** FALLOC_FL_MODE_MASK (include/linux/falloc.h): the mutually exclusive operation bits. */
const FALLOC_MODE_MASK =
  FALLOC_FL.PUNCH_HOLE |
  FALLOC_FL.COLLAPSE_RANGE |
  FALLOC_FL.ZERO_RANGE |
  FALLOC_FL.INSERT_RANGE |
  FALLOC_FL.UNSHARE_RANGE |
  FALLOC_FL.WRITE_ZEROES;
/** MAX_LFS_FILESIZE on 64-bit: the largest offset + len vfs_fallocate() lets through (else EFBIG). */
const MAX_LFS_FILESIZE = (1n << 63n) - 1n;

/** One open descriptor: its kind and the object behind it. */
export type FdEntry = FdEntryOf<SimVm, SimVcpu>;

/** Counts of what a simulated process holds (for leak checks). */
export interface SimStats {
  /** Open descriptors, /dev/kvm included. */
  readonly openFds: number;
  /** VMs not yet destroyed (a VM lives while its fd, a vCPU fd or a guest_memfd refers to it). */
  readonly liveVms: number;
  /** vCPUs of live VMs. */
  readonly liveVcpus: number;
  /** guest_memfd files not yet released. */
  readonly gmemFiles: number;
  /** Bytes allocated in guest_memfd files. */
  readonly gmemBytes: number;
  /** Memslots of live VMs. */
  readonly memslots: number;
}

/** KVM_CAP_X86_SMM and KVM_CAP_MULTI_ADDRESS_SPACE (include/uapi/linux/kvm.h). */
const CAP_X86_SMM = 117;
const CAP_MULTI_ADDRESS_SPACE = 118;

/** Stdin, stdout and stderr hold 0–2, as in a real process. */
const FIRST_FD = 3;

/** The simulated /dev/kvm and the process around it. */
export class SimKvm implements KvmCore {
  readonly backend = 'sim' as const;
  readonly config: ResolvedConfig;
  readonly fd: number;
  readonly ops: ReadonlyMap<VmType, ArchOps>;
  /** KVM_CAP_VM_TYPES: configured types whose implementation is available. */
  readonly vmTypesMask: number;
  readonly cpuid: readonly CpuidEntry[];
  private readonly fds = new Map<number, FdEntry>();
  private readonly hostStates = new Map<string, unknown>();
  /** VMs not yet destroyed. */
  readonly liveVms = new Set<SimVm>();
  /** guest_memfd files not yet released. */
  readonly liveGmem = new Set<GmemFile>();

  constructor(config?: SimConfig) {
    this.config = resolveConfig(config);
    this.ops = hostArchOps(this.config);
    let mask = 0;
    for (const [t, o] of this.ops) if (o.available) mask |= 1 << VM_TYPE_NUMBER[t];
    this.vmTypesMask = mask;
    this.cpuid = Object.freeze(supportedCpuid(this.config).map((e) => Object.freeze(e)));
    this.fd = this.allocFd({ kind: 'kvm' });
  }

  // ---- descriptor table ---------------------------------------------------------------------

  /** Installs `entry` at the lowest free descriptor (POSIX open/dup rule). */
  allocFd(entry: FdEntry): number {
    let fd = FIRST_FD;
    while (this.fds.has(fd)) fd++;
    this.fds.set(fd, entry);
    return fd;
  }

  fdEntry(fd: number): FdEntry | undefined {
    return this.fds.get(fd);
  }

  fdKind(fd: number): FdKind | undefined {
    return this.fds.get(fd)?.kind;
  }

  vmByFd(fd: number): ArchVm | undefined {
    const e = this.fds.get(fd);
    return e?.kind === 'vm' ? e.vm : undefined;
  }

  typeAvailable(type: VmType): boolean {
    return (this.vmTypesMask & (1 << VM_TYPE_NUMBER[type])) !== 0;
  }

  hostState<T>(key: string, init: () => T): T {
    if (!this.hostStates.has(key)) this.hostStates.set(key, init());
    return this.hostStates.get(key) as T;
  }

  private requireOpen(op: string): void {
    if (!this.fds.has(this.fd)) throw new KvmError('EBADF', op, `/dev/kvm descriptor ${this.fd} is closed`);
  }

  // ---- Kvm ----------------------------------------------------------------------------------

  /** KVM_GET_API_VERSION: KVM_API_VERSION (include/uapi/linux/kvm.h). */
  getApiVersion(): number {
    this.requireOpen('KVM_GET_API_VERSION');
    return 12;
  }

  private readonly userMemory = new UserMemoryPool({
    mapsBuffer: (buf) => {
      for (const vm of this.liveVms) if (vm.mapsBuffer(buf)) return true;
      return false;
    },
  });

  /** Zero-filled, page-sized memory for memslots, recycled once no live VM's memslot maps it. */
  allocateUserMemory(size: number): UserMemory {
    return this.userMemory.allocate(size);
  }

  checkExtension(cap: number): number {
    checkInt('cap', cap, 'KVM_CHECK_EXTENSION');
    this.requireOpen('KVM_CHECK_EXTENSION');
    return this.extension(undefined, cap);
  }

  /** KVM_CHECK_EXTENSION on /dev/kvm (`vm` undefined) or a VM (x86.c + kvm_main.c generic answers). */
  extension(vm: SimVm | undefined, cap: number): number {
    const ops = vm?.ops;
    const override = ops?.checkExtension?.(vm, cap);
    if (override !== undefined) return override;
    const c = this.config;
    switch (cap) {
      case CAP.USER_MEMORY:
      case CAP.USER_MEMORY2:
      case CAP.IMMEDIATE_EXIT:
      case CAP.SPLIT_IRQCHIP:
      case CAP.MEMORY_FAULT_INFO:
        return 1;
      // x86.c: kvm_vm_ioctl_check_extension(): KVM_CAP_XSAVE and KVM_CAP_XCRS follow the host's XSAVE.
      case CAP.XSAVE:
      case CAP.XCRS:
        return 1;
      // arch/x86/kvm/x86.c: kvm_vm_ioctl_check_extension(): both are in x86's unconditional "r = 1" list, even where the op is missing.
      case CAP.VM_COPY_ENC_CONTEXT_FROM:
      case CAP.VM_MOVE_ENC_CONTEXT_FROM:
        return 1;
      case CAP.NR_VCPUS:
        return Math.min(c.onlineCpus, c.maxVcpus);
      case CAP.MAX_VCPUS:
        return c.maxVcpus;
      case CAP.MAX_VCPU_ID:
        return c.maxVcpuId;
      case CAP.NR_MEMSLOTS:
        return c.memslotsPerAddressSpace;
      case CAP.EXIT_HYPERCALL:
        // KVM_EXIT_HYPERCALL_VALID_MASK: only KVM_HC_MAP_GPA_RANGE can be forwarded.
        return 1 << 12;
      case CAP.MEMORY_ATTRIBUTES:
        // Without CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES the case is not compiled in: 0.
        if (!c.memoryAttributes) return 0;
        // kvm_main.c kvm_supported_mem_attributes: PRIVATE on /dev/kvm, on a VM only with private memory.
        return vm === undefined || vm.hasPrivateMem ? Number(MEMORY_ATTRIBUTE.PRIVATE) : 0;
      case CAP.GUEST_MEMFD:
        // Without guest_memfd the case is not compiled in: 0.
        if (!c.guestMemfd) return 0;
        // kvm_main.c (6.17): `!kvm || kvm_arch_has_private_mem(kvm)`.
        return vm === undefined || vm.hasPrivateMem ? 1 : 0;
      case CAP_X86_SMM:
        // x86.c kvm_vm_ioctl_check_extension: 0 without CONFIG_KVM_SMM, else has_emulated_msr(SMBASE),
        // which SEV-ES/SNP guests (svm.c: svm_has_emulated_msr()) and TDs (vmx/tdx.c) answer false.
        if (!c.smm) return 0;
        return vm === undefined || !['sev-es', 'sev-snp', 'tdx'].includes(vm.type) ? 1 : 0;
      case CAP_MULTI_ADDRESS_SPACE:
        // kvm_main.c kvm_vm_ioctl_check_extension_generic: only when KVM_MAX_NR_ADDRESS_SPACES > 1;
        // on a VM, kvm_arch_nr_memslot_as_ids() (1 for a VM with private memory).
        if (c.addressSpaces < 2) return 0;
        return vm === undefined ? c.addressSpaces : vm.nrAddressSpaces;
      case CAP.VM_TYPES:
        return this.vmTypesMask;
      // KVM_GET_STATS_FD and KVM_PRE_FAULT_MEMORY are not modelled: say so rather than advertise them.
      // virt/kvm/kvm_main.c: kvm_vm_ioctl_check_extension_generic(): KVM_CAP_BINARY_STATS_FD is 1.
      case CAP.BINARY_STATS_FD:
        return 1;
      case CAP.PRE_FAULT_MEMORY:
        return 0;
      default:
        return 0;
    }
  }

  getSupportedCpuid(): CpuidEntry[] {
    this.requireOpen('KVM_GET_SUPPORTED_CPUID');
    return this.cpuid.map((e) => ({ ...e }));
  }

  getDeviceAttr(group: number, attr: number): bigint {
    checkInt('group', group, 'KVM_GET_DEVICE_ATTR');
    checkInt('attr', attr, 'KVM_GET_DEVICE_ATTR');
    this.requireOpen('KVM_GET_DEVICE_ATTR');
    // x86.c kvm_x86_dev_get_attr: a non-zero group goes to the vendor's dev_get_attr.
    const seen = new Set<ArchOps>();
    for (const o of this.ops.values()) {
      if (seen.has(o) || o.deviceAttr === undefined) continue;
      seen.add(o);
      const v = o.deviceAttr(this, group, attr);
      if (v !== undefined) return v;
    }
    throw new KvmError('ENXIO', 'KVM_GET_DEVICE_ATTR', `group ${group} attribute ${attr} is not supported`, {
      group,
      attr,
    });
  }

  createVm(type: VmType | number = 'default'): Vm {
    let name: VmType | undefined;
    if (typeof type === 'number') {
      if (!Number.isInteger(type)) throw new TypeError(`KVM_CREATE_VM: type ${type} must be an integer`);
      name = vmTypeFromNumber(type);
    } else if (typeof type === 'string') {
      if (!isVmType(type)) throw new TypeError(`KVM_CREATE_VM: unknown VM type name ${describeValue(type)}`);
      name = type;
    } else throw new TypeError(`KVM_CREATE_VM: type must be a VM type name or number, got ${typeof type}`);
    this.requireOpen('KVM_CREATE_VM');
    // x86.c kvm_arch_init_vm: a type >= 32 or not in supported_vm_types -> EINVAL.
    if (name === undefined || !this.typeAvailable(name))
      throw new KvmError('EINVAL', 'KVM_CREATE_VM', `VM type ${String(type)} is not supported by this host`, {
        type,
        supported: this.vmTypesMask,
      });
    const vm = new SimVm(this, name, this.ops.get(name)!);
    this.liveVms.add(vm);
    return vm;
  }

  openSevDevice(): number {
    let sev = false;
    for (const o of this.ops.values()) if (o.available && o.sevDevice) sev = true;
    if (!sev) throw new KvmError('ENOENT', 'open("/dev/sev")', 'this host has no SEV firmware device');
    return this.allocFd({ kind: 'sev-device' });
  }

  closeFd(fd: number): void {
    checkInt('fd', fd, 'close');
    const e = this.fds.get(fd);
    if (e === undefined) throw new KvmError('EBADF', 'close', `descriptor ${fd} is not open`);
    this.fds.delete(fd);
    switch (e.kind) {
      case 'vm':
        e.vm.releaseVmFd();
        break;
      case 'vcpu':
        e.vcpu.releaseFd();
        break;
      case 'guest-memfd':
        e.vm.releaseGmem(e.gmem);
        break;
      case 'stats':
        e.vm.statsFdReleased();
        break;
      default:
        break;
    }
  }

  isFdOpen(fd: number): boolean {
    return this.fds.has(fd);
  }

  pread(fd: number, length: number, offset: number): Uint8Array {
    const op = 'pread';
    checkInt('fd', fd, op);
    checkInt('length', length, op);
    checkInt('offset', offset, op);
    if (length < 0) throw new RangeError(`${op}: length ${length} must not be negative`);
    // fs/read_write.c: ksys_pread64(): a negative position is EINVAL before the descriptor is looked
    // up; a file without FMODE_PREAD is ESPIPE. KVM's VM and vCPU files and guest_memfd are pseudo
    // files made without it (anon_inode_getfile(), alloc_file_pseudo()); only the stats file sets it
    // (virt/kvm/kvm_main.c: kvm_vm_ioctl_get_stats_fd()). /dev/kvm and /dev/sev are opened like any
    // device (positional reads allowed) but have no read operation: vfs_read() gives EINVAL.
    if (offset < 0) throw new KvmError('EINVAL', op, `offset ${offset} is negative`);
    const e = this.fds.get(fd);
    if (e === undefined) throw new KvmError('EBADF', op, `descriptor ${fd} is not open`);
    if (e.kind === 'kvm' || e.kind === 'sev-device')
      throw new KvmError('EINVAL', op, `descriptor ${fd} (${e.kind}) has no read operation`);
    if (e.kind !== 'stats')
      throw new KvmError('ESPIPE', op, `descriptor ${fd} (${e.kind}) does not allow positional reads`);
    // virt/kvm/binary_stats.c: kvm_stats_read(): the live contents from `offset`, at most `length` bytes.
    const img = e.block.image(e.id);
    const start = Math.min(offset, img.length);
    return img.slice(start, Math.min(img.length, start + length));
  }

  fallocate(fd: number, mode: number, offset: bigint, len: bigint): void {
    const op = 'fallocate';
    checkInt('fd', fd, op);
    checkInt('mode', mode, op);
    if (typeof offset !== 'bigint')
      throw new TypeError(`${op}: offset must be a bigint, got ${typeof offset}`);
    if (typeof len !== 'bigint') throw new TypeError(`${op}: len must be a bigint, got ${typeof len}`);
    const e = this.fds.get(fd);
    if (e === undefined) throw new KvmError('EBADF', op, `descriptor ${fd} is not open`);
    // fs/open.c: vfs_fallocate(), in its order.
    if (offset < 0n || len <= 0n)
      throw new KvmError('EINVAL', op, `offset ${offset} must be >= 0 and len ${len} > 0`);
    if ((mode & ~(FALLOC_MODE_MASK | FALLOC_FL.KEEP_SIZE)) !== 0)
      throw new KvmError('EOPNOTSUPP', op, `mode 0x${mode.toString(16)} has unknown bits`);
    const kind = mode & FALLOC_MODE_MASK;
    const keep = (mode & FALLOC_FL.KEEP_SIZE) !== 0;
    const exclusive = kind === 0 || (kind & (kind - 1)) === 0;
    if (
      !exclusive ||
      (kind === FALLOC_FL.PUNCH_HOLE && !keep) ||
      ((kind === FALLOC_FL.COLLAPSE_RANGE ||
        kind === FALLOC_FL.INSERT_RANGE ||
        kind === FALLOC_FL.WRITE_ZEROES) &&
        keep)
    )
      throw new KvmError('EOPNOTSUPP', op, `mode 0x${mode.toString(16)} is not a valid combination`);
    // The stats file is opened read-only (O_RDONLY in kvm_vm_ioctl_get_stats_fd()): no FMODE_WRITE.
    if (e.kind === 'stats')
      throw new KvmError('EBADF', op, `descriptor ${fd} (stats) is open for reading only`);
    // KVM's VM and vCPU descriptors are anonymous inodes, /dev/sev a character device: not files.
    if (e.kind !== 'guest-memfd')
      throw new KvmError('ENODEV', op, `descriptor ${fd} (${e.kind}) is not a regular file or block device`);
    if (offset + len > MAX_LFS_FILESIZE)
      throw new KvmError(
        'EFBIG',
        op,
        `offset + len 0x${(offset + len).toString(16)} exceeds the largest file size`,
      );
    // virt/kvm/guest_memfd.c: kvm_gmem_fallocate().
    const g = e.gmem;
    if (!keep)
      throw new KvmError('EOPNOTSUPP', op, 'guest_memfd needs FALLOC_FL_KEEP_SIZE (its size is fixed)');
    if ((mode & ~(FALLOC_FL.KEEP_SIZE | FALLOC_FL.PUNCH_HOLE)) !== 0)
      throw new KvmError(
        'EOPNOTSUPP',
        op,
        `guest_memfd supports only allocation and PUNCH_HOLE, not mode 0x${mode.toString(16)}`,
      );
    if ((offset | len) & 0xfffn)
      throw new KvmError(
        'EINVAL',
        op,
        `offset 0x${offset.toString(16)} and len 0x${len.toString(16)} must be page aligned`,
      );
    const first = Number(offset / 4096n);
    if ((mode & FALLOC_FL.PUNCH_HOLE) !== 0) {
      // kvm_gmem_punch_hole(): the range's pages are truncated (past the end there is nothing to free)
      // and every bound VM's mappings of them are zapped.
      let stop = offset + len;
      if (stop > g.size) stop = g.size;
      const end = Number(stop / 4096n);
      if (end > first) g.punchHole(first, end);
      e.vm.flushTlbs();
      return;
    }
    // kvm_gmem_allocate(): the file is immutable in size.
    if (offset + len > g.size)
      throw new KvmError(
        'EINVAL',
        op,
        `range 0x${offset.toString(16)}+0x${len.toString(16)} is past the guest_memfd size 0x${g.size.toString(16)}`,
      );
    g.allocate(first, Number((offset + len) / 4096n));
  }

  stats(): SimStats {
    let vcpus = 0;
    let memslots = 0;
    for (const vm of this.liveVms) {
      vcpus += vm.vcpus.length;
      memslots += vm.memslotCount;
    }
    let bytes = 0;
    for (const g of this.liveGmem) bytes += g.bytes;
    return Object.freeze({
      openFds: this.fds.size,
      liveVms: this.liveVms.size,
      liveVcpus: vcpus,
      gmemFiles: this.liveGmem.size,
      gmemBytes: bytes,
      memslots,
    });
  }
}
