// The launch dispatcher: a VM's own table finishes whatever remains of its launch.

import { asTestVm, kitState, type VmLike } from './kit-vm.js';

/**
 * Launches the VM, finishing whatever remains of its launch (the kit calls this before a first run):
 * nothing for types that need none; otherwise the launch hook of the table the VM was made with
 * (SEV: START, UPDATE, MEASURE, FINISH from the current stage on; SNP: SNP_LAUNCH_START, UPDATE,
 * FINISH; a TD: INIT_MEM_REGION and FINALIZE_VM).
 */
export function vmLaunch(vmLike: VmLike): void {
  const vm = asTestVm(vmLike);
  if (!vm.launchPending) return;
  kitState(vm).ops.launch(vm);
}
