// Shared helpers of the kvm-linux tests: availability, and tiny real-mode guests.

import { kvmAvailability, type LinuxKvm, type LinuxVcpu, type LinuxVm, openLinuxKvm } from '../src/index.js';
import { SEGMENT, SREGS } from '../src/internal/uapi.js';

const availability = kvmAvailability();
/** True when /dev/kvm works here. */
export const kvmAvailable = availability.ok;
/** Why the real-KVM tests are skipped (printed once). */
export const skipReason = availability.ok ? '' : `${availability.code}: ${availability.reason}`;
if (!availability.ok) console.warn(`kvm-linux tests skipped: /dev/kvm unusable (${skipReason})`);

/** Where the tiny guests' code starts (GPA and real-mode IP, CS base 0). */
export const CODE = 0x1000;

/** A VM with 64 KiB of memory at GPA 0 and one vCPU in real mode at CS:IP 0:CODE running `code`. */
export function realModeGuest(
  code: readonly number[],
  opts: { kvm?: LinuxKvm; runTimeoutMs?: number } = {},
): { kvm: LinuxKvm; vm: LinuxVm; vcpu: LinuxVcpu; mem: Uint8Array } {
  const kvm = opts.kvm ?? openLinuxKvm({ runTimeoutMs: opts.runTimeoutMs ?? 5000 });
  const vm = kvm.createVm();
  if (opts.runTimeoutMs !== undefined) vm.runTimeoutMs = opts.runTimeoutMs;
  const mem = kvm.allocateUserMemory(0x10000).bytes;
  mem.set(code, CODE);
  vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x10000n, userspace: mem });
  const vcpu = vm.createVcpu(0);
  const s = vcpu.getSregsRaw();
  const v = new DataView(s.buffer);
  v.setBigUint64(SREGS.cs + SEGMENT.base, 0n, true);
  v.setUint16(SREGS.cs + SEGMENT.selector, 0, true);
  vcpu.setSregsRaw(s);
  const r = vcpu.getRegs();
  r.rip = BigInt(CODE);
  r.rflags = 2n;
  vcpu.setRegs(r);
  return { kvm, vm, vcpu, mem };
}
