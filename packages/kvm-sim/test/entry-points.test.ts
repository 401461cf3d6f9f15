// Named cases of bad input at kvm-sim's public entry points (the fuzz in fuzz.test.ts finds the class).
import { SEV_CMD, tryKvm } from '@kvmtest/kvm';
import { describe, expect, it } from 'vitest';
import { createSimKvm, snpRmpEntry } from '../src/index.js';

describe('typed-errors-name-the-value: createSimKvm options', () => {
  it('names a bigint vendor instead of failing to serialize it', () => {
    expect(() => createSimKvm({ vendor: 1n as never })).toThrow(
      new TypeError("SimConfig.vendor must be 'amd' or 'intel', got bigint 1n"),
    );
  });
  it('refuses a cpu that is not an object, and VMSA features past a u64', () => {
    expect(() => createSimKvm({ cpu: 'x' as never })).toThrow(
      /SimConfig.cpu must be an object, got string "x"/,
    );
    expect(() => createSimKvm({ cpu: { sevVmsaFeatures: 2n ** 70n } })).toThrow(RangeError);
  });
});

describe('memslot-needs-host-memory', () => {
  it('refuses a memslot of non-zero size with no host memory (EFAULT) and keeps the slot table', () => {
    const vm = createSimKvm().createVm();
    const r = { slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x1000n, userspace: undefined };
    expect(tryKvm(() => vm.setUserMemoryRegion(r))).toBe('EFAULT');
    expect((vm as unknown as { memslotCount: number }).memslotCount).toBe(0);
  });
});

describe('output-fields-are-not-inputs: memEncryptOp', () => {
  it('reads an SEV command with error: null as error 0', () => {
    const kvm = createSimKvm();
    const vm = kvm.createVm('sev');
    const sevFd = kvm.openSevDevice();
    const cmd = {
      id: SEV_CMD.INIT2,
      sevFd,
      error: null as unknown as number,
      data: { vmsaFeatures: 0n, flags: 0, ghcbVersion: 0 },
    };
    expect(tryKvm(() => vm.memEncryptOp(cmd))).toBeUndefined();
    expect(cmd.error).toBe(0);
  });
});

describe('no-bigint-number-mix: snpRmpEntry', () => {
  it('refuses a number GPA with a TypeError naming it', () => {
    const vm = createSimKvm().createVm('sev-snp');
    expect(() => snpRmpEntry(vm, 4096 as never)).toThrow(
      /snpRmpEntry: gpa must be a u64 bigint, got number 4096/,
    );
  });
});
