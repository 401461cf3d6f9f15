// Host access to a kit VM's guest memory: GVA allocation (private by default on CoCo types),
// this VM's copy of the guest globals, address translation, the exception-handler table and
// reloading the image. On a launched confidential VM the private pages and the page tables are
// encrypted, so everything that would touch them is refused with a message that says so.

import { checkGva, checkName, checkOptions, shown } from './check.js';
import { hostPtr, type HostPtr } from '@kvmtest/kvm';
import { ucallPoolOf, ucallReapply } from '@kvmtest/ucall';
import { TestkitError } from './errors.js';
import { NUM_VECTORS, RUNTIME_GLOBAL } from './image.js';
import { type GuestExceptionHandler, handlerAddress } from './runtime.js';
import { type Gpa, type Gva, loadImage } from '@kvmtest/guest-memory';
import { asTestVm, checkTestVm, kitState, type TestVm, type VmLike } from './kit-vm.js';
import { symbolMap } from './symbols.js';

function refuseIfProtected(vm: TestVm, what: string): void {
  if (vm.ptProtected)
    throw new TestkitError(
      'PT_PROTECTED',
      `${what}: the page tables and private memory of this launched ${vm.type} VM are ${vm.traits.launchFlow === 'tdx' ? 'in guest_memfd, out of the host’s reach' : 'encrypted'} (do it before the first run)`,
      { type: vm.type, stage: vm.launchStage },
    );
}

function toSize(size: bigint | number, what: string): bigint {
  const s = typeof size === 'number' && Number.isSafeInteger(size) ? BigInt(size) : size;
  if (typeof s !== 'bigint' || s <= 0n)
    throw new TestkitError('BAD_ARGUMENT', `${what} size ${shown(size)} must be a positive integer`, {
      size,
    });
  return s;
}

/** Options of vmVaddrAlloc. */
export interface VmVaddrAllocOptions {
  /** Lowest GVA (default 0x2000, KVM_UTIL_MIN_VADDR). */
  minGva?: Gva;
}

/** vm_vaddr_alloc: maps `size` bytes of fresh memory and returns the GVA — private on CoCo types, shared otherwise. */
export function vmVaddrAlloc(vm: TestVm, size: bigint | number, opts: VmVaddrAllocOptions = {}): Gva {
  checkTestVm(vm, 'vmVaddrAlloc');
  checkOptions(opts, 'vmVaddrAlloc');
  const bytes = toSize(size, 'vmVaddrAlloc');
  const { space } = vm.memory('vmVaddrAlloc');
  refuseIfProtected(vm, 'vmVaddrAlloc');
  return space.vaddrAlloc(bytes, opts.minGva === undefined ? {} : { minGva: opts.minGva });
}

/** vm_vaddr_alloc_shared: maps `size` bytes of memory the host can read and write on every type. */
export function vmVaddrAllocShared(vm: TestVm, size: bigint | number, opts: VmVaddrAllocOptions = {}): Gva {
  checkTestVm(vm, 'vmVaddrAllocShared');
  checkOptions(opts, 'vmVaddrAllocShared');
  const bytes = toSize(size, 'vmVaddrAllocShared');
  const { space } = vm.memory('vmVaddrAllocShared');
  refuseIfProtected(vm, 'vmVaddrAllocShared');
  return space.vaddrAlloc(bytes, {
    visibility: 'shared',
    ...(opts.minGva === undefined ? {} : { minGva: opts.minGva }),
  });
}

/** addr_gva2gpa: the GPA `gva` maps to (untagged); refused once the page tables are protected. */
export function addrGva2Gpa(vm: TestVm, gva: Gva): Gpa {
  checkTestVm(vm, 'addrGva2Gpa');
  checkGva(gva, 'addrGva2Gpa');
  const { space } = vm.memory('addrGva2Gpa');
  if (vm.ptProtected)
    throw new TestkitError(
      'PT_PROTECTED',
      `Walking page tables of protected guests is impossible (GVA 0x${gva.toString(16)} in a launched ${vm.type} VM)`,
      { gva, type: vm.type },
    );
  return space.gvaToGpa(gva);
}

/** addr_gva2hva: a pointer into the host memory behind `gva` (for shared pages; computed before launch on CoCo). */
export function addrGva2Hva(vm: TestVm, gva: Gva): HostPtr {
  checkTestVm(vm, 'addrGva2Hva');
  checkGva(gva, 'addrGva2Hva');
  const gpa = addrGva2Gpa(vm, gva);
  const region = vm.space.memory.findRegion(gpa);
  if (!region)
    throw new TestkitError(
      'BAD_ARGUMENT',
      `GVA 0x${gva.toString(16)} maps GPA 0x${gpa.toString(16)}, which no memslot backs`,
      {
        gva,
        gpa,
      },
    );
  return hostPtr(region.backing, region.offsetOf(gpa));
}

