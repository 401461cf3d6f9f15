// LinuxKvm: an open /dev/kvm, and the descriptors kvm-linux opened on it.

import { isVmType, VM_TYPE_NUMBER, type VmType, vmTypeFromNumber } from '@kvmtest/coco';
import { CAP, type CpuidEntry, KvmError, type UserMemory } from '@kvmtest/kvm';
import { registerGuestAgent } from './agent/index.js';
import type { LinuxKvmCore } from './core.js';
import { entryHook } from './hooks.js';
import { allocateUserMemory } from './memory.js';
import {
  fallocateRaw,
  ioctlBuf,
  ioctlInt,
  ioctlIntRaw,
  koffi,
  lastErrno,
  preadRaw,
  sysClose,
  sysError,
  sysOpen,
} from './sys.js';
import { IOCTL, SIZE } from './uapi.js';
import type { LinuxVcpu } from './vcpu.js';
import { getCpuidList } from './vcpu.js';
import { LinuxVm } from './vm.js';

/** Options of `openLinuxKvm`. */
export interface LinuxKvmOptions {
  /** The device to open (default `/dev/kvm`). */
  path?: string;
  /** Default watchdog deadline of each KVM_RUN, in ms (default 5000); a VM's `runTimeoutMs` overrides it. */
  runTimeoutMs?: number;
}

/** Descriptors this Kvm opened, and what they are. */
type FdEntry =
  | { kind: 'vm'; vm: LinuxVm }
  | { kind: 'vcpu'; vcpu: LinuxVcpu }
  | { kind: 'guest_memfd' }
  | { kind: 'stats' }
  | { kind: 'sev' };

/** The KVM API version every kernel since 2.6.22 reports (include/uapi/linux/kvm.h: KVM_API_VERSION). */
export const KVM_API_VERSION = 12;

/** /dev/kvm opened for real. */
export class LinuxKvm implements LinuxKvmCore {
  readonly backend = 'linux' as const;
  readonly fd: number;
  readonly path: string;
  readonly runTimeoutMs: number;
  /** KVM_GET_VCPU_MMAP_SIZE. */
  readonly vcpuMmapSize: number;
  /** KVM_CAP_USER_MEMORY2: KVM_SET_USER_MEMORY_REGION2 exists. */
  readonly hasUserMemory2: boolean;
  private readonly fds = new Map<number, FdEntry>();

  constructor(options: LinuxKvmOptions = {}) {
    // Guest programs (vcpu.setEntry) run through the guest agent unless a hook is already set.
    if (!entryHook()) registerGuestAgent();
    this.path = options.path ?? '/dev/kvm';
    this.runTimeoutMs = options.runTimeoutMs ?? 5000;
    if (!(this.runTimeoutMs > 0))
      throw new RangeError(`openLinuxKvm: runTimeoutMs ${this.runTimeoutMs} must be > 0`);
    this.fd = openDevice(this.path);
    try {
      const version = ioctlIntRaw(this.fd, IOCTL.KVM_GET_API_VERSION, 0);
      if (version < 0) {
        const e = lastErrno();
        throw new KvmError(
          e.code,
          'KVM_GET_API_VERSION',
          e.code === 'ENOTTY'
            ? `${this.path} is not a KVM device (it does not answer KVM ioctls)`
            : `${this.path} refused KVM_GET_API_VERSION`,
          { path: this.path },
        );
      }
      if (version !== KVM_API_VERSION)
        throw new KvmError(
          'EINVAL',
          'KVM_GET_API_VERSION',
          `${this.path} speaks KVM API ${version}, not ${KVM_API_VERSION}`,
        );
      this.vcpuMmapSize = ioctlInt(this.fd, IOCTL.KVM_GET_VCPU_MMAP_SIZE, 0, 'KVM_GET_VCPU_MMAP_SIZE');
      this.hasUserMemory2 = ioctlIntRaw(this.fd, IOCTL.KVM_CHECK_EXTENSION, CAP.USER_MEMORY2) > 0;
    } catch (e) {
      sysClose(this.fd);
      throw e;
    }
  }

  private gate(op: string): void {
    if (!this.isOpen) throw new KvmError('EBADF', op, `${this.path} descriptor ${this.fd} is closed`);
  }

  private isOpen = true;

