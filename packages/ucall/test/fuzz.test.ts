// Bad-input fuzz of every public function of ucall (see test-support/fuzz-kit.ts): only
// UcallError, KvmError or deliberate TypeError/RangeError; no state change after a rejection.
import type { Exit, Vcpu } from '@kvmtest/kvm';
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { junk, K, runFuzz } from '../../../test-support/fuzz-kit.js';
import {
  decodeSlot,
  describeUcall,
  encodeSlot,
  formatGuestString,
  getUcall,
  guestGhcb,
  isUcallExit,
  transportFor,
  UCALL,
  UCALL_GUEST_GLOBALS,
  UcallError,
  type UcallPool,
  ucall,
  ucallAssert,
  ucallCmdName,
  ucallFmt,
  ucallInit,
  ucallNone,
  ucallPoolLayout,
  ucallPoolOf,
  ucallReapply,
} from '../src/index.js';
import { createFakeVm, type FakeSetup, type FakeVcpu } from './support/fake-kvm.js';

interface State {
  f: FakeSetup;
  pool: UcallPool;
  v: FakeVcpu;
  other: FakeVcpu;
  fresh: FakeSetup;
}

/** A vCPU whose exits complete at once: guest-half calls run to the end outside a KVM_RUN. */
function instant(v: FakeVcpu): FakeVcpu {
  v.exitToHost = (exit: Exit) => {
    v.exit = exit;
    return Promise.resolve();
  };
  return v;
}

function checksum(bytes: Uint8Array): number {
  let h = 0;
  for (let i = 0; i < bytes.length; i++) h = (Math.imul(h, 31) + bytes[i]!) | 0;
  return h;
}

const cmd = {
  good: fc.oneof(fc.integer({ min: 0, max: 5 }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })),
  bad: (v: unknown) =>
    !(typeof v === 'bigint'
      ? v >= 0n && v < 2n ** 64n
      : typeof v === 'number' && Number.isSafeInteger(v) && v >= 0),
};
const arg = {
  good: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }),
  bad: (v: unknown) => typeof v !== 'bigint' || v < -(2n ** 63n) || v >= 2n ** 64n,
};
const fmt = K.string(
  fc.constantFrom('%d', '%s', '%#lx %s', 'plain', '%*d', '%999999999d', '%.99999s', '%c', '%n'),
);
const values = fc.array(fc.oneof(fc.integer(), fc.bigInt(), fc.string({ maxLength: 4 }), junk), {
  maxLength: 3,
});
const where = K.options(
  fc.record(
    {
      expression: fc.string({ maxLength: 8 }),
      file: fc.string({ maxLength: 8 }),
      line: fc.nat(),
      extra: fc.constantFrom(undefined, [1n], [undefined, 2n]),
    },
    { requiredKeys: ['expression', 'file', 'line'] },
  ),
);
const vcpuKind = (pick: (s: State) => unknown) => ({
  good: fc.constant(pick),
  bad: (v: unknown) => typeof v !== 'function',
});
const MEM = 0x20_0000n;

