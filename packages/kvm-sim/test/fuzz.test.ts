// Bad-input fuzz of every public entry point of kvm-sim (see test-support/fuzz-kit.ts):
// createSimKvm and the Kvm, Vm and Vcpu objects it makes. Only KvmError or deliberate
// TypeError/RangeError; no state change after a rejection.
import {
  CAP,
  type Guest,
  GuestException,
  type Kvm,
  KvmError,
  SEV_CMD,
  TDX_CMD,
  tryKvm,
  type Vcpu,
  type Vm,
} from '@kvmtest/kvm';
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { isDeliberate, junk, K, type Kind, runFuzz } from '../../../test-support/fuzz-kit.js';
import {
  createSimKvm,
  resolveConfig,
  simStats,
  snpLaunchReport,
  snpRmpEntry,
  tdxReport,
  tdxVcpuReport,
} from '../src/index.js';
import { DATA_GVA, guestVm } from './helpers.js';

interface State {
  kvm: Kvm;
  vm: Vm;
  snp: Vm;
  vcpu: Vcpu;
  spare: Vcpu;
  mem: Uint8Array;
}

const SIZE = 0x10000;
const gvaK = K.u64(
  fc.oneof(
    fc.bigInt({ min: DATA_GVA - 0x1000n, max: DATA_GVA + 0x11000n }),
    fc.constantFrom(0n, 2n ** 47n, 2n ** 64n - 8n),
  ),
);
const u64 = K.u64(fc.oneof(fc.bigInt({ min: 0n, max: 0x20000n }), fc.constantFrom(0x1000n, 2n ** 64n - 1n)));
const cap = K.any(fc.integer({ min: -1, max: 300 }));
const fd = K.any(fc.integer({ min: 0, max: 40 }));
const config = K.options(
  fc.record(
    {
      vendor: fc.constantFrom(undefined, 'amd', 'intel'),
      maxVcpus: fc.integer({ min: 1, max: 64 }),
      cpu: fc.record(
        { cBit: fc.constantFrom(47, 51), sevVmsaFeatures: fc.constantFrom(0n, 32n) },
        { requiredKeys: [] },
      ),
    },
    { requiredKeys: [] },
  ),
);
const region = K.options(
  fc.record({
    slot: fc.integer({ min: 0, max: 3 }),
    flags: fc.constantFrom(0, 4),
    guestPhysAddr: fc.constantFrom(0n, 0x10000n, 0x20000n),
    memorySize: fc.constantFrom(0n, 0x1000n, 0x10000n),
    userspace: fc.constantFrom(undefined, new Uint8Array(0x1000), new Uint8Array(SIZE)),
  }),
);
const sevCmd = K.options(
  fc.record(
    {
      id: fc.constantFrom(SEV_CMD.INIT, SEV_CMD.ES_INIT, SEV_CMD.LAUNCH_START, 99),
      sevFd: fc.nat(20),
      error: fc.constantFrom(undefined, null, 0),
      data: fc.constantFrom(undefined, {}),
    },
    { requiredKeys: ['id'] },
  ),
);
const tdxCmd = K.options(
  fc.record(
    {
      id: fc.constantFrom(TDX_CMD.CAPABILITIES, TDX_CMD.INIT_VCPU, 77),
      flags: fc.constant(0),
      hwError: fc.constantFrom(0n, null, undefined),
      data: fc.constantFrom(undefined, {}),
    },
    { requiredKeys: ['id', 'flags'] },
  ),
);
const regsLike = K.options(fc.constant({ rax: 1n }));
const vmArg = (pick: (s: State) => unknown) => ({
  good: fc.constant(pick),
  bad: (v: unknown) => typeof v !== 'function',
});
const resolve = (s: State, v: unknown) => (typeof v === 'function' ? v(s) : v);

function checksum(bytes: Uint8Array): number {
  let h = 0;
  for (let i = 0; i < bytes.length; i += 4) h = (Math.imul(h, 31) + (bytes[i]! | (bytes[i + 3]! << 8))) | 0;
  return h;
}

