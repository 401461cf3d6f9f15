// The hypervisor contract: what every backend implements and every upper layer uses.
// Each method stands for one ioctl (named in its comment) and fails the way that ioctl fails,
// with a KvmError carrying the errno.

import type { VmType } from '@kvmtest/coco';
import type { Gpa, Gva } from '@kvmtest/guest-memory';
import type { HostPtr, SevCommand, TdxCommand } from './commands.js';
import type { Exit } from './exit.js';
import type { GuestProgram } from './guest.js';
import type { CpuidEntry, Regs, Sregs, SregsInput, XcrEntry } from './regs.js';

/** Which implementation answers: the embedded simulator or the kernel's /dev/kvm. */
export type Backend = 'sim' | 'linux';

/** `struct kvm_userspace_memory_region2` (KVM_SET_USER_MEMORY_REGION2). `memorySize` 0 deletes the slot. */
export interface UserMemoryRegion {
  /** Slot id; bits 16–31 select the address space (x86: 0 normal, 1 SMM). */
  slot: number;
  /** MEM_FLAG bits. */
  flags: number;
  guestPhysAddr: Gpa;
  memorySize: bigint;
  /** The VMM memory behind the slot (`userspace_addr`): exactly `memorySize` bytes, or undefined to delete. */
  userspace: Uint8Array | undefined;
  /** guest_memfd file descriptor when `flags` has GUEST_MEMFD. */
  guestMemfd?: number;
  guestMemfdOffset?: bigint;
}

/** `struct kvm_memory_attributes` (KVM_SET_MEMORY_ATTRIBUTES). */
export interface MemoryAttributes {
  address: Gpa;
  size: bigint;
  attributes: bigint;
  flags?: bigint;
}

/** `struct kvm_enc_region` (KVM_MEMORY_ENCRYPT_REG_REGION / UNREG_REGION). */
export interface EncRegion {
  addr: HostPtr;
  size: bigint;
}

/** Options of one KVM_RUN. */
export interface RunOptions {
  /**
   * `kvm_run.immediate_exit`: complete pending I/O, then fail KVM_RUN with EINTR (KvmError 'EINTR')
   * without entering the guest; the previous exit (`vcpu.exit`) is left as it was.
   */
  immediateExit?: boolean;
}

/** Host memory a backend hands out for memslots: page-aligned, zero-filled, a zero-copy view. */
export interface UserMemory {
  /** The whole allocation (a view of mmap'd memory on linux). Subarrays of it may back memslots. */
  readonly bytes: Uint8Array;
  /**
   * The owner is done with it. The backend frees (or recycles) it only once no memslot of an
   * open VM maps it any more, and never while a JS view of it can still be used. Idempotent.
   */
  release(): void;
}

/** The system scope: an open /dev/kvm and the process's descriptor table. */
export interface Kvm {
  readonly backend: Backend;
  /** KVM_GET_API_VERSION on /dev/kvm (12). */
  getApiVersion(): number;
  /**
   * Page-aligned, zero-filled host memory for memslots (mmap on linux); `size` a positive multiple
   * of 4096. On linux a memslot's `userspace` must be a view into memory from here (else EFAULT).
   */
  allocateUserMemory(size: number): UserMemory;
  /** KVM_CHECK_EXTENSION on /dev/kvm. KVM_CAP_VM_TYPES answers a bitmask of VM type numbers. */
  checkExtension(cap: number): number;
  /** KVM_GET_SUPPORTED_CPUID. */
  getSupportedCpuid(): CpuidEntry[];
  /** KVM_GET_DEVICE_ATTR on /dev/kvm (e.g. KVM_X86_GRP_SEV / KVM_X86_SEV_VMSA_FEATURES). */
  getDeviceAttr(group: number, attr: number): bigint;
  /** KVM_CREATE_VM with a VM type (name or kernel number). */
  createVm(type?: VmType | number): Vm;
  /** open("/dev/sev"): the descriptor SEV launch commands name in `sevFd`. ENOENT when the host has no SEV. */
  openSevDevice(): number;
  /** close(fd) for a descriptor this process opened (VM, vCPU, guest_memfd, /dev/sev). EBADF if not open. */
  closeFd(fd: number): void;
  /** True while `fd` is open in this process. */
  isFdOpen(fd: number): boolean;
  /**
   * fallocate(fd, mode, offset, len) on a descriptor this process opened — for a guest_memfd,
   * FALLOC_FL.KEEP_SIZE allocates the range and KEEP_SIZE | PUNCH_HOLE frees it (the guest then
   * finds zeroed private pages). Fails as vfs_fallocate() and kvm_gmem_fallocate() do.
   */
  fallocate(fd: number, mode: number, offset: bigint, len: bigint): void;
  /**
   * pread(fd, length, offset): up to `length` bytes at `offset` of a descriptor this process opened
   * — a binary-stats descriptor (KVM_GET_STATS_FD) reads its header, id, descriptors and live data
   * (virt/kvm/binary_stats.c: kvm_stats_read()); fewer bytes at the end, none past it. A negative
   * offset is EINVAL; VM, vCPU and guest_memfd descriptors do not allow positional reads (ESPIPE);
   * /dev/kvm and /dev/sev have no read operation (EINVAL) — fs/read_write.c: ksys_pread64().
   */
  pread(fd: number, length: number, offset: number): Uint8Array;
}