it('rejects every bad argument of every public function with a typed error and changes nothing', async () => {
  const fig = await runFuzz<State>({
    package: 'ucall',
    runs: 160,
    callsPerRun: 50,
    setup() {
      const f = createFakeVm({ memSize: MEM });
      const pool = ucallInit(f.target, { slots: 4 });
      const v = instant(f.vcpu(0, async () => {}));
      const other = instant(f.vcpu(1, async () => {}));
      v.guest.space = f.space;
      other.guest.space = f.space;
      return { f, pool, v, other, fresh: createFakeVm({ memSize: MEM }) };
    },
    snapshot(s) {
      // The pool (bitmap and slots), this VM's ucall globals, and which pages of the second VM are free.
      const pool = s.f.vm.memory.read(s.pool.gpa, s.pool.layout.size);
      const globals = UCALL_GUEST_GLOBALS.map((g) => checksum(s.f.image.readGlobal(g.name)));
      const region = s.fresh.vm.memory.regions()[0]!;
      let free = 0;
      for (let i = 0; i < region.pages; i++) if (region.isPageFree(i)) free += i;
      return [checksum(pool), globals, free, ucallPoolOf(s.fresh.target.vm) !== undefined];
    },
    isPackageError: (e) => e instanceof UcallError,
    targets: [
      {
        name: 'transportFor',
        params: [K.oneOf('default', 'sev', 'sev-es', 'sev-snp', 'tdx', 'sw-protected')],
        call: (_s, [t]) => transportFor(t as never),
      },
      {
        name: 'ucallCmdName',
        params: [
          {
            good: fc.integer({ min: 0, max: 9 }),
            bad: (v: unknown) => typeof v !== 'bigint' && !(typeof v === 'number' && Number.isSafeInteger(v)),
          },
        ],
        call: (_s, [n]) => ucallCmdName(n as number),
      },
      { name: 'ucallPoolLayout', params: [K.int(1, 512)], call: (_s, [n]) => ucallPoolLayout(n as number) },
      {
        name: 'formatGuestString',
        params: [fmt, K.any(values)],
        call: (_s, [a, b]) => formatGuestString(a as string, b as unknown[]),
      },
      {
        name: 'encodeSlot',
        params: [
          K.options(
            fc.record({
              cmd: fc.constantFrom(1, 2n),
              args: fc.constantFrom(undefined, [1n]),
              message: fc.constantFrom(undefined, 'hi'),
            }),
          ),
        ],
        call: (_s, [c]) => (c === undefined ? encodeSlot(c as never) : encodeSlot(c as never)),
      },
      {
        name: 'decodeSlot',
        params: [
          {
            good: fc.uint8Array({ minLength: 1096, maxLength: 1100 }),
            bad: (v: unknown) => !(v instanceof Uint8Array) || v.length < 1096,
          },
        ],
        call: (_s, [b]) => decodeSlot(b as Uint8Array),
      },
      { name: 'pool.slotGpa', params: [K.int(0, 3)], call: (s, [i]) => s.pool.slotGpa(i as number) },
      { name: 'pool.slotGva', params: [K.int(0, 3)], call: (s, [i]) => s.pool.slotGva(i as number) },
      {
        name: 'pool.slotIndexOf',
        params: [K.any(fc.bigInt({ min: 0n, max: MEM }))],
        call: (s, [g]) => s.pool.slotIndexOf(g as bigint),
      },
      { name: 'pool.inUse', params: [K.int(0, 3)], call: (s, [i]) => s.pool.inUse(i as number) },
      { name: 'pool.ghcbPage', params: [K.any(fc.nat(4))], call: (s, [i]) => s.pool.ghcbPage(i as number) },
      {
        name: 'ucallInit',
        params: [
          K.options(
            fc.record(
              {
                transport: fc.constantFrom(undefined, 'pio', 'mmio', 'ghcb'),
                slots: fc.integer({ min: 1, max: 8 }),
                nrVcpus: fc.constantFrom(undefined, 1, 2),
              },
              { requiredKeys: [] },
            ),
          ),
        ],
        call: (s, [o]) => ucallInit(s.fresh.target, o as never),
      },
      {
        name: 'ucallInit(target)',
        params: [K.options(fc.constant(undefined))],
        call: (_s, [t]) => ucallInit(t as never),
      },
      {
        name: 'ucallReapply',
        params: [vcpuKind((s) => s.f.target)],
        call: (s, [p]) => ucallReapply(typeof p === 'function' ? p(s) : p),
      },
      {
        name: 'ucallPoolOf',
        params: [K.any(fc.constant(undefined))],
        call: (_s, [vm]) => ucallPoolOf(vm as never),
      },
      {
        name: 'getUcall',
        params: [vcpuKind((s) => s.v)],
        call: (s, [p]) => getUcall((typeof p === 'function' ? p(s) : p) as Vcpu),
      },
      {
        name: 'isUcallExit',
        params: [vcpuKind((s) => s.other)],
        call: (s, [p]) => isUcallExit((typeof p === 'function' ? p(s) : p) as Vcpu),
      },
      {
        name: 'describeUcall',
        params: [
          K.options(
            fc.record({
              cmd: fc.nat(6),
              args: fc.constant([1n]),
              message: fc.constantFrom('', 'm'),
              gpa: fc.constant(0n),
              vcpuId: fc.constant(0),
              buffer: fc.constant(''),
            }),
          ),
        ],
        call: (_s, [u]) => describeUcall(u as never),
      },
      {
        name: 'ucall',
        params: [cmd, arg, arg],
        call: (s, [c, a, b]) => ucall(s.v.guest, c as number, a as bigint, b as bigint),
      },
      { name: 'ucall(other vCPU)', params: [cmd], call: (s, [c]) => ucall(s.other.guest, c as number) },
      {
        name: 'ucallFmt',
        params: [cmd, fmt, K.any(values)],
        call: (s, [c, f, vs]) =>
          ucallFmt(s.v.guest, c as number, f as string, ...(Array.isArray(vs) ? vs : [vs])),
      },
      {
        name: 'ucallAssert',
        params: [cmd, where, fmt],
        call: (s, [c, w, f]) => ucallAssert(s.v.guest, c as number, w as never, f as string, 1, 'x'),
      },
      { name: 'ucallNone', params: [], call: (s) => ucallNone(s.v.guest) },
      { name: 'guestGhcb', params: [], call: (s) => guestGhcb(s.v.guest) },
      {
        name: 'ucall(no guest)',
        params: [{ good: fc.constant(UCALL.SYNC), bad: () => true }],
        call: (_s, [c]) => ucall(c as never, 1),
      },
    ],
  });
  expect(fig.examples, `seed ${fig.seed}`).toEqual([]);
  expect(fig.engine + fig.wrongSuccesses + fig.changedAfterRejection).toBe(0);
}, 60_000);
