// A small, faithful stand-in for a KVM backend, enough to run the ucall guest half and decode its
// exits: guest accesses translate through the page tables in guest memory; out/mmioWrite/vmgexit/
// tdcall produce the exit the kernel would (GHCB processing as arch/x86/kvm/svm/sev.c:
// sev_handle_vmgexit(), TDVMCALL I/O as arch/x86/kvm/vmx/tdx.c: tdx_emulate_io()); IN/OUT in an SEV-ES/SNP guest raises #VC, in a TD #VE. Not a simulator: no encryption.

import {
  decodeIoioExitInfo,
  GHCB_ERR,
  GHCB_FIELD,
  GHCB_LAYOUT,
  GHCB_MSR_CODE,
  Ghcb,
  SEV_MSR,
  SVM_EXIT,
  TDVMCALL_STATUS,
  VM_TYPE_TRAITS,
  type VmType,
} from '@kvmtest/coco';
import {
  AddressSpace,
  GuestImage,
  type GuestGlobal,
  type LoadedImage,
  loadImage,
  PhysicalMemory,
} from '@kvmtest/guest-memory';
import {
  type Exit,
  type Guest,
  GuestException,
  type GuestProgram,
  INTERNAL_ERROR,
  KvmError,
  type Regs,
  type TdcallRegs,
  type Vcpu,
  type Vm,
  VECTOR,
  zeroRegs,
} from '@kvmtest/kvm';
import { UCALL_GUEST_GLOBALS } from '../../src/index.js';

const GHCB_MSR = SEV_MSR.MSR_AMD64_SEV_ES_GHCB;

function le(value: bigint, size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = Number((value >> BigInt(8 * i)) & 0xffn);
  return out;
}

function notModelled(what: string): never {
  throw new Error(`fake KVM: ${what} is not modelled`);
}

let nextFd = 100;

/** A VM of the fake backend: type, vCPUs and the guest symbol table. */
export class FakeVm {
  readonly fd = nextFd++;
  readonly type: VmType;
  readonly memory: PhysicalMemory;
  readonly vcpus: FakeVcpu[] = [];
  symbols: ReadonlyMap<string, bigint> = new Map();
  closed = false;
  /** SNP: the GHCB GPA each vCPU registered (REG_GPA_REQ). */
  readonly registeredGhcb = new Map<number, bigint>();
  /** KVM's copy of the last GHCB a VMGEXIT named (arch/x86/kvm/svm/sev.c: sev_es_sync_from_ghcb()), for tests to inspect. */
  lastGhcb: Ghcb | undefined;
  /** When set, every TDVMCALL returns this status in R10 without exiting (to test the guest's check). */
  tdvmcallStatus: bigint | undefined;

  constructor(type: VmType, memory: PhysicalMemory) {
    this.type = type;
    this.memory = memory;
  }

  createVcpu(id: number): FakeVcpu {
    const v = new FakeVcpu(this, id);
    this.vcpus.push(v);
    return v;
  }

  setGuestSymbols(symbols: ReadonlyMap<string, bigint>): void {
    this.symbols = new Map(symbols);
  }

  asVm(): Vm {
    return this as unknown as Vm;
  }

  [Symbol.dispose](): void {
    this.closed = true;
  }
}

type Waiter = { resolve: (e: Exit) => void; reject: (e: unknown) => void };

/** A vCPU of the fake backend: runs a guest program as a coroutine, one exit per run(). */
export class FakeVcpu {
  readonly vm: FakeVm;
  readonly id: number;
  readonly fd = nextFd++;
  exit: Exit | undefined;
  readonly guest: FakeGuest;
  private program: GuestProgram | undefined;
  private started = false;
  private done = false;
  private waiter: Waiter | undefined;
  private resume: (() => void) | undefined;
  private pendingError: unknown;

  constructor(vm: FakeVm, id: number) {
    this.vm = vm;
    this.id = id;
    this.guest = new FakeGuest(this);
  }