  getApiVersion(): number {
    this.gate('KVM_GET_API_VERSION');
    return ioctlInt(this.fd, IOCTL.KVM_GET_API_VERSION, 0, 'KVM_GET_API_VERSION');
  }

  allocateUserMemory(size: number): UserMemory {
    return allocateUserMemory(size);
  }

  checkExtension(cap: number): number {
    if (!Number.isInteger(cap) || cap < 0 || cap > 0xffff_ffff)
      throw new TypeError(`KVM_CHECK_EXTENSION: cap ${cap} must be a u32`);
    this.gate('KVM_CHECK_EXTENSION');
    return ioctlInt(this.fd, IOCTL.KVM_CHECK_EXTENSION, cap, 'KVM_CHECK_EXTENSION', `cap ${cap}`);
  }

  getSupportedCpuid(): CpuidEntry[] {
    this.gate('KVM_GET_SUPPORTED_CPUID');
    return getCpuidList(this.fd, IOCTL.KVM_GET_SUPPORTED_CPUID, 'KVM_GET_SUPPORTED_CPUID');
  }

  getDeviceAttr(group: number, attr: number): bigint {
    const op = 'KVM_GET_DEVICE_ATTR';
    this.gate(op);
    // struct kvm_device_attr { __u32 flags; __u32 group; __u64 attr; __u64 addr; } — `addr` points
    // at the u64 the kernel writes (virt/kvm/kvm_main.c: kvm_dev_ioctl → kvm_arch_dev_ioctl).
    const out = Buffer.alloc(8);
    const buf = new Uint8Array(SIZE.kvm_device_attr);
    const v = new DataView(buf.buffer);
    v.setUint32(4, group >>> 0, true);
    v.setBigUint64(8, BigInt(attr >>> 0), true);
    v.setBigUint64(16, koffi.address(out), true);
    ioctlBuf(this.fd, IOCTL.KVM_GET_DEVICE_ATTR, buf, op, `group ${group} attr ${attr}`);
    return out.readBigUInt64LE(0);
  }

  createVm(type: VmType | number = 'default'): LinuxVm {
    let num: number;
    let name: VmType | undefined;
    if (typeof type === 'number') {
      if (!Number.isInteger(type) || type < 0)
        throw new TypeError(`KVM_CREATE_VM: type ${type} must be a non-negative integer`);
      num = type;
      name = vmTypeFromNumber(type);
    } else if (typeof type === 'string') {
      if (!isVmType(type)) throw new TypeError(`KVM_CREATE_VM: unknown VM type name ${JSON.stringify(type)}`);
      name = type;
      num = VM_TYPE_NUMBER[type];
    } else throw new TypeError(`KVM_CREATE_VM: type must be a VM type name or number, got ${typeof type}`);
    this.gate('KVM_CREATE_VM');
    const fd = ioctlInt(
      this.fd,
      IOCTL.KVM_CREATE_VM,
      num,
      'KVM_CREATE_VM',
      `VM type ${String(type)} (${num})`,
    );
    // A type number the contract cannot name but the kernel accepted: report it as default's kin.
    const vm = new LinuxVm(this, fd, name ?? 'default', this.runTimeoutMs);
    this.fds.set(fd, { kind: 'vm', vm });
    return vm;
  }

  openSevDevice(): number {
    const fd = sysOpen('/dev/sev', 'open("/dev/sev")');
    this.fds.set(fd, { kind: 'sev' });
    return fd;
  }

  /** Records a descriptor a VM or vCPU opened (vCPU, guest_memfd, binary stats). */
  adoptFd(fd: number, kind: 'vcpu', vcpu: LinuxVcpu): void;
  adoptFd(fd: number, kind: 'guest_memfd' | 'stats'): void;
  adoptFd(fd: number, kind: 'vcpu' | 'guest_memfd' | 'stats', vcpu?: LinuxVcpu): void {
    this.fds.set(fd, kind === 'vcpu' ? { kind, vcpu: vcpu! } : { kind });
  }

  closeFd(fd: number): void {
    const e = this.fds.get(fd);
    if (!e)
      throw new KvmError(
        'EBADF',
        'close',
        `descriptor ${fd} is not open (or was not opened through this Kvm)`,
        { fd },
      );
    this.fds.delete(fd);
    if (e.kind === 'vm') e.vm.releaseFd();
    else if (e.kind === 'vcpu') e.vcpu.releaseFd();
    else sysClose(fd);
  }

