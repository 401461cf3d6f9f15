// The contract's XSAVE/XCR state, binary statistics descriptors, pread and fallocate on the real
// /dev/kvm: what the kernel answers, errno for errno.

import { readdirSync } from 'node:fs';
import { CAP, FALLOC_FL, isKvmError, readBinaryStats, tryKvm, XFEATURE, XSAVE_LAYOUT } from '@kvmtest/kvm';
import { afterEach, describe, expect, it } from 'vitest';
import { type LinuxKvm, openLinuxKvm } from '../src/index.js';
import { kvmAvailable, realModeGuest } from './helpers.js';

const opened: LinuxKvm[] = [];
afterEach(() => {
  for (const k of opened.splice(0)) k.close();
});
function open(): LinuxKvm {
  const kvm = openLinuxKvm();
  opened.push(kvm);
  return kvm;
}
const fds = (): string[] => readdirSync('/proc/self/fd');

describe.skipIf(!kvmAvailable)('XSAVE state and XCRs (KVM_GET/SET_XSAVE, KVM_GET/SET_XCRS)', () => {
  it('reads the reset state and round-trips an area through the kernel', () => {
    const kvm = open();
    const vcpu = kvm.createVm().createVcpu(0);
    const area = vcpu.getXsave();
    expect(area.length).toBe(XSAVE_LAYOUT.size);
    const v = new DataView(area.buffer, area.byteOffset, area.byteLength);
    // The architectural reset values (arch/x86/kvm/x86.c: kvm_vcpu_reset() → fpstate_init).
    expect(v.getUint16(XSAVE_LAYOUT.fcw, true)).toBe(0x37f);
    expect(v.getUint32(XSAVE_LAYOUT.mxcsr, true)).toBe(0x1f80);
    for (let i = 0; i < 16; i++) area[XSAVE_LAYOUT.xmm + 16 + i] = 0xa0 + i; // XMM1
    v.setUint32(XSAVE_LAYOUT.mxcsr, 0x1f80 | 0x6000, true); // round toward zero
    v.setBigUint64(XSAVE_LAYOUT.xstateBv, XFEATURE.FP | XFEATURE.SSE, true);
    vcpu.setXsave(area);
    const back = vcpu.getXsave();
    const bv = new DataView(back.buffer);
    expect([...back.subarray(XSAVE_LAYOUT.xmm + 16, XSAVE_LAYOUT.xmm + 32)]).toEqual(
      Array.from({ length: 16 }, (_, i) => 0xa0 + i),
    );
    expect(bv.getUint32(XSAVE_LAYOUT.mxcsr, true)).toBe(0x7f80);
    expect(bv.getBigUint64(XSAVE_LAYOUT.xstateBv, true) & XFEATURE.SSE).toBe(XFEATURE.SSE);
  });

  it('refuses what fpu_copy_uabi_to_guest_fpstate() refuses, with EINVAL', () => {
    const kvm = open();
    const vcpu = kvm.createVm().createVcpu(0);
    const base = vcpu.getXsave();
    const with_ = (f: (v: DataView) => void): Uint8Array => {
      const a = base.slice();
      f(new DataView(a.buffer));
      return a;
    };
    // An XSTATE_BV bit the kernel does not support (bit 62: no such component).
    const badBv = with_((v) => v.setBigUint64(XSAVE_LAYOUT.xstateBv, 1n << 62n, true));
    expect(tryKvm(() => vcpu.setXsave(badBv))).toBe('EINVAL');
    // Reserved MXCSR bits (above MXCSR_MASK).
    const badMxcsr = with_((v) => {
      v.setUint32(XSAVE_LAYOUT.mxcsr, 0xffff_0000, true);
      v.setBigUint64(XSAVE_LAYOUT.xstateBv, XFEATURE.FP | XFEATURE.SSE, true); // MXCSR counts with SSE
    });
    expect(tryKvm(() => vcpu.setXsave(badMxcsr))).toBe('EINVAL');
    expect(() => vcpu.setXsave(new Uint8Array(512))).toThrow(TypeError);
    // Nothing was loaded by the refused calls.
    expect(Buffer.from(vcpu.getXsave()).equals(Buffer.from(base))).toBe(true);
  });

  it('reports XCR0 and sets it under __kvm_set_xcr() rules once CPUID allows the features', () => {
    const kvm = open();
    expect(kvm.checkExtension(CAP.XCRS)).toBeGreaterThan(0);
    const vcpu = kvm.createVm().createVcpu(0);
    expect(vcpu.getXcrs()).toEqual([{ xcr: 0, value: XFEATURE.FP }]);
    // Before KVM_SET_CPUID2 the guest supports x87 alone: SSE is refused.
    expect(tryKvm(() => vcpu.setXcrs([{ xcr: 0, value: XFEATURE.FP | XFEATURE.SSE }]))).toBe('EINVAL');
    vcpu.setCpuid(kvm.getSupportedCpuid());
    vcpu.setXcrs([{ xcr: 0, value: XFEATURE.FP | XFEATURE.SSE }]);
    expect(vcpu.getXcrs()).toEqual([{ xcr: 0, value: 3n }]);
    expect(tryKvm(() => vcpu.setXcrs([{ xcr: 0, value: XFEATURE.SSE }]))).toBe('EINVAL'); // x87 clear
    expect(tryKvm(() => vcpu.setXcrs([{ xcr: 0, value: XFEATURE.FP | XFEATURE.YMM }]))).toBe('EINVAL'); // AVX without SSE
    const tooMany = Array.from({ length: 17 }, () => ({ xcr: 0, value: 1n }));
    expect(tryKvm(() => vcpu.setXcrs(tooMany))).toBe('EINVAL'); // nr_xcrs > KVM_MAX_XCRS
    vcpu.setXcrs([]);
    expect(vcpu.getXcrs()).toEqual([{ xcr: 0, value: 3n }]);
    expect(() => vcpu.setXcrs([{ xcr: 0, value: -1n }])).toThrow(TypeError);
  });
});

