// Small fakes of the views, so the SEV model can be tested without the core (tests only).

import type { CpuidRegs, VmType } from '@kvmtest/coco';
import {
  copySregs,
  type HostPtr,
  KvmError,
  type Regs,
  SEV_CMD,
  type SevCommand,
  type Sregs,
  zeroRegs,
} from '@kvmtest/kvm';
import { resetSregs } from '../sregs.js';
import { SevPlatform, type SevPlatformOptions } from './platform.js';
import type { SevVcpuState, SevVmState } from './state.js';
import type {
  HostLocation,
  SevGuestCpuView,
  SevHostView,
  SevVcpuView,
  SevVmView,
  VmFdLookup,
} from './views.js';

/** A fake vCPU. */
export class FakeVcpu implements SevVcpuView {
  readonly sev: SevVcpuState;
  guestDebug = false;
  dr7 = 0x400n;
  readonly r: Regs = zeroRegs();
  readonly s: Sregs = resetSregs('svm');
  constructor(
    readonly id: number,
    p: SevPlatform,
  ) {
    this.sev = p.newVcpuState();
  }
  regs(): Regs {
    return { ...this.r };
  }
  sregs(): Sregs {
    return copySregs(this.s);
  }
}

/** A memslot of a fake VM. */
export interface FakeSlot {
  gpa: bigint;
  mem: Uint8Array;
}

/** A fake VM. */
export class FakeVm implements SevVmView {
  readonly sev: SevVmState;
  dead = false;
  closed = false;
  readonly list: FakeVcpu[] = [];
  /** vCPUs whose creation is "in flight" (created but not online). */
  inflight = 0;
  readonly slots: FakeSlot[] = [];
  /** The MSRs KVM would emulate for the fake guest (others #GP). */
  readonly msrs = new Map<number, bigint>([[0x10, 0x1122334455667788n]]);
  constructor(
    readonly host: FakeHost,
    readonly fd: number,
    readonly type: VmType,
  ) {
    this.sev = host.platform.newVmState(type);
  }
  get createdVcpus(): number {
    return this.list.length + this.inflight;
  }
  get onlineVcpus(): number {
    return this.list.length;
  }
  vcpus(): readonly SevVcpuView[] {
    return this.list;
  }
  markDead(): void {
    this.dead = true;
  }
  hostToGpa(buffer: Uint8Array, offset: number): bigint | undefined {
    const s = this.slots.find((x) => x.mem === buffer);
    return s === undefined ? undefined : s.gpa + BigInt(offset);
  }
  /** KVM_CREATE_VCPU (the SEV model has no say, except the GHCB MSR reset). */
  addVcpu(id = this.list.length): FakeVcpu {
    const v = new FakeVcpu(id, this.host.platform);
    this.list.push(v);
    this.host.platform.vcpuReset(this, v);
    return v;
  }
  /** KVM_SET_USER_MEMORY_REGION with a fresh backing. */
  addSlot(gpa: bigint, size: number): Uint8Array {
    const mem = new Uint8Array(size);
    this.slots.push({ gpa, mem });
    return mem;
  }
  /** Maps another VM's backing at the same GPA (a destination sharing the source's memory). */
  shareSlot(gpa: bigint, mem: Uint8Array): void {
    this.slots.push({ gpa, mem });
  }
  /** KVM_MEMORY_ENCRYPT_OP with the dead gate the core applies first. */
  op(cmd: SevCommand | undefined): void {
    this.gate();
    this.host.platform.memEncryptOp(this, cmd);
  }
  /** Command with data; returns the command object (to read `error`). */
  cmd(id: number, data?: unknown, sevFd?: number): SevCommand {
    const c: SevCommand = { id, data, error: 0, sevFd: sevFd ?? this.host.sevFd };
    this.op(c);
    return c;
  }
  move(src: FakeVm | number): void {
    this.gate();
    this.host.platform.moveEncContextFrom(this, typeof src === 'number' ? src : src.fd);
  }
  copy(src: FakeVm | number): void {
    this.gate();
    this.host.platform.copyEncContextFrom(this, typeof src === 'number' ? src : src.fd);
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.host.fds.delete(this.fd);
    this.host.platform.vmClosed(this);
  }
  gate(): void {
    if (this.closed) throw new Error('EBADF: closed VM used');
    if (this.dead) {
      // virt/kvm/kvm_main.c: kvm_vm_ioctl(): the generic dead-VM gate.
      throw new KvmError('EIO', 'ioctl', 'VM is dead');
    }
  }
  /** A guest CPU view for vCPU `i` that resolves GPAs through this VM's slots. */
  cpu(i = 0): SevGuestCpuView {
    return {
      vm: this,
      vcpu: this.list[i]!,
      resolveGpa: (gpa): HostLocation | undefined => {
        for (const s of this.slots)
          if (gpa >= s.gpa && gpa < s.gpa + BigInt(s.mem.length))
            return { buffer: s.mem, offset: Number(gpa - s.gpa) };
        return undefined;
      },
      cpuid: (leaf, sub) => ({ eax: leaf ^ 0x1111, ebx: sub + 2, ecx: 3, edx: 4 }),
      rdmsr: (msr) => this.msrs.get(msr),
      wrmsr: (msr, v) => {
        if (!this.msrs.has(msr)) return false;
        this.msrs.set(msr, v);
        return true;
      },
    };
  }
}