function symbolOf(vm: TestVm, name: string, what: string) {
  checkTestVm(vm, what);
  checkName(name, what);
  const { image } = vm.memory(what);
  const s = image.symbols.get(name);
  if (!s) {
    const declared = [...image.symbols.keys()].filter(
      (n) => !n.startsWith('ucall_') && n !== RUNTIME_GLOBAL.exceptionHandlers,
    );
    throw new TestkitError(
      'UNKNOWN_GLOBAL',
      `${what}: global ${JSON.stringify(name)} is not declared in this VM's guest image (declared: ${declared.join(', ') || 'none'}); declare it with defineGuest(guest, { globals }) or vmCreate(shape, { globals })`,
      { name, declared },
    );
  }
  return s;
}

function refuseIfEncrypted(vm: TestVm, gpa: bigint, what: string): void {
  if (vm.ptProtected && vm.space.isPrivate(gpa))
    throw new TestkitError(
      'LAUNCHED',
      vm.traits.launchFlow === 'tdx'
        ? `${what}: the TD is launched and GPA 0x${gpa.toString(16)} is private — it lives in guest_memfd, which the host can neither read nor write (KVM_TDX_INIT_MEM_REGION copied the staging copy in at launch); write globals before the first run`
        : `${what}: the ${vm.type} VM is launched and its image is encrypted; write globals before the first run (launch)`,
      { type: vm.type, stage: vm.launchStage, gpa },
    );
}

/** write_guest_global: writes this VM's copy of global `name` (a u64, or bytes); before launch on CoCo types. */
export function writeGuestGlobal(vm: TestVm, name: string, value: bigint | Uint8Array): void {
  const s = symbolOf(vm, name, 'writeGuestGlobal');
  refuseIfEncrypted(vm, s.gpa, `writeGuestGlobal(${name})`);
  if (typeof value === 'bigint') vm.image.writeGlobalU64(name, value);
  else vm.image.writeGlobal(name, value);
}

/** sync_global_from_guest: reads this VM's copy of global `name` as a u64 (refused once encrypted). */
export function readGuestGlobal(vm: TestVm, name: string): bigint {
  const s = symbolOf(vm, name, 'readGuestGlobal');
  refuseIfEncrypted(vm, s.gpa, `readGuestGlobal(${name})`);
  return vm.image.readGlobalU64(name);
}

/** The bytes of this VM's copy of global `name` (refused once encrypted). */
export function readGuestGlobalBytes(vm: TestVm, name: string): Uint8Array {
  const s = symbolOf(vm, name, 'readGuestGlobalBytes');
  refuseIfEncrypted(vm, s.gpa, `readGuestGlobalBytes(${name})`);
  return vm.image.readGlobal(name);
}

/**
 * vm_install_exception_handler: routes exceptions of `vector` in this VM's guests to `handler`
 * (undefined removes it) by writing the VM's handler table; before launch on CoCo types.
 */
export function vmInstallExceptionHandler(
  vm: TestVm,
  vector: number,
  handler: GuestExceptionHandler | undefined,
): void {
  checkTestVm(vm, 'vmInstallExceptionHandler');
  if (!Number.isInteger(vector) || vector < 0 || vector >= NUM_VECTORS)
    throw new TestkitError(
      'BAD_ARGUMENT',
      `exception vector ${shown(vector)} must be an integer in 0–${NUM_VECTORS - 1}`,
      {
        vector,
      },
    );
  if (handler !== undefined && typeof handler !== 'function')
    throw new TypeError(
      'vmInstallExceptionHandler: handler must be a function (frame, g) => "retry" | "skip"',
    );
  const s = symbolOf(vm, RUNTIME_GLOBAL.exceptionHandlers, 'vmInstallExceptionHandler');
  refuseIfEncrypted(vm, s.gpa, 'vmInstallExceptionHandler');
  vm.space.memory.writeU64(s.gpa + BigInt(vector) * 8n, handler === undefined ? 0n : handlerAddress(handler));
}

/**
 * Loads a fresh copy of the VM's guest image (globals back to their initial values, at new GVAs)
 * and re-applies what creation wrote into the old copy: the ucall pool globals and the exception
 * handler table — the hazard Sean named for an ELF reload after ucall_init. Refused after launch.
 */
export function vmReloadImage(vmLike: VmLike): void {
  const vm = asTestVm(vmLike);
  const mem = vm.memory('vmReloadImage');
  refuseIfProtected(vm, 'vmReloadImage');
  const old = mem.image;
  const table = old.readGlobal(RUNTIME_GLOBAL.exceptionHandlers);
  const fresh = loadImage(mem.space, mem.guestImage);
  fresh.writeGlobal(RUNTIME_GLOBAL.exceptionHandlers, table);
  if (ucallPoolOf(vm.raw)) ucallReapply({ vm: vm.raw, space: mem.space, image: fresh });
  vm.raw.setGuestSymbols(symbolMap(fresh));
  kitState(vm).replaceImage(fresh);
}
