// LinuxVm: a VM file descriptor, its memslots (and the host memory behind them) and its vCPUs.

import type { VmType } from '@kvmtest/coco';
import type { EncRegion, MemoryAttributes, SevCommand, TdxCommand, UserMemoryRegion, Vm } from '@kvmtest/kvm';
import { KvmError } from '@kvmtest/kvm';
import { encRegion, encryptOpVm } from './encrypt.js';
import type { LinuxKvmCore, LinuxVmCore } from './core.js';
import { hostAddressOf } from './memory.js';
import { ioctlBuf, ioctlInt, sysClose } from './sys.js';
import { IOCTL, MEM_GUEST_MEMFD, SIZE } from './uapi.js';
import { LinuxVcpu } from './vcpu.js';

/** One memslot as the VM last set it. */
export interface LinuxSlot {
  slot: number;
  flags: number;
  guestPhysAddr: bigint;
  memorySize: bigint;
  /** The host memory (kept reachable while the slot exists, so it is never unmapped under the VM). */
  userspace: Uint8Array;
}

const U64_MAX = (1n << 64n) - 1n;

function u64(name: string, v: bigint, op: string): bigint {
  if (typeof v !== 'bigint' || v < 0n || v > U64_MAX)
    throw new TypeError(`${op}: ${name} ${String(v)} must be a u64 bigint`);
  return v;
}
function u32(name: string, v: number, op: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff)
    throw new TypeError(`${op}: ${name} ${String(v)} must be a u32`);
  return v;
}

/** A VM on /dev/kvm. */
export class LinuxVm implements LinuxVmCore {
  readonly kvm: LinuxKvmCore;
  readonly fd: number;
  readonly type: VmType;
  /** Default watchdog deadline of this VM's runs, in ms. */
  runTimeoutMs: number;
  private readonly vcpuList: LinuxVcpu[] = [];
  private fdOpen = true;
  /** Memslots by full slot number (address space in bits 16–31). */
  readonly slots = new Map<number, LinuxSlot>();
  /** Successful KVM_SET_MEMORY_ATTRIBUTES calls, oldest first (for getMemoryAttributes). */
  private readonly attrLog: MemoryAttributes[] = [];
  /** The guest image's symbols (setGuestSymbols). */
  guestSymbols: ReadonlyMap<string, bigint> = new Map();
  /** Free-form state the guest agent keeps per VM. */
  agentState: unknown;

  constructor(kvm: LinuxKvmCore, fd: number, type: VmType, runTimeoutMs: number) {
    this.kvm = kvm;
    this.fd = fd;
    this.type = type;
    this.runTimeoutMs = runTimeoutMs;
  }

  get vcpus(): readonly LinuxVcpu[] {
    return this.vcpuList;
  }

  get closed(): boolean {
    return !this.fdOpen;
  }

  /** EBADF once the VM fd is closed. */
  gate(op: string): void {
    if (!this.fdOpen) throw new KvmError('EBADF', op, `VM descriptor ${this.fd} is closed`);
  }

  checkExtension(cap: number): number {
    u32('cap', cap, 'KVM_CHECK_EXTENSION');
    this.gate('KVM_CHECK_EXTENSION');
    return ioctlInt(this.fd, IOCTL.KVM_CHECK_EXTENSION, cap, 'KVM_CHECK_EXTENSION');
  }