it('rejects every bad argument of every public entry point with a typed error and changes nothing', async () => {
  const fig = await runFuzz<State>({
    package: 'kvm-sim',
    runs: 100,
    callsPerRun: 50,
    setup() {
      const kvm = createSimKvm();
      const vm = kvm.createVm();
      const mem = new Uint8Array(SIZE);
      vm.setUserMemoryRegion({
        slot: 0,
        flags: 0,
        guestPhysAddr: 0n,
        memorySize: BigInt(SIZE),
        userspace: mem,
      });
      const vcpu = vm.createVcpu(0);
      vcpu.setEntry(async (g) => {
        for (;;) await g.hlt();
      });
      return { kvm, vm, snp: kvm.createVm('sev-snp'), vcpu, spare: vm.createVcpu(1), mem };
    },
    teardown(s) {
      for (const vm of [s.vm, s.snp]) if (!vm.closed) vm.close();
    },
    snapshot(s) {
      return [
        s.vm.closed,
        s.vm.vcpus.length,
        (s.vm as unknown as { memslotCount: number }).memslotCount,
        tryKvm(() => s.vm.getMemoryAttributes(0x1000n)),
        tryKvm(() => JSON.stringify(s.vcpu.getRegs(), (_k, v) => (typeof v === 'bigint' ? `${v}` : v))),
        tryKvm(() => JSON.stringify(s.vcpu.getSregs(), (_k, v) => (typeof v === 'bigint' ? `${v}` : v))),
        tryKvm(() => s.vcpu.getCpuid().length),
        tryKvm(() => s.vcpu.getMsr(0x10)),
        checksum(s.mem),
        s.snp.closed,
        s.snp.vcpus.length,
      ];
    },
    isPackageError: (e) => e instanceof KvmError,
    targets: [
      { name: 'createSimKvm', params: [config], call: (_s, [c]) => createSimKvm(c as never) },
      { name: 'resolveConfig', params: [config], call: (_s, [c]) => resolveConfig(c as never) },
      { name: 'simStats', params: [vmArg((s) => s.kvm)], call: (s, [k]) => simStats(resolve(s, k)) },
      { name: 'kvm.checkExtension', params: [cap], call: (s, [c]) => s.kvm.checkExtension(c as number) },
      { name: 'kvm.getSupportedCpuid', params: [], call: (s) => s.kvm.getSupportedCpuid() },
      {
        name: 'kvm.getDeviceAttr',
        params: [K.int(0, 0xffff_ffff), K.int(0, 0xffff_ffff)],
        call: (s, [g, a]) => s.kvm.getDeviceAttr(g as number, a as number),
      },
      {
        name: 'kvm.createVm',
        params: [K.any(fc.constantFrom(undefined, 'default', 'sev', 'sev-snp', 'tdx', 0, 2))],
        call: (s, [t]) => s.kvm.createVm(t as never).close(),
      },
      { name: 'kvm.openSevDevice', params: [], call: (s) => s.kvm.closeFd(s.kvm.openSevDevice()) },
      {
        name: 'kvm.closeFd',
        params: [fd],
        call: (s, [f]) =>
          f === s.vm.fd || f === s.snp.fd || f === s.vcpu.fd ? undefined : s.kvm.closeFd(f as number),
      },
      { name: 'kvm.isFdOpen', params: [fd], call: (s, [f]) => s.kvm.isFdOpen(f as number) },
      { name: 'vm.checkExtension', params: [cap], call: (s, [c]) => s.vm.checkExtension(c as number) },
      {
        name: 'vm.setUserMemoryRegion',
        params: [region],
        call: (s, [r]) => s.vm.setUserMemoryRegion(r as never),
      },
      {
        name: 'vm.createGuestMemfd',
        params: [u64, K.any(fc.constantFrom(undefined, 0n))],
        call: (s, [n, f]) => s.kvm.closeFd(s.snp.createGuestMemfd(n as bigint, f as bigint)),
      },
      {
        name: 'vm.setMemoryAttributes',
        params: [
          K.options(
            fc.record({
              address: fc.constantFrom(0n, 0x1000n),
              size: fc.constantFrom(0x1000n, 0x2000n),
              attributes: fc.constantFrom(0n, 8n),
            }),
          ),
        ],
        call: (s, [a]) => s.vm.setMemoryAttributes(a as never),
      },
      {
        name: 'vm.getMemoryAttributes',
        params: [u64],
        call: (s, [g]) => s.vm.getMemoryAttributes(g as bigint),
      },
      { name: 'vm.createVcpu', params: [K.int(0, 100)], call: (s, [id]) => s.vm.createVcpu(id as number) },
      {
        name: 'vm.enableCap',
        params: [
          K.oneOf(CAP.EXIT_HYPERCALL, CAP.MAX_VCPU_ID, 12345),
          K.any(fc.constantFrom([], [0], [1n], [0x1000n])),
          K.any(fc.constantFrom(undefined, 0)),
        ],
        call: (s, [c, a, f]) => s.vm.enableCap(c as number, a as never, f as number),
      },
      { name: 'vm.memEncryptOp', params: [sevCmd], call: (s, [c]) => s.vm.memEncryptOp(c as never) },
      { name: 'snp.memEncryptOp', params: [sevCmd], call: (s, [c]) => s.snp.memEncryptOp(c as never) },
      {
        name: 'vm.memEncryptRegRegion',
        params: [
          K.options(
            fc.record({
              addr: fc.constant({ buffer: new Uint8Array(0x1000), offset: 0 }),
              size: fc.constant(0x1000n),
            }),
          ),
        ],
        call: (s, [r]) => s.snp.memEncryptRegRegion(r as never),
      },
      {
        name: 'vm.memEncryptUnregRegion',
        params: [
          K.options(
            fc.record({
              addr: fc.constant({ buffer: new Uint8Array(0x1000), offset: 0 }),
              size: fc.constant(0x1000n),
            }),
          ),
        ],
        call: (s, [r]) => s.snp.memEncryptUnregRegion(r as never),
      },
      {
        name: 'vm.setGuestSymbols',
        params: [{ good: fc.constant(new Map([['x', 0x1000n]])), bad: (v: unknown) => !(v instanceof Map) }],
        call: (s, [m]) => s.vm.setGuestSymbols(m as never),
      },
      { name: 'vcpu.getRegs', params: [], call: (s) => s.vcpu.getRegs() },
      { name: 'vcpu.setRegs', params: [regsLike], call: (s, [r]) => s.vcpu.setRegs(r as never) },
      {
        name: 'vcpu.setRegs(getRegs)',
        params: [
          K.any(fc.constantFrom('rip', 'rax', 'rflags')),
          K.any(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })),
        ],
        call: (s, [k, v]) => s.vcpu.setRegs({ ...s.vcpu.getRegs(), [typeof k === 'string' ? k : 'rax']: v }),
      },
      { name: 'vcpu.getSregs', params: [], call: (s) => s.vcpu.getSregs() },
      {
        name: 'vcpu.setSregs(getSregs)',
        params: [
          K.any(fc.constantFrom('cr0', 'cr3', 'cr4', 'efer')),
          K.any(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })),
        ],
        call: (s, [k, v]) =>
          s.vcpu.setSregs({ ...s.vcpu.getSregs(), [typeof k === 'string' ? k : 'cr0']: v }),
      },
      {
        name: 'vcpu.setCpuid',
        params: [
          K.any(fc.constantFrom([], [{ function: 0, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 }])),
        ],
        call: (s, [e]) => s.vcpu.setCpuid(e as never),
      },
      { name: 'vcpu.getCpuid', params: [], call: (s) => s.vcpu.getCpuid() },
      { name: 'vcpu.getMsr', params: [K.int(0, 0xffff_ffff)], call: (s, [i]) => s.vcpu.getMsr(i as number) },
      {
        name: 'vcpu.setMsr',
        params: [K.oneOf(0x10, 0xc0000080, 0x1b), u64],
        call: (s, [i, v]) => s.vcpu.setMsr(i as number, v as bigint),
      },
      { name: 'vcpu.memEncryptOp', params: [tdxCmd], call: (s, [c]) => s.vcpu.memEncryptOp(c as never) },
      {
        name: 'vcpu.setEntry',
        params: [{ good: fc.constant(async () => {}), bad: (v: unknown) => typeof v !== 'function' }],
        call: (s, [p]) => s.spare.setEntry(p as never),
      },
      {
        name: 'vcpu.run',
        params: [K.options(fc.record({ immediateExit: fc.boolean() }, { requiredKeys: [] }))],
        call: (s, [o]) => s.vcpu.run(o as never),
      },
      {
        name: 'snpRmpEntry',
        params: [K.any(fc.constant((s: State) => s.snp)), u64],
        call: (s, [v, g]) => snpRmpEntry(resolve(s, v), g as bigint),
      },
      { name: 'snpLaunchReport', params: [K.any(junk)], call: (_s, [v]) => snpLaunchReport(v as never) },
      { name: 'tdxReport', params: [K.any(junk)], call: (_s, [v]) => tdxReport(v as never) },
      { name: 'tdxVcpuReport', params: [K.any(junk)], call: (_s, [v]) => tdxVcpuReport(v as never) },
    ],
  });
  expect(fig.examples, `seed ${fig.seed}`).toEqual([]);
  expect(fig.engine + fig.wrongSuccesses + fig.changedAfterRejection).toBe(0);
}, 60_000);