/** A fake process: fd table with VMs, one /dev/sev, one other file. */
export class FakeHost implements SevHostView {
  readonly platform: SevPlatform;
  readonly fds = new Map<number, FakeVm | 'sev' | 'other'>();
  #next = 3;
  readonly sevFd: number;
  readonly otherFd: number;
  constructor(opts: SevPlatformOptions = {}) {
    this.platform = new SevPlatform(this, opts);
    // The tests read the firmware's command log.
    this.platform.firmware.logCommands = true;
    this.sevFd = this.#alloc('sev');
    this.otherFd = this.#alloc('other');
  }
  #alloc(v: FakeVm | 'sev' | 'other'): number {
    const fd = this.#next++;
    this.fds.set(fd, v);
    return fd;
  }
  createVm(type: VmType = 'default'): FakeVm {
    const fd = this.#next++;
    const vm = new FakeVm(this, fd, type);
    this.fds.set(fd, vm);
    return vm;
  }
  lookupVmFd(fd: number): VmFdLookup {
    const v = this.fds.get(fd);
    if (v === undefined) return 'not-open';
    if (typeof v === 'string') return 'not-a-vm';
    return v;
  }
  isSevDeviceFd(fd: number): boolean {
    return this.fds.get(fd) === 'sev';
  }
}

/** CPUID 0x8000001F with SEV + SEV-ES and the given ASID bounds. */
export function cpuidWith(minSevAsid: number, maxSevAsid: number): CpuidRegs {
  return { eax: (1 << 1) | (1 << 3), ebx: 51, ecx: maxSevAsid, edx: minSevAsid };
}

/** A HostPtr. */
export function ptr(buffer: Uint8Array, offset = 0): HostPtr {
  return { buffer, offset };
}

/** SEV policy bits. */
export const POLICY = { NODBG: 1, NOKS: 2, ES: 4, NOSEND: 8 } as const;

/** Legacy SEV or SEV-ES VM launched the way the selftest's sev_vm_create does (4 vCPUs, UPDATE_DATA, VMSA twice). */
export function launchedVm(
  host: FakeHost,
  es: boolean,
  opts: { vcpus?: number; memSize?: number } = {},
): FakeVm {
  const vm = host.createVm('default');
  const mem = vm.addSlot(0n, opts.memSize ?? 0x4000);
  mem.fill(0x5a);
  vm.cmd(es ? SEV_CMD.ES_INIT : SEV_CMD.INIT);
  for (let i = 0; i < (opts.vcpus ?? 4); i++) vm.addVcpu(i);
  vm.cmd(SEV_CMD.LAUNCH_START, { handle: 0, policy: es ? POLICY.ES : 0 });
  vm.cmd(SEV_CMD.LAUNCH_UPDATE_DATA, { uaddr: ptr(mem), len: mem.length });
  if (es) {
    vm.cmd(SEV_CMD.LAUNCH_UPDATE_VMSA);
    vm.cmd(SEV_CMD.LAUNCH_UPDATE_VMSA);
  }
  return vm;
}
