// Benchmark of the simulated TDX launch: KVM_TDX_INIT_VM through KVM_TDX_FINALIZE_VM with 1 MiB of
// initial memory added and measured by KVM_TDX_INIT_MEM_REGION (SHA-384 over every page).

import { type Bench, nsPerOpSync } from '../../../scripts/bench/measure.js';
import { createSimKvm } from '../src/index.js';
import { launchTd } from '../src/internal/tdx/harness.test-support.js';
import { tdxReport } from '../src/internal/tdx/report.js';

const benches: Bench[] = [
  {
    name: 'kvm-sim.tdx-launch',
    unit: 'ns/op',
    goal: '<= 3 ms',
    reference: 'real TDX: TDH.MEM.PAGE.ADD + 16 TDH.MR.EXTEND per 4 KiB page, tens of ms per MiB',
    run() {
      const kvm = createSimKvm();
      const image = new Uint8Array(1 << 20);
      for (let i = 0; i < image.length; i += 64) image[i] = i & 0xff;
      const check = launchTd(kvm, image);
      // Reading the report folds the MRTD, which the timed launches below leave deferred.
      if (tdxReport(check.vm)?.pagesMeasured !== 256) throw new Error('the launch did not measure 256 pages');
      check.vm.close();
      kvm.closeFd(check.gmemFd);
      // The VMM's memory behind the slot is allocated once, as a VMM would reuse its mapping.
      const shared = new Uint8Array(image.length);
      return nsPerOpSync(() => {
        const td = launchTd(kvm, image, 0n, 48, shared);
        td.vm.close();
        kvm.closeFd(td.gmemFd);
      });
    },
  },
];

export default benches;