describe.skipIf(!kvmAvailable)('binary statistics descriptors (KVM_GET_STATS_FD) and pread', () => {
  it('reads a vCPU stats fd with readBinaryStats, counting real exits', async () => {
    // out 0x10, al three times, then hlt.
    const code = [0xb0, 0x01, 0xe6, 0x10, 0xe6, 0x10, 0xe6, 0x10, 0xf4];
    const { kvm, vcpu } = realModeGuest(code);
    opened.push(kvm);
    const fd = vcpu.getStatsFd();
    expect(kvm.isFdOpen(fd)).toBe(true);
    expect(fds()).toContain(String(fd));
    const before = readBinaryStats(kvm, fd);
    expect(before.id).toBe(`kvm-${process.pid}/vcpu-0`);
    expect(before.header.nameSize).toBeGreaterThan(0);
    expect(before.stats.length).toBe(before.header.numDesc);
    const exits0 = before.stats.find((s) => s.name === 'exits');
    expect(exits0).toBeDefined();
    for (let i = 0; i < 3; i++) expect((await vcpu.run()).reason).toBe('io');
    expect((await vcpu.run()).reason).toBe('hlt');
    const after = readBinaryStats(kvm, fd);
    const exits = after.stats.find((s) => s.name === 'exits')!;
    const halts = after.stats.find((s) => s.name === 'halt_exits')!;
    // Four exits to userspace at least (mainline also counts exits it handles itself). PVM emulates
    // the OUTs and leaves `io_exits` at 0, so only the total and the HLT are pinned.
    expect(exits.values[0]! - exits0!.values[0]!).toBeGreaterThanOrEqual(4n);
    expect(halts.values[0]!).toBeGreaterThanOrEqual(1n);
    // The data block is live: the same descriptor, read again, sees the new counts.
    expect(after.header).toEqual(before.header);
    kvm.closeFd(fd);
    expect(kvm.isFdOpen(fd)).toBe(false);
    expect(
      isKvmError(
        catchOf(() => kvm.pread(fd, 24, 0)),
        'EBADF',
      ),
    ).toBe(true);
  });

  it('reads a VM stats fd, and pread answers as ksys_pread64() does', () => {
    const kvm = open();
    expect(kvm.checkExtension(CAP.BINARY_STATS_FD)).toBeGreaterThan(0);
    const vm = kvm.createVm();
    const fd = vm.getStatsFd();
    const s = readBinaryStats(kvm, fd);
    expect(s.id).toBe(`kvm-${process.pid}`);
    expect(s.stats.length).toBeGreaterThan(0);
    expect(s.stats.every((e) => e.values.length === e.size)).toBe(true);
    // Past the end: nothing; a long read: what there is; a negative offset: EINVAL.
    const total = s.header.dataOffset + s.stats.reduce((n, e) => Math.max(n, e.offset + e.size * 8), 0);
    expect(kvm.pread(fd, 64, total).length).toBe(0);
    expect(kvm.pread(fd, total + 4096, 0).length).toBe(total);
    expect(tryKvm(() => kvm.pread(fd, 8, -1))).toBe('EINVAL');
    // A VM fd is opened without FMODE_PREAD: the kernel answers ESPIPE before it looks for a read op.
    expect(tryKvm(() => kvm.pread(vm.fd, 8, 0))).toBe('ESPIPE');
    // Not a descriptor this Kvm opened (stdin): EBADF, never the process's own files.
    expect(tryKvm(() => kvm.pread(0, 8, 0))).toBe('EBADF');
    expect(() => kvm.pread(fd, -1, 0)).toThrow(RangeError);
  });

  it('closes stats descriptors with the Kvm and keeps the VM alive while one is open', () => {
    const kvm = openLinuxKvm();
    const vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    const a = vm.getStatsFd();
    const b = vcpu.getStatsFd();
    vm.close();
    // The stats files hold a VM reference: still readable after the VM and vCPU fds are gone.
    expect(readBinaryStats(kvm, b).id).toBe(`kvm-${process.pid}/vcpu-0`);
    expect(fds()).toEqual(expect.arrayContaining([String(a), String(b)]));
    kvm.close();
    expect(fds()).not.toContain(String(a));
    expect(fds()).not.toContain(String(b));
    expect(tryKvm(() => vm.getStatsFd())).toBe('EBADF');
  });
});