// The guest's side: a hostile guest program calls every Guest operation with arbitrary operands. Each
// operation must succeed, raise a guest exception, or throw a typed error naming its operand — never an
// engine error — and the host's run loop must keep control (every run returns).
const GUEST_OPS: Record<string, { params: Kind[]; op: (g: Guest, a: unknown[]) => unknown }> = {
  readU8: { params: [gvaK], op: (g, [a]) => g.readU8(a as bigint) },
  readU16: { params: [gvaK], op: (g, [a]) => g.readU16(a as bigint) },
  readU32: { params: [gvaK], op: (g, [a]) => g.readU32(a as bigint) },
  readU64: { params: [gvaK], op: (g, [a]) => g.readU64(a as bigint) },
  writeU8: { params: [gvaK, K.int(0, 0xff)], op: (g, [a, v]) => g.writeU8(a as bigint, v as number) },
  writeU16: { params: [gvaK, K.int(0, 0xffff)], op: (g, [a, v]) => g.writeU16(a as bigint, v as number) },
  writeU32: {
    params: [gvaK, K.int(0, 0xffff_ffff)],
    op: (g, [a, v]) => g.writeU32(a as bigint, v as number),
  },
  writeU64: { params: [gvaK, u64], op: (g, [a, v]) => g.writeU64(a as bigint, v as bigint) },
  readBytes: { params: [gvaK, K.count(0x3000)], op: (g, [a, n]) => g.readBytes(a as bigint, n as number) },
  writeBytes: { params: [gvaK, K.bytes(64)], op: (g, [a, d]) => g.writeBytes(a as bigint, d as Uint8Array) },
  testAndSetBit: {
    params: [gvaK, K.count(64)],
    op: (g, [a, b]) => g.testAndSetBit(a as bigint, b as number),
  },
  clearBit: { params: [gvaK, K.count(64)], op: (g, [a, b]) => g.clearBit(a as bigint, b as number) },
  global: { params: [K.string(fc.constantFrom('x', 'missing'))], op: (g, [n]) => g.global(n as string) },
  cpuid: {
    params: [K.int(0, 0xffff_ffff), K.any(fc.constantFrom(undefined, 0, 1))],
    op: (g, [l, s]) => g.cpuid(l as number, s as number),
  },
  rdmsr: {
    params: [K.any(fc.constantFrom(0x10, 0xc0000080, 0x1b, 0xdead))],
    op: (g, [m]) => g.rdmsr(m as number),
  },
  wrmsr: {
    params: [K.any(fc.constantFrom(0x10, 0xc0000080, 0xdead)), u64],
    op: (g, [m, v]) => g.wrmsr(m as number, v as bigint),
  },
  out: {
    params: [K.int(0, 0xffff), K.oneOf(1, 2, 4), K.int(0, 0xff)],
    op: (g, [p, s, v]) => g.out(p as number, s as never, v as number),
  },
  in: { params: [K.int(0, 0xffff), K.oneOf(1, 2, 4)], op: (g, [p, s]) => g.in(p as number, s as never) },
  mmioWrite: {
    params: [K.u64(fc.constantFrom(0x100_0000n, 0x40_0000n)), K.oneOf(1, 2, 4, 8), u64],
    op: (g, [a, s, v]) => g.mmioWrite(a as bigint, s as number, v as bigint),
  },
  mmioRead: {
    params: [K.u64(fc.constantFrom(0x100_0000n)), K.oneOf(1, 2, 4, 8)],
    op: (g, [a, s]) => g.mmioRead(a as bigint, s as number),
  },
  hypercall: {
    params: [u64, K.any(fc.constantFrom(undefined, [], [1n, 2n]))],
    op: (g, [n, a]) => g.hypercall(n as bigint, a as never),
  },
  readCr: { params: [K.oneOf(0, 2, 3, 4)], op: (g, [n]) => g.readCr?.(n as never) },
  writeCr: { params: [K.oneOf(0, 3, 4), u64], op: (g, [n, v]) => g.writeCr?.(n as never, v as bigint) },
  hlt: { params: [], op: (g) => g.hlt() },
  setExceptionHandler: {
    params: [K.any(fc.constantFrom(undefined, () => 'skip' as const))],
    op: (g, [h]) => g.setExceptionHandler(h as never),
  },
};

