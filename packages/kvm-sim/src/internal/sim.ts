// The public entry points of the simulator.

import type { Kvm } from '@kvmtest/kvm';
import type { SimConfig } from './config.js';
import { SimKvm, type SimStats } from './kvm.js';

/** Creates a simulated process with /dev/kvm open: the embedded KVM backend. */
export function createSimKvm(config?: SimConfig): Kvm {
  return new SimKvm(config);
}

/** What a simulated process still holds (open fds, live VMs and vCPUs, guest_memfd bytes), for leak checks. */
export function simStats(kvm: Kvm): SimStats {
  if (!(kvm instanceof SimKvm)) throw new TypeError('simStats: kvm must come from createSimKvm');
  return kvm.stats();
}
