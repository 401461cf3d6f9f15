// testkit figures: one ucall round trip (guest SYNC → host getUcall → resume) and creating a full
// VM with one vCPU and ucall (launched where the type needs it), for every type the backend and
// the kit can run.
import { VM_TYPE_TRAITS, type VmType } from '@kvmtest/coco';
import { type Bench, nsPerOp } from '../../../scripts/bench/measure.js';
import {
  guestDone,
  guestSync,
  runUcall,
  supportedVmTypes,
  vmCreateWithOneVcpu,
  vmLaunch,
} from '../src/index.js';

const types: VmType[] = supportedVmTypes();
const confidential = (t: VmType) => VM_TYPE_TRAITS[t].needsLaunch;

const roundtrip = (type: VmType): Bench => ({
  name: `ucall.roundtrip.${type}`,
  unit: 'ns/op',
  goal: confidential(type) ? '≤ 2000 ns/op' : '≤ 1000 ns/op',
  reference: 'real KVM: ~13 µs for the bare exit',
  async run() {
    using vm = vmCreateWithOneVcpu(async (g) => {
      for (;;) await guestSync(g, 1n);
    }, type);
    const vcpu = vm.vcpus[0]!;
    return await nsPerOp(() => runUcall(vcpu), 500);
  },
});

const create = (type: VmType): Bench => ({
  name: `testkit.vm-create.${type}`,
  unit: 'ns/op',
  goal: confidential(type) ? '≤ 1 000 000 ns/op' : '≤ 200 000 ns/op',
  async run() {
    return nsPerOp(() => {
      using vm = vmCreateWithOneVcpu(guestDone, type);
      vmLaunch(vm);
    }, 500);
  },
});

export default [...types.map(roundtrip), ...types.map(create)] satisfies Bench[];