describe.skipIf(!kvmAvailable)('fallocate', () => {
  it('fails as vfs_fallocate() does on descriptors that are not files', () => {
    const kvm = open();
    const vm = kvm.createVm();
    const stats = vm.getStatsFd();
    const keep = FALLOC_FL.KEEP_SIZE;
    // In vfs_fallocate()'s order: the range, the mode, then FMODE_WRITE, then the file type.
    expect(tryKvm(() => kvm.fallocate(vm.fd, keep, -1n, 4096n))).toBe('EINVAL');
    expect(tryKvm(() => kvm.fallocate(vm.fd, keep, 0n, 0n))).toBe('EINVAL');
    expect(tryKvm(() => kvm.fallocate(vm.fd, FALLOC_FL.PUNCH_HOLE, 0n, 4096n))).toBe('EOPNOTSUPP');
    expect(tryKvm(() => kvm.fallocate(stats, keep, 0n, 4096n))).toBe('EBADF'); // opened read-only
    expect(tryKvm(() => kvm.fallocate(vm.fd, keep, 0n, 4096n))).toBe('ENODEV'); // an anonymous inode
    expect(tryKvm(() => kvm.fallocate(1, keep, 0n, 4096n))).toBe('EBADF'); // not this Kvm's
    expect(() => kvm.fallocate(vm.fd, keep, 1n << 63n, 1n)).toThrow(TypeError);
  });

  it('allocates and punches a guest_memfd range where the host has guest_memfd', (ctx) => {
    const kvm = open();
    const vm = kvm.createVm();
    let gmem = -1;
    const r = tryKvm(() => {
      gmem = vm.createGuestMemfd(0x10000n);
    });
    // PVM and kernels before 6.8 have no guest_memfd (KVM_CREATE_GUEST_MEMFD: ENOTTY).
    if (r !== undefined) {
      expect(r).toBe('ENOTTY');
      ctx.skip();
    }
    kvm.fallocate(gmem, FALLOC_FL.KEEP_SIZE, 0n, 0x2000n);
    kvm.fallocate(gmem, FALLOC_FL.KEEP_SIZE | FALLOC_FL.PUNCH_HOLE, 0n, 0x1000n);
    expect(tryKvm(() => kvm.fallocate(gmem, FALLOC_FL.KEEP_SIZE, 0x800n, 0x1000n))).toBe('EINVAL');
    expect(tryKvm(() => kvm.fallocate(gmem, 0, 0n, 0x1000n))).toBe('EOPNOTSUPP');
  });
});

function catchOf(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
}
