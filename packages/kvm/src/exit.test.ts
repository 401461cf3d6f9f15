import { describe, expect, test } from 'vitest';
import { describeExit, EXIT_REASON, type Exit, exitReasonNumber } from './index.js';

describe('exits', () => {
  test('every exit reason maps to its KVM_EXIT_* number', () => {
    const cases: [Exit['reason'], number][] = [
      ['io', 2],
      ['hypercall', 3],
      ['hlt', 5],
      ['mmio', 6],
      ['shutdown', 8],
      ['intr', 10],
      ['internal-error', 17],
      ['system-event', 24],
      ['memory-fault', 39],
    ];
    for (const [reason, n] of cases) expect(exitReasonNumber(reason)).toBe(n);
    expect(EXIT_REASON.TDX).toBe(40);
  });

  test('describeExit names the fields a failure message needs', () => {
    expect(
      describeExit({
        reason: 'io',
        direction: 'out',
        port: 0x1000,
        size: 4,
        count: 1,
        data: new Uint8Array(4),
      }),
    ).toBe('io out port 0x1000 size 4 count 1');
    expect(
      describeExit({ reason: 'memory-fault', gpa: 0x200000n, size: 0x1000n, private: true, errno: 'EFAULT' }),
    ).toBe('memory-fault gpa 0x200000 size 0x1000 private');
    expect(describeExit({ reason: 'system-event', type: 'sev-term', data: [0x100n] })).toBe(
      'system-event sev-term data [0x100]',
    );
    expect(describeExit({ reason: 'intr', budgetExhausted: true })).toBe('intr (guest budget spent)');
  });
});
