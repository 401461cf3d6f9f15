// Benchmarks of guest programs on /dev/kvm through the guest agent: a ucall round trip of a default
// VM made by testkit (guest SYNC → run() resolves → getUcall decodes it → run again) against the
// selftests-shaped C loop (bench/agent-baseline.c: KVM_RUN + KVM_GET_REGS + copy of struct ucall),
// and one readU64 through the agent against a bare exit round trip (a real-mode OUT loop, as
// kvm-linux.bench.ts measures linux.exit-roundtrip), each pair in interleaved rounds in this process
// tree, medians reported. Skipped with a note where /dev/kvm is unusable (and the C figure where no
// compiler exists). The bench reaches testkit and ucall from source: they sit above kvm-linux, and
// the round trip they make is the one users pay.

import type { Bench } from '../../../scripts/bench/measure.js';
import { defineGuest, guestSync, vmCreateWithOneVcpu } from '../../testkit/src/index.js';
import { getUcall } from '../../ucall/src/index.js';
import { kvmAvailability, type LinuxKvm, type LinuxVcpu, openLinuxKvm } from '../src/index.js';
import { agentRunnerOf, registerGuestAgent } from '../src/internal/agent/index.js';
import { cBaseline, cc, median, outLoopVcpu } from './support.js';

const ROUNDS = 5;
const UCALL_OPS = 2_000;
const READ_OPS = 5_000;
const EXIT_OPS = 10_000;

const avail = kvmAvailability();
const cProgram = cBaseline('agent-baseline');
/** The C ucall-shaped loop's ns per round trip. */
function cUcall(n: number): number {
  return cProgram('ucall', String(n));
}

const syncLoop = defineGuest(async (g) => {
  for (let i = 0; ; i++) await guestSync(g, i);
});

/** ns per ucall round trip of a testkit default VM on `kvm`. */
async function jsUcall(kvm: LinuxKvm, n: number): Promise<number> {
  using vm = vmCreateWithOneVcpu(syncLoop, 'default', { kvm });
  const vcpu = vm.vcpus[0]!;
  for (let i = 0; i < n / 10; i++) {
    await vcpu.run();
    getUcall(vcpu);
  }
  const runner = agentRunnerOf(vcpu as LinuxVcpu);
  const ops = runner.ops;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    await vcpu.run();
    const uc = getUcall(vcpu);
    if (uc === undefined) throw new Error(`no ucall: ${vcpu.exit?.reason}`);
  }
  const ns = Number(process.hrtime.bigint() - t0) / n;
  runsPerUcall = (runner.ops - ops) / n;
  return ns;
}
/** KVM_RUNs the agent made per ucall round trip in the last measurement. */
let runsPerUcall = 0;

/** ns per readU64 through the agent, timed inside the guest program (no exits in between). */
async function jsReadU64(kvm: LinuxKvm, n: number): Promise<number> {
  let ns = 0;
  const guest = defineGuest(
    async (g) => {
      const gva = g.global('word');
      for (let i = 0; i < n / 10; i++) g.readU64(gva);
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) g.readU64(gva);
      ns = Number(process.hrtime.bigint() - t0) / n;
      await guestSync(g, 0);
    },
    { globals: { word: 7n } },
  );
  using vm = vmCreateWithOneVcpu(guest, 'default', { kvm });
  const e = await vm.vcpus[0]!.run();
  if (e.reason !== 'io') throw new Error(`unexpected exit ${e.reason}`);
  return ns;
}

async function jsExit(vcpu: LinuxVcpu, n: number): Promise<number> {
  for (let i = 0; i < n / 10; i++) await vcpu.run();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await vcpu.run();
  return Number(process.hrtime.bigint() - t0) / n;
}

const figures = new Map<string, number>();
const fmt = (ns: number) => `${(ns / 1000).toFixed(1)} µs`;

async function ucallRounds(): Promise<void> {
  const kvm = openLinuxKvm();
  const js: number[] = [];
  const c: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    js.push(await jsUcall(kvm, UCALL_OPS));
    if (cc) c.push(cUcall(UCALL_OPS * 5));
  }
  kvm.close();
  figures.set('linux.ucall.roundtrip.default', median(js));
  if (cc) figures.set('baseline.c.ucall-roundtrip', median(c));
}

async function readRounds(): Promise<void> {
  const kvm = openLinuxKvm();
  const exitVcpu = outLoopVcpu(kvm);
  const reads: number[] = [];
  const exits: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    reads.push(await jsReadU64(kvm, READ_OPS));
    exits.push(await jsExit(exitVcpu, EXIT_OPS));
  }
  kvm.close();
  figures.set('linux.guest-op.readU64', median(reads));
  figures.set('exit', median(exits));
}

async function figure(name: string, rounds: () => Promise<void>): Promise<number> {
  if (!figures.has(name)) await rounds();
  return figures.get(name)!;
}

const benches: Bench[] = [];
if (!avail.ok) console.error(`agent benchmarks skipped: /dev/kvm unusable (${avail.code}: ${avail.reason})`);
else {
  registerGuestAgent();
  const ucall: Bench = {
    name: 'linux.ucall.roundtrip.default',
    unit: 'ns/op',
    goal: '<= 1.5x baseline.c.ucall-roundtrip',
    async run() {
      const ns = await figure('linux.ucall.roundtrip.default', ucallRounds);
      const c = figures.get('baseline.c.ucall-roundtrip');
      ucall.reference =
        `guest SYNC (pool bit, slot fill, OUT 0x1000) -> run() -> getUcall, testkit default VM, ${runsPerUcall} KVM_RUN per ucall` +
        (c === undefined ? '' : `; ${(ns / c).toFixed(2)}x the C loop (${fmt(c)}) in the same rounds`);
      return ns;
    },
  };
  benches.push(ucall);
  if (cc)
    benches.push({
      name: 'baseline.c.ucall-roundtrip',
      unit: 'ns/op',
      reference: 'bench/agent-baseline.c ucall: KVM_RUN + KVM_GET_REGS + copy of struct ucall',
      run: () => figure('baseline.c.ucall-roundtrip', ucallRounds),
    });
  else console.error('agent baseline skipped: no C compiler (gcc, cc or clang) on PATH');
  const read: Bench = {
    name: 'linux.guest-op.readU64',
    unit: 'ns/op',
    goal: '<= 2.5x linux.exit-roundtrip',
    async run() {
      const ns = await figure('linux.guest-op.readU64', readRounds);
      const exit = figures.get('exit')!;
      read.reference = `one MOV through the guest page tables by the agent; ${(ns / exit).toFixed(2)}x a bare exit round trip (${fmt(exit)}) in the same rounds`;
      return ns;
    },
  };
  benches.push(read);
}

export default benches;