  setEntry(program: GuestProgram): void {
    this.program = program;
  }

  asVcpu(): Vcpu {
    return this as unknown as Vcpu;
  }

  /** KVM_RUN: completes the pending exit (resumes the guest) and resolves with the next one. */
  run(): Promise<Exit> {
    if (this.done) return Promise.resolve(this.setExit({ reason: 'hlt' }));
    const p = new Promise<Exit>((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
    this.exit = undefined;
    if (!this.started) {
      this.started = true;
      const program = this.program ?? notModelled('a vCPU without an entry point');
      program(this.guest).then(
        () => {
          this.done = true;
          this.post({ reason: 'hlt' });
        },
        (e: unknown) => {
          this.done = true;
          const detail = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
          this.post({ reason: 'internal-error', suberror: INTERNAL_ERROR.GUEST_CRASH, detail });
        },
      );
    } else {
      const r = this.resume;
      this.resume = undefined;
      r?.();
    }
    return p;
  }

  private setExit(e: Exit): Exit {
    this.exit = e;
    return e;
  }

  /** Guest side: exit to userspace with `exit`; resolves when the host runs the vCPU again. */
  exitToHost(exit: Exit): Promise<void> {
    return new Promise<void>((resolve) => {
      this.resume = resolve;
      this.post(exit);
    });
  }

  /** Guest side: make the pending KVM_RUN fail (e.g. -EINVAL for an unregistered SNP GHCB). */
  failRun(err: KvmError): Promise<void> {
    this.pendingError = err;
    return new Promise<void>(() => {
      const w = this.waiter;
      this.waiter = undefined;
      w?.reject(this.pendingError);
    });
  }

  private post(exit: Exit): void {
    this.exit = exit;
    const w = this.waiter;
    this.waiter = undefined;
    w?.resolve(exit);
  }
}

/** The guest side of a FakeVcpu: memory through the page tables of the VM's address space. */
export class FakeGuest implements Guest {
  readonly vcpu: FakeVcpu;
  readonly regs: Regs = zeroRegs();
  readonly msrs = new Map<number, bigint>();
  space: AddressSpace | undefined;

  constructor(vcpu: FakeVcpu) {
    this.vcpu = vcpu;
  }

  get vcpuId(): number {
    return this.vcpu.id;
  }

  private get mem(): PhysicalMemory {
    return this.vcpu.vm.memory;
  }

  private gpa(gva: bigint, write: boolean, op: string): bigint {
    const space = this.space ?? notModelled('guest memory before the address space is attached');
    const r = space.pageTables.walk(gva, { write });
    if (r.ok) return r.gpa;
    throw new GuestException({
      vector: VECTOR.PF,
      errorCode: write ? 2 : 0,
      cr2: gva,
      operation: `${op}(0x${gva.toString(16)})`,
      detail: `${r.fault.reason} at level ${r.fault.level}`,
    });
  }

  readU8(gva: bigint): number {
    return this.mem.readU8(this.gpa(gva, false, 'readU8'));
  }
  readU16(gva: bigint): number {
    return Number(this.readLe(gva, 2));
  }
  readU32(gva: bigint): number {
    return Number(this.readLe(gva, 4));
  }
  readU64(gva: bigint): bigint {
    return this.readLe(gva, 8);
  }
  writeU8(gva: bigint, v: number): void {
    this.mem.writeU8(this.gpa(gva, true, 'writeU8'), v);
  }
  writeU16(gva: bigint, v: number): void {
    this.writeBytes(gva, le(BigInt(v), 2));
  }
  writeU32(gva: bigint, v: number): void {
    this.writeBytes(gva, le(BigInt(v), 4));
  }
  writeU64(gva: bigint, v: bigint): void {
    this.writeBytes(gva, le(v, 8));
  }
  readBytes(gva: bigint, length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) out[i] = this.mem.readU8(this.gpa(gva + BigInt(i), false, 'readBytes'));
    return out;
  }
  writeBytes(gva: bigint, data: Uint8Array): void {
    // Translate every byte first, so a fault leaves memory unchanged.
    const gpas = Array.from(data, (_, i) => this.gpa(gva + BigInt(i), true, 'writeBytes'));
    for (let i = 0; i < data.length; i++) this.mem.writeU8(gpas[i]!, data[i]!);
  }
  private readLe(gva: bigint, size: number): bigint {
    const b = this.readBytes(gva, size);
    let v = 0n;
    for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
    return v;
  }
  /** The fake has no MMIO or memory faults: the async accessors are the plain ones. */
  async readAsync(gva: bigint, size: 1 | 2 | 4 | 8): Promise<bigint> {
    return this.readLe(gva, size);
  }
  async writeAsync(gva: bigint, size: 1 | 2 | 4 | 8, value: bigint): Promise<void> {
    this.writeBytes(gva, le(BigInt.asUintN(size * 8, value), size));
  }
  testAndSetBit(gva: bigint, bit: number): boolean {
    const a = gva + BigInt(bit >> 3);
    const old = this.readU8(a);
    this.writeU8(a, old | (1 << (bit & 7)));
    return ((old >> (bit & 7)) & 1) === 1;
  }
  clearBit(gva: bigint, bit: number): void {
    const a = gva + BigInt(bit >> 3);
    this.writeU8(a, this.readU8(a) & ~(1 << (bit & 7)));
  }

  global(name: string): bigint {
    const gva = this.vcpu.vm.symbols.get(name);
    if (gva === undefined) throw new Error(`guest image has no global ${name}`);
    return gva;
  }

  cpuid(): never {
    return notModelled('cpuid');
  }
  rdmsr(msr: number): bigint {
    return this.msrs.get(msr) ?? 0n;
  }
  wrmsr(msr: number, value: bigint): void {
    this.msrs.set(msr, value);
  }

  private portRequestKind() {
    return VM_TYPE_TRAITS[this.vcpu.vm.type].portRequest;
  }

  private trapPortIo(op: string): void {
    const kind = this.portRequestKind();
    if (kind === 'ghcb')
      throw new GuestException({
        vector: VECTOR.VC,
        errorCode: SVM_EXIT.IOIO,
        operation: op,
        detail: 'IOIO intercepted in an SEV-ES guest',
      });
    if (kind === 'tdvmcall')
      throw new GuestException({
        vector: VECTOR.VE,
        errorCode: undefined,
        operation: op,
        detail: 'port I/O in a TD',
      });
  }

  async out(port: number, size: 1 | 2 | 4, value: number): Promise<void> {
    this.trapPortIo(`out(0x${port.toString(16)})`);
    await this.vcpu.exitToHost({
      reason: 'io',
      direction: 'out',
      port,
      size,
      count: 1,
      data: le(BigInt(value >>> 0), size),
    });
  }
  in(): Promise<number> {
    return notModelled('in');
  }
  async mmioWrite(gpa: bigint, size: number, value: bigint): Promise<void> {
    if (this.mem.findRegion(gpa) !== undefined) {
      this.mem.write(gpa, le(value, size));
      return;
    }
    await this.vcpu.exitToHost({ reason: 'mmio', gpa, isWrite: true, len: size, data: le(value, size) });
  }
  mmioRead(): Promise<bigint> {
    return notModelled('mmioRead');
  }
  hypercall(): Promise<bigint> {
    return notModelled('hypercall');
  }

  /** VMGEXIT as KVM handles it (svm/sev.c: sev_handle_vmgexit_msr_protocol(), sev_handle_vmgexit(), sev_es_validate_vmgexit()). */
  async vmgexit(): Promise<void> {
    const vm = this.vcpu.vm;
    if (this.portRequestKind() !== 'ghcb')
      throw new GuestException({
        vector: VECTOR.UD,
        errorCode: undefined,
        operation: 'vmgexit',
        detail: 'not an SEV-ES guest',
      });
    const msr = this.rdmsr(GHCB_MSR);
    const code = Number(msr & 0xfffn);
    if (code !== 0) {
      if (code === GHCB_MSR_CODE.REG_GPA_REQ && vm.type === 'sev-snp') {
        const gfn = msr >> 12n;
        vm.registeredGhcb.set(this.vcpuId, gfn << 12n);
        this.wrmsr(GHCB_MSR, (gfn << 12n) | BigInt(GHCB_MSR_CODE.REG_GPA_RESP));
        return;
      }
      // Anything else this fake meets is a termination request (SNP-only requests from SEV-ES included).
      await this.vcpu.exitToHost({ reason: 'system-event', type: 'sev-term', data: [msr] });
      return;
    }
    const gpa = msr;
    if (gpa === 0n) return; // step 2
    const copy = new Ghcb(this.mem.read(gpa, GHCB_LAYOUT.SIZE)); // step 3: KVM's copy
    vm.lastGhcb = copy;
    this.mem.write(
      gpa + BigInt(GHCB_LAYOUT.VALID_BITMAP_OFFSET),
      new Uint8Array(GHCB_LAYOUT.VALID_BITMAP_SIZE),
    );
    if (vm.type === 'sev-snp' && vm.registeredGhcb.get(this.vcpuId) !== gpa) {
      // step 4: KVM_RUN fails with -EINVAL
      await this.vcpu.failRun(
        new KvmError('EINVAL', 'KVM_RUN', `SNP GHCB GPA 0x${gpa.toString(16)} was not registered`),
      );
      return;
    }
    const fail = (reason: number) => {
      this.mem.writeU64(gpa + BigInt(GHCB_FIELD.swExitInfo1.offset), 2n);
      this.mem.writeU64(gpa + BigInt(GHCB_FIELD.swExitInfo2.offset), BigInt(reason));
    };
    // step 5: validation
    if (copy.usage !== 0) return fail(GHCB_ERR.INVALID_USAGE);
    if (!copy.isValid('swExitCode') || !copy.isValid('swExitInfo1') || !copy.isValid('swExitInfo2'))
      return fail(GHCB_ERR.MISSING_INPUT);
    const exitCode = copy.get('swExitCode');
    if (exitCode !== BigInt(SVM_EXIT.IOIO)) return fail(GHCB_ERR.INVALID_EVENT);
    let io: ReturnType<typeof decodeIoioExitInfo>;
    try {
      io = decodeIoioExitInfo(copy.get('swExitInfo1'));
    } catch {
      return fail(GHCB_ERR.INVALID_INPUT);
    }
    if (io.string) return notModelled('string IOIO');
    if (io.direction === 'out' && !copy.isValid('rax')) return fail(GHCB_ERR.MISSING_INPUT);
    // step 6
    this.mem.writeU64(gpa + BigInt(GHCB_FIELD.swExitInfo1.offset), 0n);
    this.mem.writeU64(gpa + BigInt(GHCB_FIELD.swExitInfo2.offset), 0n);
    if (io.direction === 'in') return notModelled('IOIO IN');
    await this.vcpu.exitToHost({
      reason: 'io',
      direction: 'out',
      port: io.port,
      size: io.size,
      count: 1,
      data: le(copy.getIfValid('rax'), io.size),
    });
  }

  /** TDCALL leaf 0 (TDG.VP.VMCALL) with Instruction.IO as KVM's tdx_emulate_io (arch/x86/kvm/vmx/tdx.c). */
  async tdcall(leaf: bigint, r: TdcallRegs): Promise<TdcallRegs> {
    if (this.portRequestKind() !== 'tdvmcall')
      throw new GuestException({
        vector: VECTOR.UD,
        errorCode: undefined,
        operation: 'tdcall',
        detail: 'not a TD',
      });
    if (leaf !== 0n || (r.r10 ?? 0n) !== 0n || r.r11 !== 30n)
      return { r10: TDVMCALL_STATUS.SUBFUNC_UNSUPPORTED };
    if (this.vcpu.vm.tdvmcallStatus !== undefined) return { r10: this.vcpu.vm.tdvmcallStatus };
    const size = Number(r.r12 ?? 0n);
    if ((size !== 1 && size !== 2 && size !== 4) || (r.r13 !== 0n && r.r13 !== 1n))
      return { r10: TDVMCALL_STATUS.INVALID_OPERAND };
    if (r.r13 === 0n) return notModelled('TDVMCALL IN');
    const value = (r.r15 ?? 0n) & ((1n << BigInt(8 * size)) - 1n);
    await this.vcpu.exitToHost({
      reason: 'io',
      direction: 'out',
      port: Number(r.r14 ?? 0n),
      size: size as 1 | 2 | 4,
      count: 1,
      data: le(value, size),
    });
    return { r10: TDVMCALL_STATUS.SUCCESS, r11: 0n };
  }

  pvalidate(): number {
    return notModelled('pvalidate');
  }
  async hlt(): Promise<void> {
    await this.vcpu.exitToHost({ reason: 'hlt' });
  }
  ud2(): never {
    throw new GuestException({ vector: VECTOR.UD, errorCode: undefined, operation: 'ud2', detail: 'UD2' });
  }
  setExceptionHandler(): void {}
}

/** Options of createFakeVm. */
export interface FakeVmOptions {
  type?: VmType;
  /** Size of memslot 0 at GPA 0 (default 8 MiB). */
  memSize?: bigint;
  /** Extra image globals besides UCALL_GUEST_GLOBALS. */
  globals?: GuestGlobal[];
  /** Leave out these ucall globals (to test MISSING_GLOBAL). */
  omitGlobals?: string[];
}

/** A fake VM with memslot 0, an address space, the image loaded and its symbols given to the VM. */
export interface FakeSetup {
  vm: FakeVm;
  space: AddressSpace;
  image: LoadedImage;
  target: { vm: Vm; space: AddressSpace; image: LoadedImage };
  /** Creates vCPU `id` running `program`. */
  vcpu(id: number, program: GuestProgram): FakeVcpu;
  /** Loads the image again (fresh globals) and hands the new symbols to the VM. */
  reloadImage(): LoadedImage;
}

/** Builds a fake VM of `type` ready for ucallInit. */
export function createFakeVm(opts: FakeVmOptions = {}): FakeSetup {
  const type = opts.type ?? 'default';
  const memory = new PhysicalMemory();
  memory.addRegion({ slot: 0, gpa: 0n, size: opts.memSize ?? 8n << 20n });
  const traits = VM_TYPE_TRAITS[type];
  const tag =
    traits.tagBit === 'c-bit'
      ? ({ bit: 51, setWhen: 'private' } as const)
      : traits.tagBit === 's-bit'
        ? ({ bit: 47, setWhen: 'shared' } as const)
        : undefined;
  const space = new AddressSpace({
    memory,
    protectedByDefault: traits.protectedMemory,
    ...(tag ? { tag } : {}),
  });
  const vm = new FakeVm(type, memory);
  const omit = new Set(opts.omitGlobals ?? []);
  const img = new GuestImage('fake', [
    ...UCALL_GUEST_GLOBALS.filter((g) => !omit.has(g.name)),
    ...(opts.globals ?? []),
  ]);
  const setup: FakeSetup = {
    vm,
    space,
    image: undefined as unknown as LoadedImage,
    target: undefined as unknown as FakeSetup['target'],
    vcpu(id, program) {
      const v = vm.createVcpu(id);
      v.guest.space = space;
      v.setEntry(program);
      return v;
    },
    reloadImage() {
      const li = loadImage(space, img);
      vm.setGuestSymbols(new Map([...li.symbols].map(([k, s]) => [k, s.gva])));
      setup.image = li;
      setup.target = { vm: vm.asVm(), space, image: li };
      return li;
    },
  };
  setup.reloadImage();
  return setup;
}