  setUserMemoryRegion(region: UserMemoryRegion): void {
    const two = this.kvm.hasUserMemory2;
    const op = two ? 'KVM_SET_USER_MEMORY_REGION2' : 'KVM_SET_USER_MEMORY_REGION';
    if (typeof region !== 'object' || region === null) throw new TypeError(`${op}: region must be an object`);
    const slot = u32('slot', region.slot, op);
    const flags = u32('flags', region.flags, op);
    const gpa = u64('guestPhysAddr', region.guestPhysAddr, op);
    const size = u64('memorySize', region.memorySize, op);
    const us = region.userspace;
    if (us !== undefined && !(us instanceof Uint8Array))
      throw new TypeError(`${op}: userspace must be a Uint8Array or undefined`);
    if (us !== undefined && size !== 0n && BigInt(us.length) !== size)
      throw new RangeError(`${op}: userspace has ${us.length} bytes but memorySize is ${size}`);
    const gmemOffset =
      region.guestMemfdOffset === undefined ? 0n : u64('guestMemfdOffset', region.guestMemfdOffset, op);
    const gmemFd = region.guestMemfd === undefined ? 0 : u32('guestMemfd', region.guestMemfd, op);
    this.gate(op);
    const uaddr = us === undefined ? 0n : hostAddressOf(us, op);
    // struct kvm_userspace_memory_region2 { __u32 slot; __u32 flags; __u64 guest_phys_addr;
    //   __u64 memory_size; __u64 userspace_addr; __u64 guest_memfd_offset; __u32 guest_memfd;
    //   __u32 pad1; __u64 pad2[14]; }  (include/uapi/linux/kvm.h, Linux 6.8); the first 32 bytes are
    // struct kvm_userspace_memory_region. Without KVM_CAP_USER_MEMORY2 the old ioctl is used; the
    // kernel then rejects KVM_MEM_GUEST_MEMFD in `flags` itself (EINVAL, kvm_vm_ioctl()).
    const buf = new Uint8Array(two ? SIZE.kvm_userspace_memory_region2 : SIZE.kvm_userspace_memory_region);
    const v = new DataView(buf.buffer);
    v.setUint32(0, slot, true);
    v.setUint32(4, flags, true);
    v.setBigUint64(8, gpa, true);
    v.setBigUint64(16, size, true);
    v.setBigUint64(24, uaddr, true);
    if (two) {
      v.setBigUint64(32, gmemOffset, true);
      v.setUint32(40, gmemFd, true);
    }
    ioctlBuf(
      this.fd,
      two ? IOCTL.KVM_SET_USER_MEMORY_REGION2 : IOCTL.KVM_SET_USER_MEMORY_REGION,
      buf,
      op,
      `slot ${slot} flags 0x${flags.toString(16)} gpa 0x${gpa.toString(16)} size 0x${size.toString(16)}${(flags & MEM_GUEST_MEMFD) !== 0 ? ` guest_memfd ${gmemFd}` : ''}`,
    );
    if (size === 0n) this.slots.delete(slot);
    else
      this.slots.set(slot, {
        slot,
        flags,
        guestPhysAddr: gpa,
        memorySize: size,
        userspace: us ?? new Uint8Array(0),
      });
  }

  /**
   * The host bytes behind guest-physical `gpa` .. `gpa + len` in address space 0, as a view into
   * the memslot's memory, or undefined when no single memslot covers the range.
   */
  hostBytes(gpa: bigint, len: number): Uint8Array | undefined {
    for (const s of this.slots.values()) {
      if (s.slot >>> 16 !== 0) continue;
      if (gpa >= s.guestPhysAddr && gpa + BigInt(len) <= s.guestPhysAddr + s.memorySize) {
        const off = Number(gpa - s.guestPhysAddr);
        return s.userspace.subarray(off, off + len);
      }
    }
    return undefined;
  }

  createGuestMemfd(size: bigint, flags = 0n): number {
    const op = 'KVM_CREATE_GUEST_MEMFD';
    u64('size', size, op);
    u64('flags', flags, op);
    this.gate(op);
    // struct kvm_create_guest_memfd { __u64 size; __u64 flags; __u64 reserved[6]; } (Linux 6.8)
    const buf = new Uint8Array(SIZE.kvm_create_guest_memfd);
    const v = new DataView(buf.buffer);
    v.setBigUint64(0, size, true);
    v.setBigUint64(8, flags, true);
    const fd = ioctlBuf(this.fd, IOCTL.KVM_CREATE_GUEST_MEMFD, buf, op);
    this.kvm.adoptFd(fd, 'guest_memfd');
    return fd;
  }

  setMemoryAttributes(attrs: MemoryAttributes): void {
    const op = 'KVM_SET_MEMORY_ATTRIBUTES';
    const address = u64('address', attrs.address, op);
    const size = u64('size', attrs.size, op);
    const attributes = u64('attributes', attrs.attributes, op);
    const flags = u64('flags', attrs.flags ?? 0n, op);
    this.gate(op);
    // struct kvm_memory_attributes { __u64 address; __u64 size; __u64 attributes; __u64 flags; } (Linux 6.8)
    const buf = new Uint8Array(SIZE.kvm_memory_attributes);
    const v = new DataView(buf.buffer);
    v.setBigUint64(0, address, true);
    v.setBigUint64(8, size, true);
    v.setBigUint64(16, attributes, true);
    v.setBigUint64(24, flags, true);
    ioctlBuf(this.fd, IOCTL.KVM_SET_MEMORY_ATTRIBUTES, buf, op);
    this.attrLog.push({ address, size, attributes, flags });
  }

