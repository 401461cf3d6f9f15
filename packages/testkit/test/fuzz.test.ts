// Bad-input fuzz of testkit's public functions (see test-support/fuzz-kit.ts): only the
// kit's errors (TestkitError, TestAssertionError, KsftSkip, guest failures), the lower layers' typed
// errors (KvmError, UcallError, GuestMemoryError) or deliberate TypeError/RangeError; no state change
// after a rejection.
import { GuestMemoryError } from '@kvmtest/guest-memory';
import { KvmError, type Vcpu } from '@kvmtest/kvm';
import { UCALL, UcallError } from '@kvmtest/ucall';
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { junk, K, runFuzz } from '../../../test-support/fuzz-kit.js';
import {
  addrGva2Gpa,
  addrGva2Hva,
  assertExitReason,
  defineGuest,
  formatString,
  GuestAssertionError,
  GuestUnhandledError,
  getKvm,
  KsftSkip,
  kvmFromEnv,
  lastUcall,
  readGuestGlobal,
  readGuestGlobalBytes,
  runUcall,
  runUcallExpect,
  supportedVmTypes,
  TestAssertionError,
  TestkitError,
  type TestVm,
  tagPolicyFor,
  testAssert,
  testAssertEq,
  testFail,
  testRequire,
  testRequireVmType,
  ucallPagesRequired,
  vcpuRun,
  vmCreate,
  vmCreateBarebones,
  vmCreateWithOneVcpu,
  vmCreateWithVcpus,
  vmInstallExceptionHandler,
  vmNrPagesRequired,
  vmReloadImage,
  vmTypeSupported,
  vmVaddrAlloc,
  vmVaddrAllocShared,
  writeGuestGlobal,
} from '../src/index.js';
import { guestSync } from '../src/index.js';

const guest = defineGuest(
  async (g) => {
    for (;;) await guestSync(g, g.readU64(g.global('answer')));
  },
  { globals: { answer: 42n } },
);

interface State {
  vm: TestVm;
  vcpu: Vcpu;
  bare: TestVm;
  closed: TestVm;
  closedVcpu: Vcpu;
}

const vmArg = (pick: (s: State) => unknown) => ({
  good: fc.constant(pick),
  bad: (v: unknown) => typeof v !== 'function',
});
const resolve = (s: State, v: unknown) => (typeof v === 'function' ? v(s) : v);
const anyVm = K.any(
  fc.constantFrom(
    (s: State) => s.vm,
    (s: State) => s.bare,
    (s: State) => s.closed,
  ),
);
const gva = K.u64(fc.constantFrom(0x2000n, 0x3000n, 0x10_0000n, 2n ** 47n));
const globalName = K.string(fc.constantFrom('answer', 'missing', 'ucall_pool'));
const vmType = K.any(fc.constantFrom('default', 'sev', 'sev-es', 'sev-snp', 'tdx', 'sw-protected'));
const fmt = K.string(fc.constantFrom('%d', '%s %x', '%*d|', '%.3s', '%9999999d', '%-5lu', 'plain'));
const values = fc.array(fc.oneof(fc.integer(), fc.bigInt(), fc.string({ maxLength: 4 }), junk), {
  maxLength: 3,
});