/** A VM (the VM file descriptor). */
export interface Vm extends Disposable {
  readonly kvm: Kvm;
  readonly fd: number;
  readonly type: VmType;
  /** vCPUs created on this VM, in creation order. */
  readonly vcpus: readonly Vcpu[];
  /** KVM_CHECK_EXTENSION on the VM fd. */
  checkExtension(cap: number): number;
  /** KVM_SET_USER_MEMORY_REGION2. */
  setUserMemoryRegion(region: UserMemoryRegion): void;
  /** KVM_CREATE_GUEST_MEMFD: returns the new descriptor. */
  createGuestMemfd(size: bigint, flags?: bigint): number;
  /** KVM_SET_MEMORY_ATTRIBUTES. */
  setMemoryAttributes(attrs: MemoryAttributes): void;
  /** KVM_GET_MEMORY_ATTRIBUTES is not an ioctl; this reads the attribute xarray the way debugfs would. */
  getMemoryAttributes(gpa: Gpa): bigint;
  /** KVM_CREATE_VCPU. */
  createVcpu(id: number): Vcpu;
  /** KVM_GET_STATS_FD on the VM (KVM_CAP_BINARY_STATS_FD): a new descriptor to pread the VM's statistics. */
  getStatsFd(): number;
  /** KVM_ENABLE_CAP on the VM; a Vm in `args` stands for its descriptor. */
  enableCap(cap: number, args?: readonly (number | bigint | Vm)[], flags?: number): void;
  /**
   * KVM_ENABLE_CAP issued from a host thread of its own: an ioctl that may sleep on locks (the
   * two-VM lock of KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM) lets other host tasks run while it holds them,
   * so concurrent callers contend as pthreads do (EBUSY). Same checks and errnos as enableCap.
   * Optional: a backend without it is called through enableCap.
   */
  enableCapAsync?(cap: number, args?: readonly (number | bigint | Vm)[], flags?: number): Promise<void>;
  /** KVM_MEMORY_ENCRYPT_OP on the VM fd; `undefined` is a NULL argument. Writes `error`/`hwError` back. */
  memEncryptOp(cmd: SevCommand | TdxCommand | undefined): void;
  /** KVM_MEMORY_ENCRYPT_REG_REGION. */
  memEncryptRegRegion(region: EncRegion): void;
  /** KVM_MEMORY_ENCRYPT_UNREG_REGION. */
  memEncryptUnregRegion(region: EncRegion): void;
  /**
   * Records the symbol table of the guest image loaded into this VM (what an ELF loader knows), so
   * `Guest.global(name)` resolves in this VM's copy. Not an ioctl: guest-image metadata.
   */
  setGuestSymbols(symbols: ReadonlyMap<string, Gva>): void;
  /** close() of the VM fd and its vCPUs' fds; every later call fails with EBADF. */
  close(): void;
  readonly closed: boolean;
}