  /** The attributes the last successful KVM_SET_MEMORY_ATTRIBUTES covering `gpa` set (0 if none): the kernel has no getter ioctl. */
  getMemoryAttributes(gpa: bigint): bigint {
    this.gate('getMemoryAttributes');
    for (let i = this.attrLog.length - 1; i >= 0; i--) {
      const a = this.attrLog[i]!;
      if (gpa >= a.address && gpa < a.address + a.size) return a.attributes;
    }
    return 0n;
  }

  createVcpu(id: number): LinuxVcpu {
    if (!Number.isInteger(id) || id < 0 || id > 0xffff_ffff)
      throw new TypeError(`KVM_CREATE_VCPU: id ${id} must be a u32`);
    this.gate('KVM_CREATE_VCPU');
    const fd = ioctlInt(this.fd, IOCTL.KVM_CREATE_VCPU, id, 'KVM_CREATE_VCPU', `vCPU id ${id}`);
    let vcpu: LinuxVcpu;
    try {
      vcpu = new LinuxVcpu(this, id, fd, this.kvm.vcpuMmapSize);
    } catch (e) {
      sysClose(fd);
      throw e;
    }
    this.vcpuList.push(vcpu);
    this.kvm.adoptFd(fd, 'vcpu', vcpu);
    return vcpu;
  }

  getStatsFd(): number {
    const op = 'KVM_GET_STATS_FD';
    this.gate(op);
    // virt/kvm/kvm_main.c: kvm_vm_ioctl_get_stats_fd(): an anonymous file "kvm-vm-stats" holding a
    // reference on the VM; it is open in this process, so closeFd / isFdOpen know it.
    const fd = ioctlInt(this.fd, IOCTL.KVM_GET_STATS_FD, 0, op, 'on the VM');
    this.kvm.adoptFd(fd, 'stats');
    return fd;
  }

  enableCap(cap: number, args: readonly (number | bigint | Vm)[] = [], flags = 0): void {
    const op = 'KVM_ENABLE_CAP';
    u32('cap', cap, op);
    u32('flags', flags, op);
    if (args.length > 4) throw new RangeError(`${op}: at most 4 args, got ${args.length}`);
    this.gate(op);
    // struct kvm_enable_cap { __u32 cap; __u32 flags; __u64 args[4]; __u8 pad[64]; }
    const buf = new Uint8Array(SIZE.kvm_enable_cap);
    const v = new DataView(buf.buffer);
    v.setUint32(0, cap, true);
    v.setUint32(4, flags, true);
    args.forEach((a, i) => {
      const n = typeof a === 'object' ? BigInt(a.fd) : BigInt(a);
      v.setBigUint64(8 + 8 * i, BigInt.asUintN(64, n), true);
    });
    ioctlBuf(this.fd, IOCTL.KVM_ENABLE_CAP, buf, op, `cap ${cap}`);
  }

  memEncryptOp(cmd: SevCommand | TdxCommand | undefined): void {
    this.gate('KVM_MEMORY_ENCRYPT_OP');
    encryptOpVm(this.fd, cmd);
  }

  memEncryptRegRegion(region: EncRegion): void {
    this.gate('KVM_MEMORY_ENCRYPT_REG_REGION');
    encRegion(this.fd, true, region);
  }

  memEncryptUnregRegion(region: EncRegion): void {
    this.gate('KVM_MEMORY_ENCRYPT_UNREG_REGION');
    encRegion(this.fd, false, region);
  }

  setGuestSymbols(symbols: ReadonlyMap<string, bigint>): void {
    this.guestSymbols = new Map(symbols);
  }

  close(): void {
    this.gate('close');
    for (const v of this.vcpuList) if (v.isOpen) this.kvm.closeFd(v.fd);
    this.kvm.closeFd(this.fd);
  }

  /** The VM fd was closed through Kvm.closeFd. */
  releaseFd(): void {
    this.fdOpen = false;
    sysClose(this.fd);
    this.dropSlotsIfDead();
  }

  /**
   * Once the VM fd and every vCPU fd are closed the kernel destroys the VM: drop the memslots'
   * memory then (unmapped at GC). While a vCPU fd is open the VM lives on and can still run.
   */
  dropSlotsIfDead(): void {
    if (!this.fdOpen && this.vcpuList.every((v) => !v.isOpen)) this.slots.clear();
  }

  [Symbol.dispose](): void {
    if (this.fdOpen) this.close();
  }
}