it('a hostile guest gets a guest exception or a typed error from every operation, never an engine error', async () => {
  const names = Object.keys(GUEST_OPS);
  const opArb = fc
    .constantFrom(...names)
    .chain((name) =>
      fc.tuple(
        fc.constant(name),
        fc.tuple(...GUEST_OPS[name]!.params.map((p) => fc.oneof({ weight: 2, arbitrary: p.good }, junk))),
      ),
    );
  let inputs = 0;
  let typed = 0;
  let engine = 0;
  let runs = 0;
  let longest = 0;
  let longestOp = '';
  const examples: string[] = [];
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 30 }), async (ops) => {
      const t = guestVm(createSimKvm());
      let done = false;
      const vcpu = t.vcpu(async (g) => {
        for (const [name, args] of ops) {
          inputs++;
          const start = performance.now();
          try {
            const r = GUEST_OPS[name]!.op(g, args);
            if (r instanceof Promise) await r;
          } catch (e) {
            if (e instanceof Error && e.name === 'GuestUnwind') throw e;
            const ms = performance.now() - start;
            if (ms > longest) [longest, longestOp] = [ms, name];
            if (e instanceof GuestException || e instanceof KvmError || isDeliberate(e)) typed++;
            else {
              engine++;
              if (examples.length < 10)
                examples.push(`${name} → ${(e as Error).name}: ${(e as Error).message}`);
            }
          }
        }
        done = true;
      });
      for (let i = 0; i < ops.length * 2 + 4 && !done; i++) {
        runs++;
        const exit = await vcpu.run();
        if (exit.reason === 'shutdown' || exit.reason === 'internal-error' || exit.reason === 'system-event')
          break;
      }
      t.vm.close();
    }),
    { numRuns: Number(process.env.KVMTEST_FC_RUNS) || 400 },
  );
  console.log(
    `fuzz kvm-sim guest: ${inputs} operations in ${runs} runs, ${typed} typed errors or guest exceptions, ` +
      `${engine} engine errors; longest rejected operation ${longest.toFixed(1)} ms (${longestOp})`,
  );
  expect(examples).toEqual([]);
}, 60_000);
