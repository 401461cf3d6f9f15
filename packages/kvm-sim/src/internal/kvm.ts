// System scope: one simulated process with /dev/kvm open, and its descriptor table.

import { isVmType, VM_TYPE_NUMBER, type VmType, vmTypeFromNumber } from '@kvmtest/coco';
import {
  CAP,
  type CpuidEntry,
  describeValue,
  type Kvm,
  KvmError,
  MEMORY_ATTRIBUTE,
  type Vm,
} from '@kvmtest/kvm';
import { hostArchOps } from './arch/dispatch.js';
import type { ArchKvm, ArchOps, ArchVm, FdKind } from './arch/ops.js';
import { type ResolvedConfig, resolveConfig, type SimConfig, supportedCpuid } from './config.js';
import type { GmemFile } from './memory.js';
import { SimVm } from './vm.js';
import type { SimVcpu } from './vcpu.js';

/** One open descriptor: its kind and the object behind it. */
export type FdEntry =
  | { kind: 'kvm' }
  | { kind: 'vm'; vm: SimVm }
  | { kind: 'vcpu'; vcpu: SimVcpu }
  | { kind: 'guest-memfd'; gmem: GmemFile; vm: SimVm }
  | { kind: 'sev-device' };

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

const U64 = (1n << 64n) - 1n;

/** Stdin, stdout and stderr hold 0–2, as in a real process. */
const FIRST_FD = 3;

/** The simulated /dev/kvm and the process around it. */
export class SimKvm implements Kvm, ArchKvm {
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
      // spec §1.2: both are in x86's unconditional "r = 1" list, even where the op is missing.
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
        // kvm_main.c kvm_supported_mem_attributes: PRIVATE on /dev/kvm, on a VM only with private memory.
        return vm === undefined || vm.hasPrivateMem ? Number(MEMORY_ATTRIBUTE.PRIVATE) : 0;
      case CAP.GUEST_MEMFD:
        // kvm_main.c (6.17): `!kvm || kvm_arch_has_private_mem(kvm)`.
        return vm === undefined || vm.hasPrivateMem ? 1 : 0;
      case CAP.VM_TYPES:
        return this.vmTypesMask;
      // KVM_GET_STATS_FD and KVM_PRE_FAULT_MEMORY are not modelled: say so rather than advertise them.
      case CAP.BINARY_STATS_FD:
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
      default:
        break;
    }
  }

  isFdOpen(fd: number): boolean {
    return this.fds.has(fd);
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

/** Throws TypeError unless `v` is an integer (the argument mistakes that are not kernel errors). */
export function checkInt(name: string, v: unknown, op: string): asserts v is number {
  if (typeof v !== 'number' || !Number.isInteger(v))
    throw new TypeError(
      `${op}: ${name} must be an integer, got ${typeof v === 'number' ? String(v) : describeValue(v)}`,
    );
}

/** Throws TypeError unless `v` is a bigint, RangeError unless it fits in a u64; returns it. */
export function checkU64(name: string, v: unknown, op: string): bigint {
  if (typeof v !== 'bigint') throw new TypeError(`${op}: ${name} must be a bigint, got ${describeValue(v)}`);
  if (v < 0n || v > U64) throw new RangeError(`${op}: ${name} 0x${v.toString(16)} does not fit in a u64`);
  return v;
}
