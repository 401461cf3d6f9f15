// Checks uapi.ts against the installed <linux/kvm.h>: a C program prints sizeof/offsetof and the
// ioctl numbers, and each must equal ours. Structs newer than the installed header are checked
// only when the header has them (#ifdef); they are cited to the kernel source in uapi.ts.

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CAP_XSAVE2, IOCTL, MAX_XCRS, RUN, SEGMENT, SIZE, SREGS, XCRS } from '../src/internal/uapi.js';

const cc = ['gcc', 'cc', 'clang'].find((c) => spawnSync(c, ['--version']).status === 0);
const header = existsSync('/usr/include/linux/kvm.h');
const skip = !cc ? 'no C compiler (gcc, cc or clang) on PATH' : !header ? 'no /usr/include/linux/kvm.h' : '';
if (skip) console.warn(`uapi layout test skipped: ${skip}`);

/** [our name, C expression, our value, header macro that must exist (newer uapi only)] */
const checks: [string, string, number, string?][] = [];
for (const [k, v] of Object.entries(SIZE)) {
  const guard =
    k === 'kvm_userspace_memory_region2'
      ? 'KVM_SET_USER_MEMORY_REGION2'
      : k === 'kvm_create_guest_memfd'
        ? 'KVM_CREATE_GUEST_MEMFD'
        : k === 'kvm_memory_attributes'
          ? 'KVM_SET_MEMORY_ATTRIBUTES'
          : undefined;
  checks.push([`sizeof ${k}`, `sizeof(struct ${k})`, v, guard]);
}
for (const [k, v] of Object.entries(IOCTL)) checks.push([k, `(unsigned long)${k}`, v, k]);
for (const [k, v] of Object.entries(SREGS))
  checks.push([`kvm_sregs.${k}`, `offsetof(struct kvm_sregs, ${k})`, v]);
for (const [k, v] of Object.entries(SEGMENT))
  checks.push([`kvm_segment.${k}`, `offsetof(struct kvm_segment, ${k})`, v]);
checks.push(['KVM_MAX_XCRS', 'KVM_MAX_XCRS', MAX_XCRS]);
checks.push(['kvm_xcrs.nr_xcrs', 'offsetof(struct kvm_xcrs, nr_xcrs)', XCRS.nr_xcrs]);
checks.push(['kvm_xcrs.flags', 'offsetof(struct kvm_xcrs, flags)', XCRS.flags]);
checks.push(['kvm_xcrs.xcrs', 'offsetof(struct kvm_xcrs, xcrs)', XCRS.xcrs]);
checks.push(['kvm_xcr.xcr', 'offsetof(struct kvm_xcr, xcr)', XCRS.xcr_xcr]);
checks.push(['kvm_xcr.value', 'offsetof(struct kvm_xcr, value)', XCRS.xcr_value]);
checks.push(['KVM_CAP_XSAVE2', 'KVM_CAP_XSAVE2', CAP_XSAVE2, 'KVM_CAP_XSAVE2']);
const runFields: Record<string, string> = {
  request_interrupt_window: 'request_interrupt_window',
  immediate_exit: 'immediate_exit',
  exit_reason: 'exit_reason',
  ready_for_interrupt_injection: 'ready_for_interrupt_injection',
  if_flag: 'if_flag',
  flags: 'flags',
  cr8: 'cr8',
  apic_base: 'apic_base',
  io_direction: 'io.direction',
  io_size: 'io.size',
  io_port: 'io.port',
  io_count: 'io.count',
  io_data_offset: 'io.data_offset',
  mmio_phys_addr: 'mmio.phys_addr',
  mmio_data: 'mmio.data',
  mmio_len: 'mmio.len',
  mmio_is_write: 'mmio.is_write',
  hypercall_nr: 'hypercall.nr',
  hypercall_args: 'hypercall.args',
  hypercall_ret: 'hypercall.ret',
  hypercall_longmode: 'hypercall.longmode',
  internal_suberror: 'internal.suberror',
  internal_ndata: 'internal.ndata',
  internal_data: 'internal.data',
  system_event_type: 'system_event.type',
  system_event_ndata: 'system_event.ndata',
  system_event_data: 'system_event.data',
  fail_entry_reason: 'fail_entry.hardware_entry_failure_reason',
  fail_entry_cpu: 'fail_entry.cpu',
  kvm_valid_regs: 'kvm_valid_regs',
  kvm_dirty_regs: 'kvm_dirty_regs',
};
for (const [k, v] of Object.entries(RUN)) {
  if (k === 'exit') continue;
  if (k.startsWith('memory_fault_')) {
    checks.push([
      `kvm_run.${k}`,
      `offsetof(struct kvm_run, memory_fault.${k.slice(13)})`,
      v,
      'KVM_EXIT_MEMORY_FAULT',
    ]);
    continue;
  }
  const f = runFields[k];
  if (!f) throw new Error(`no C field for RUN.${k}`);
  checks.push([`kvm_run.${k}`, `offsetof(struct kvm_run, ${f})`, v]);
}

describe.skipIf(skip !== '')('uapi layouts against the installed <linux/kvm.h>', () => {
  const dir = skip ? '' : mkdtempSync(join(tmpdir(), 'kvm-uapi-'));
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('every size, offset and ioctl number the header has equals ours', () => {
    const lines = checks.map(([name, expr, , guard]) => {
      const print = `printf("%s\\t%lu\\n", "${name}", (unsigned long)(${expr}));`;
      return guard ? `#ifdef ${guard}\n${print}\n#else\nprintf("%s\\tabsent\\n", "${name}");\n#endif` : print;
    });
    const src = `#include <stdio.h>\n#include <stddef.h>\n#include <linux/kvm.h>\nint main(void) {\n${lines.join('\n')}\nreturn 0;\n}\n`;
    writeFileSync(join(dir, 'layout.c'), src);
    execFileSync(cc!, ['-o', join(dir, 'layout'), join(dir, 'layout.c')]);
    const out = execFileSync(join(dir, 'layout'), { encoding: 'utf8' });
    const theirs = new Map(
      out
        .trim()
        .split('\n')
        .map((l) => l.split('\t') as [string, string]),
    );
    let compared = 0;
    const mismatches: string[] = [];
    for (const [name, , ours] of checks) {
      const t = theirs.get(name);
      if (t === undefined) throw new Error(`no output for ${name}`);
      if (t === 'absent') continue;
      compared++;
      if (Number(t) !== ours) mismatches.push(`${name}: header ${t}, ours ${ours}`);
    }
    expect(mismatches).toEqual([]);
    // The 6.1 header has all but the 6.8 additions: make sure the bulk really was compared.
    expect(compared).toBeGreaterThan(60);
  });
});