  isFdOpen(fd: number): boolean {
    return this.fds.has(fd);
  }

  /** The entry of a descriptor this Kvm opened, else EBADF (a test cannot reach the process's own files). */
  private ownFd(fd: number, op: string): FdEntry {
    const e = this.fds.get(fd);
    if (!e)
      throw new KvmError('EBADF', op, `descriptor ${fd} is not open (or was not opened through this Kvm)`, {
        fd,
      });
    return e;
  }

  fallocate(fd: number, mode: number, offset: bigint, len: bigint): void {
    const op = 'fallocate';
    if (!Number.isInteger(fd)) throw new TypeError(`${op}: fd ${String(fd)} must be an integer`);
    if (!Number.isInteger(mode) || mode < -0x8000_0000 || mode > 0xffff_ffff)
      throw new TypeError(`${op}: mode ${String(mode)} must be a 32-bit integer`);
    for (const [name, v] of [
      ['offset', offset],
      ['len', len],
    ] as const)
      if (typeof v !== 'bigint' || v < -(1n << 63n) || v >= 1n << 63n)
        throw new TypeError(`${op}: ${name} ${String(v)} must be a bigint that fits loff_t (signed 64-bit)`);
    this.ownFd(fd, op);
    // fs/open.c: vfs_fallocate() checks in the kernel's order (EINVAL, EOPNOTSUPP, ENODEV, EFBIG…),
    // then the file's ->fallocate (virt/kvm/guest_memfd.c: kvm_gmem_fallocate()).
    if (fallocateRaw(fd, mode | 0, offset, len) < 0)
      throw sysError(
        op,
        `fallocate(${fd}, 0x${(mode >>> 0).toString(16)}, 0x${offset.toString(16)}, 0x${len.toString(16)}) failed`,
        { fd, mode, offset, len },
      );
  }

  pread(fd: number, length: number, offset: number): Uint8Array {
    const op = 'pread';
    if (!Number.isInteger(fd)) throw new TypeError(`${op}: fd ${String(fd)} must be an integer`);
    if (!Number.isSafeInteger(length))
      throw new TypeError(`${op}: length ${String(length)} must be an integer`);
    if (!Number.isSafeInteger(offset))
      throw new TypeError(`${op}: offset ${String(offset)} must be an integer`);
    if (length < 0) throw new RangeError(`${op}: length ${length} must not be negative`);
    if (length > 0x7fff_f000)
      throw new RangeError(`${op}: length ${length} exceeds MAX_RW_COUNT (0x7ffff000)`);
    this.ownFd(fd, op);
    // fs/read_write.c: ksys_pread64(): EINVAL for a negative offset, and (vfs_read) for a file with no
    // read operation, as KVM's VM, vCPU and guest_memfd files; stats files read
    // virt/kvm/binary_stats.c: kvm_stats_read().
    const buf = new Uint8Array(length);
    const n = preadRaw(fd, buf, offset);
    if (n < 0) throw sysError(op, `pread(${fd}, ${length}, ${offset}) failed`, { fd, length, offset });
    return n === length ? buf : buf.slice(0, n);
  }

  /** Closes every VM and descriptor this Kvm opened, then /dev/kvm itself. */
  close(): void {
    if (!this.isOpen) return;
    for (const [fd, e] of [...this.fds]) {
      if (e.kind === 'vm') {
        if (!e.vm.closed) e.vm.close();
      } else if (this.fds.has(fd)) this.closeFd(fd);
    }
    this.isOpen = false;
    sysClose(this.fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function openDevice(path: string): number {
  try {
    return sysOpen(path, `open("${path}")`);
  } catch (e) {
    if (!(e instanceof KvmError)) throw e;
    const why =
      e.code === 'ENOENT'
        ? `${path} does not exist: this host has no KVM (no kvm module loaded, or a container without the device)`
        : e.code === 'EACCES' || e.code === 'EPERM'
          ? `${path} exists but this process may not open it: run as root or join the group that owns it (usually "kvm")`
          : `${path} could not be opened`;
    throw new KvmError(e.code, `open("${path}")`, why, { path });
  }
}

/** Opens /dev/kvm (or `options.path`) as a Kvm; KvmError ENOENT / EACCES / ENOTTY say which and why. */
export function openLinuxKvm(options?: LinuxKvmOptions): LinuxKvm {
  return new LinuxKvm(options);
}