/** A vCPU (the vCPU file descriptor and its `kvm_run`). */
export interface Vcpu {
  readonly vm: Vm;
  readonly id: number;
  readonly fd: number;
  /** KVM_RUN: resolves with the next exit; rejects with KvmError (EIO for a dead VM, EINVAL when not runnable…). */
  run(opts?: RunOptions): Promise<Exit>;
  /** The last exit (the mmapped `kvm_run`), until the next run. */
  readonly exit: Exit | undefined;
  /**
   * Kicks the vCPU from another host task, as a VMM sets `kvm_run.immediate_exit` and signals the
   * vCPU thread: the run in flight ends at the guest's next instruction boundary and fails with
   * EINTR (exit reason `intr`); with no run in flight, the next run fails with EINTR after
   * completing pending I/O. One kick is consumed by the EINTR it causes. Optional: a backend
   * without it cannot be kicked.
   */
  kick?(): void;
  /** KVM_GET_REGS (EINVAL once the register state is protected). */
  getRegs(): Regs;
  /** KVM_SET_REGS (EINVAL once the register state is protected). */
  setRegs(regs: Regs): void;
  /** KVM_GET_SREGS: segments, descriptor tables, control registers and EFER. */
  getSregs(): Sregs;
  /**
   * KVM_SET_SREGS (EINVAL for what kvm_is_valid_sregs() rejects, changing nothing). Segments and
   * tables left out keep their current values (SregsInput).
   */
  setSregs(sregs: SregsInput): void;
  /** KVM_SET_CPUID2. */
  setCpuid(entries: readonly CpuidEntry[]): void;
  /** KVM_GET_XSAVE: the vCPU's x87/SSE/AVX state as a 4096-byte standard-format XSAVE area (XSAVE_LAYOUT). */
  getXsave(): Uint8Array;
  /** KVM_SET_XSAVE: loads a 4096-byte XSAVE area (EINVAL for unsupported XSTATE_BV bits, a compacted header, reserved MXCSR bits). */
  setXsave(area: Uint8Array): void;
  /** KVM_GET_XCRS (KVM_CAP_XCRS): the extended control registers, i.e. XCR0. */
  getXcrs(): XcrEntry[];
  /** KVM_SET_XCRS: sets XCR0 under __kvm_set_xcr()'s rules (x87 always on, AVX needs SSE, supported bits only). */
  setXcrs(xcrs: readonly XcrEntry[]): void;
  /** KVM_GET_CPUID2. */
  getCpuid(): CpuidEntry[];
  /** KVM_GET_MSRS for one MSR. */
  getMsr(index: number): bigint;
  /** KVM_SET_MSRS for one MSR. */
  setMsr(index: number, value: bigint): void;
  /** KVM_GET_STATS_FD on the vCPU: a new descriptor to pread the vCPU's statistics. */
  getStatsFd(): number;
  /** KVM_MEMORY_ENCRYPT_OP on the vCPU fd (TDX INIT_VCPU, INIT_MEM_REGION, GET_CPUID). */
  memEncryptOp(cmd: TdxCommand | undefined): void;
  /**
   * The guest code this vCPU runs, the simulator's stand-in for loading code and setting RIP
   * (`vcpu_arch_set_entry_point`). Set before the first run.
   */
  setEntry(program: GuestProgram): void;
}

/** A KVM_RUN in flight (or a guest stopped at an exit), as a harness sees it when a case times out. */
export interface RunInFlight {
  readonly vcpuId: number;
  /** What the guest is doing, e.g. `vCPU 0: running readAsync(0x1000), 12345 operations since its last exit`. */
  describe(): string;
  /** Ends the guest for good: a pending run fails, later runs report `why`. */
  interrupt(why: string): void;
}

/** What a backend lists: its runs in flight and guests stopped at an exit. */
export type RunProbe = () => readonly RunInFlight[];

const probes: RunProbe[] = [];

/** Registers a backend's probe (once per backend module). */
export function registerRunProbe(probe: RunProbe): void {
  if (typeof probe !== 'function') throw new TypeError('registerRunProbe: probe must be a function');
  if (!probes.includes(probe)) probes.push(probe);
}

/** Every run in flight in this process, across backends (for timeout reports). */
export function runsInFlight(): RunInFlight[] {
  return probes.flatMap((p) => p());
}