it('rejects every bad argument of every public function with a typed error and changes nothing', async () => {
  const fig = await runFuzz<State>({
    package: 'testkit',
    runs: 100,
    callsPerRun: 40,
    setup() {
      const vm = vmCreateWithOneVcpu(guest);
      const closed = vmCreateWithOneVcpu(guest);
      const closedVcpu = closed.vcpus[0]!;
      closed.close();
      return { vm, vcpu: vm.vcpus[0]!, bare: vmCreateBarebones(), closed, closedVcpu };
    },
    teardown(s) {
      s.vm.close();
      s.bare.close();
    },
    snapshot(s) {
      const region = s.vm.closed ? undefined : s.vm.space.memory.regions()[0];
      let free = 0;
      if (region) for (let i = 0; i < region.pages; i++) if (region.isPageFree(i)) free += i;
      return [
        s.vm.closed,
        s.vm.vcpus.length,
        s.vm.closed ? 0n : s.vm.image.readGlobalU64('answer'),
        s.vm.closed ? 0n : s.vm.image.globalGva('answer'),
        free,
        s.bare.closed,
        s.bare.vcpus.length,
      ];
    },
    isPackageError: (e) =>
      e instanceof TestkitError ||
      e instanceof TestAssertionError ||
      e instanceof KsftSkip ||
      e instanceof GuestAssertionError ||
      e instanceof GuestUnhandledError ||
      e instanceof UcallError ||
      e instanceof GuestMemoryError ||
      e instanceof KvmError,
    targets: [
      {
        name: 'formatString',
        params: [fmt, K.any(values)],
        call: (_s, [f, v]) => formatString(f as string, ...(Array.isArray(v) ? v : [v])),
      },
      {
        name: 'testAssert',
        params: [K.any(fc.boolean()), K.any(fmt.good), K.any(fc.integer())],
        call: (_s, [c, f, v]) => testAssert(c, f as string, v as number),
      },
      {
        name: 'testAssertEq',
        params: [K.any(fc.constantFrom(1, 1n, 'a')), K.any(fc.constantFrom(1, 1n, 'a'))],
        call: (_s, [a, b]) => testAssertEq(a as never, b as never),
      },
      { name: 'testFail', params: [fmt], call: (_s, [f]) => testFail(f as string) },
      {
        name: 'testRequire',
        params: [K.any(fc.boolean()), K.any(fc.constantFrom(undefined, 'why'))],
        call: (_s, [c, w]) => testRequire(c, w as string),
      },
      { name: 'testRequireVmType', params: [vmType], call: (_s, [t]) => testRequireVmType(t as never) },
      {
        name: 'supportedVmTypes',
        params: [K.any(fc.constant(undefined))],
        call: (_s, [k]) => supportedVmTypes(k as never),
      },
      { name: 'vmTypeSupported', params: [vmType], call: (_s, [t]) => vmTypeSupported(t as never) },
      {
        name: 'tagPolicyFor',
        params: [vmType, K.any(fc.constant(getKvm().getSupportedCpuid()))],
        call: (_s, [t, c]) => tagPolicyFor(t as never, c as never),
      },
      {
        name: 'ucallPagesRequired',
        params: [
          {
            good: fc.constantFrom(undefined, 1, 512),
            bad: (v: unknown) => v !== undefined && K.int(1, 512).bad(v),
          },
          // nrVcpus defaults to 0, so undefined is as good as a number here.
          {
            good: fc.constantFrom(undefined, 0, 1, 512),
            bad: (v: unknown) => v !== undefined && K.int(0, 512).bad(v),
          },
        ],
        call: (_s, [a, b]) => ucallPagesRequired(a as number, b as number),
      },
      {
        name: 'vmNrPagesRequired',
        params: [K.int(1, 64), K.options(fc.record({ extraPages: fc.nat(10) }, { requiredKeys: [] }))],
        call: (_s, [n, o]) => vmNrPagesRequired(n as number, o as never),
      },
      {
        name: 'kvmFromEnv',
        params: [K.options(fc.constantFrom({}, { KVMTEST_BACKEND: 'sim' }, { KVMTEST_BACKEND: 'nope' }))],
        call: (_s, [e]) => kvmFromEnv(e as never),
      },
      {
        name: 'vmCreate',
        params: [
          K.any(fc.constantFrom(undefined, 'default', 'sev', { type: 'tdx' })),
          K.options(
            fc.record({ nrVcpus: fc.integer({ min: 1, max: 2 }), ucall: fc.boolean() }, { requiredKeys: [] }),
          ),
        ],
        call: (_s, [sh, o]) => vmCreate(sh as never, o as never).close(),
      },
      {
        name: 'vmCreateBarebones',
        params: [K.any(fc.constantFrom(undefined, 'default', 'sev')), K.options(fc.constant({}))],
        call: (_s, [sh, o]) => vmCreateBarebones(sh as never, o as never).close(),
      },
      {
        name: 'vmCreateWithVcpus',
        params: [
          {
            good: fc.integer({ min: 1, max: 3 }),
            bad: (v: unknown) => typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1,
          },
          K.any(fc.constant(guest)),
          K.any(fc.constantFrom(undefined, 'default')),
        ],
        call: (_s, [n, g, sh]) => vmCreateWithVcpus(n as number, g as never, sh as never).close(),
      },
      {
        name: 'vmCreateWithOneVcpu',
        params: [
          K.any(fc.constant(guest)),
          K.any(fc.constantFrom(undefined, 'sev-es')),
          K.options(fc.constant({})),
        ],
        call: (_s, [g, sh, o]) => vmCreateWithOneVcpu(g as never, sh as never, o as never).close(),
      },
      {
        name: 'TestVm.addVcpu',
        params: [
          {
            good: fc.integer({ min: 1, max: 7 }),
            bad: (v: unknown) => typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0,
          },
          {
            good: fc.constantFrom(undefined, guest),
            bad: (v: unknown) => v !== undefined && typeof v !== 'function',
          },
        ],
        call: (s, [id, g]) => s.vm.addVcpu(id as number, g as never),
      },
      { name: 'closed.addVcpu', params: [K.int(1, 7)], call: (s, [id]) => s.closed.addVcpu(id as number) },
      {
        name: 'vmVaddrAlloc',
        params: [
          anyVm,
          K.any(fc.constantFrom(1, 4096n, 0x3000n)),
          K.options(fc.record({ minGva: fc.constantFrom(0x10_0000n) }, { requiredKeys: [] })),
        ],
        call: (s, [v, n, o]) => vmVaddrAlloc(resolve(s, v), n as never, o as never),
      },
      {
        name: 'vmVaddrAllocShared',
        params: [anyVm, K.any(fc.constantFrom(1, 4096n)), K.options(fc.constant({}))],
        call: (s, [v, n, o]) => vmVaddrAllocShared(resolve(s, v), n as never, o as never),
      },
      {
        name: 'addrGva2Gpa',
        params: [anyVm, gva],
        call: (s, [v, g]) => addrGva2Gpa(resolve(s, v), g as bigint),
      },
      {
        name: 'addrGva2Hva',
        params: [anyVm, gva],
        call: (s, [v, g]) => addrGva2Hva(resolve(s, v), g as bigint),
      },
      {
        name: 'writeGuestGlobal',
        params: [anyVm, globalName, K.any(fc.constantFrom(1n, new Uint8Array(8), new Uint8Array(9)))],
        call: (s, [v, n, x]) => writeGuestGlobal(resolve(s, v), n as string, x as never),
      },
      {
        name: 'readGuestGlobal',
        params: [anyVm, globalName],
        call: (s, [v, n]) => readGuestGlobal(resolve(s, v), n as string),
      },
      {
        name: 'readGuestGlobalBytes',
        params: [anyVm, globalName],
        call: (s, [v, n]) => readGuestGlobalBytes(resolve(s, v), n as string),
      },
      {
        name: 'vmInstallExceptionHandler',
        params: [anyVm, K.int(0, 31), K.any(fc.constantFrom(undefined, () => 'skip' as const))],
        call: (s, [v, n, h]) => vmInstallExceptionHandler(resolve(s, v), n as number, h as never),
      },
      { name: 'vmReloadImage', params: [anyVm], call: (s, [v]) => vmReloadImage(resolve(s, v)) },
      { name: 'runUcall', params: [vmArg((s) => s.vcpu)], call: (s, [v]) => runUcall(resolve(s, v)) },
      {
        name: 'runUcall(closed)',
        params: [vmArg((s) => s.closedVcpu)],
        call: (s, [v]) => runUcall(resolve(s, v)),
      },
      {
        name: 'runUcallExpect',
        params: [vmArg((s) => s.vcpu), K.any(fc.constantFrom(UCALL.SYNC, UCALL.DONE))],
        call: (s, [v, c]) => runUcallExpect(resolve(s, v), c as number),
      },
      { name: 'vcpuRun', params: [vmArg((s) => s.vcpu)], call: (s, [v]) => vcpuRun(resolve(s, v)) },
      { name: 'lastUcall', params: [vmArg((s) => s.vcpu)], call: (s, [v]) => lastUcall(resolve(s, v)) },
      {
        name: 'assertExitReason',
        params: [vmArg((s) => s.vcpu), K.any(fc.constantFrom('io', 'hlt'))],
        call: (s, [v, r]) => assertExitReason(resolve(s, v), r as never),
      },
      {
        name: 'defineGuest',
        params: [
          { good: fc.constant(async () => {}), bad: (v: unknown) => typeof v !== 'function' },
          K.options(fc.constantFrom({}, { globals: { x: 1n } })),
        ],
        call: (_s, [p, d]) => defineGuest(p as never, d as never),
      },
    ],
  });
  expect(fig.examples, `seed ${fig.seed}`).toEqual([]);
  expect(fig.engine + fig.wrongSuccesses + fig.changedAfterRejection).toBe(0);
}, 120_000);
