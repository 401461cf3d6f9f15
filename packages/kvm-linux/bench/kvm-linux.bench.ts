// Benchmarks of the real backend against a C program doing the same loops (bench/baseline.c,
// compiled with the host's C compiler into a temporary directory). C and JS run in interleaved
// rounds in this process tree and each figure is the median of its rounds, so that the load of a
// shared machine moves both alike. Without /dev/kvm (or without a C compiler for the baselines)
// the benchmarks are left out with a note on stderr.

import type { Bench } from '../../../scripts/bench/measure.js';
import { kvmAvailability, type LinuxVcpu, openLinuxKvm } from '../src/index.js';
import { cBaseline, cc, median, outLoopVcpu } from './support.js';

const ROUNDS = 9;
const EXIT_OPS = 10_000;
/** VM creation moves most with load: many short rounds. */
const CREATE_ROUNDS = 21;
const CREATE_OPS = 25;

const avail = kvmAvailability();
const cProgram = cBaseline('baseline');
/** The C loop's ns per operation (`exit`: the OUT round trip, `create`: VM + memslot + vCPU + close). */
function baseline(mode: 'exit' | 'create', n: number): number {
  return cProgram(mode, String(n));
}

async function jsExitRoundtrip(vcpu: LinuxVcpu, n: number): Promise<number> {
  for (let i = 0; i < n / 10; i++) await vcpu.run();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const e = await vcpu.run();
    if (e.reason !== 'io') throw new Error(`unexpected exit ${e.reason}`);
  }
  return Number(process.hrtime.bigint() - t0) / n;
}

function jsVmCreate(n: number): number {
  const kvm = openLinuxKvm();
  const mem = kvm.allocateUserMemory(0x10000).bytes;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const vm = kvm.createVm();
    vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x10000n, userspace: mem });
    vm.createVcpu(0);
    vm.close();
  }
  const ns = Number(process.hrtime.bigint() - t0) / n;
  kvm.close();
  return ns;
}

const figures = new Map<string, number>();

async function exitRounds(): Promise<void> {
  const vcpu = outLoopVcpu();
  const js: number[] = [];
  const c: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    js.push(await jsExitRoundtrip(vcpu, EXIT_OPS));
    if (cc) c.push(baseline('exit', EXIT_OPS));
  }
  vcpu.vm.kvm.closeFd(vcpu.vm.fd);
  figures.set('linux.exit-roundtrip', median(js));
  if (cc) figures.set('baseline.c.exit-roundtrip', median(c));
}

function createRounds(): void {
  const js: number[] = [];
  const c: number[] = [];
  for (let r = 0; r < CREATE_ROUNDS; r++) {
    js.push(jsVmCreate(CREATE_OPS));
    if (cc) c.push(baseline('create', CREATE_OPS));
  }
  figures.set('linux.vm-create', median(js));
  if (cc) figures.set('baseline.c.vm-create', median(c));
}

async function figure(name: string, rounds: () => void | Promise<void>): Promise<number> {
  if (!figures.has(name)) await rounds();
  return figures.get(name)!;
}

const benches: Bench[] = [];
if (!avail.ok)
  console.error(`kvm-linux benchmarks skipped: /dev/kvm unusable (${avail.code}: ${avail.reason})`);
else {
  benches.push({
    name: 'linux.exit-roundtrip',
    unit: 'ns/op',
    goal: '<= 1.3x baseline.c.exit-roundtrip',
    reference: 'guest OUT -> run() resolves -> run() again; median of interleaved rounds with the C loop',
    run: () => figure('linux.exit-roundtrip', exitRounds),
  });
  if (cc)
    benches.push({
      name: 'baseline.c.exit-roundtrip',
      unit: 'ns/op',
      reference: 'bench/baseline.c exit: KVM_RUN -> KVM_EXIT_IO -> KVM_RUN',
      run: () => figure('baseline.c.exit-roundtrip', exitRounds),
    });
  benches.push({
    name: 'linux.vm-create',
    unit: 'ns/op',
    goal: '<= 1.2x baseline.c.vm-create',
    reference: 'createVm + 64 KiB memslot + createVcpu (mmap kvm_run) + close',
    run: () => figure('linux.vm-create', createRounds),
  });
  if (cc)
    benches.push({
      name: 'baseline.c.vm-create',
      unit: 'ns/op',
      reference: 'bench/baseline.c create: the same in C',
      run: () => figure('baseline.c.vm-create', createRounds),
    });
  else console.error('kvm-linux baselines skipped: no C compiler (gcc, cc or clang) on PATH');
}

export default benches;
