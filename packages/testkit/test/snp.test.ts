// SEV-SNP through the kit: creation and launch from the type alone (guest_memfd slot 0, PRIVATE
// attributes, INIT2, KVM_CAP_EXIT_HYPERCALL, SNP_LAUNCH_START/UPDATE/FINISH), the SNP status bits, a
// private→shared→private conversion round trip driven by the guest's page-state change requests
// (arch/x86/kvm/svm/sev.c: snp_begin_psc()), PVALIDATE-before-use #VC, GHCB termination, and what the host may no longer touch.
import { encodeGhcbMsr, PSC_OP, SEV_MSR } from '@kvmtest/coco';
import { type Exit, hostPtr, MAP_GPA_RANGE, MEMORY_ATTRIBUTE, VECTOR } from '@kvmtest/kvm';
import { snpLaunchReport } from '@kvmtest/kvm-sim';
import { UCALL } from '@kvmtest/ucall';
import { expect, test } from 'vitest';
import {
  addrGva2Gpa,
  addrGva2Hva,
  defineGuest,
  GuestUnhandledError,
  guestAssertEq,
  guestDone,
  guestSync,
  runUcall,
  SNP_DEFAULT_POLICY,
  TestkitError,
  vmCreateWithOneVcpu,
  vmLaunch,
  vmVaddrAlloc,
  writeGuestGlobal,
} from '../src/index.js';
import { lineOf, requireType } from './helpers.js';

const GHCB = SEV_MSR.MSR_AMD64_SEV_ES_GHCB;
const ALIAS_GVA = 0x7000_0000n;

test('msr-index.h MSR_AMD64_SEV: an SNP guest reads SEV, SEV-ES and SNP (bits 0–2) in the SEV status MSR', async (ctx) => {
  requireType(ctx, 'sev-snp');
  using vm = vmCreateWithOneVcpu(async (g) => {
    await guestSync(g, g.rdmsr(SEV_MSR.MSR_AMD64_SEV));
    await guestDone(g);
  }, 'sev-snp');
  const status = (await runUcall(vm.vcpus[0]!)).args[0]!;
  expect(status & 0b111n).toBe(0b111n);
  // The kit launched with the default policy and its private memory is RMP-assigned to the guest.
  const report = snpLaunchReport(vm.raw)!;
  expect(report).toMatchObject({ state: 'running', policy: SNP_DEFAULT_POLICY, vmsas: 1 });
  expect(report.pagesUpdated).toBeGreaterThan(0);
  expect((await runUcall(vm.vcpus[0]!)).cmd).toBe(UCALL.DONE);
});

test('svm/sev.c snp_begin_psc(): private → shared → private round trip: PSC exit, host conversion, shared data, re-PVALIDATE (#VC 0x404 before)', async (ctx) => {
  requireType(ctx, 'sev-snp');
  const guest = defineGuest(
    async (g) => {
      const page = g.readU64(g.global('page'));
      const alias = g.readU64(g.global('alias'));
      const gfn = g.readU64(g.global('gpa')) >> 12n;
      g.writeU64(page, 1n); // a launched private page: validated by the firmware
      // Linux's snp_set_memory_shared: rescind validation, then ask the hypervisor (MSR-protocol PSC).
      await guestAssertEq(g, g.pvalidate(page, false), 0);
      g.wrmsr(GHCB, encodeGhcbMsr({ kind: 'psc-req', gfn, op: PSC_OP.SHARED }));
      await g.vmgexit();
      await guestAssertEq(g, g.rdmsr(GHCB), 0x15n);
      g.writeU64(alias, 0xfeed_f00dn);
      await guestSync(g, 1n);
      // Back to private: the page is assigned again but not validated.
      g.wrmsr(GHCB, encodeGhcbMsr({ kind: 'psc-req', gfn, op: PSC_OP.PRIVATE }));
      await g.vmgexit();
      g.readU64(page); // @vc-line
      await guestDone(g);
    },
    { globals: { page: 0n, alias: 0n, gpa: 0n } },
  );
  using vm = vmCreateWithOneVcpu(guest, 'sev-snp');
  const page = vmVaddrAlloc(vm, 4096);
  const gpa = addrGva2Gpa(vm, page);
  // A shared (C-bit clear) alias of the same GPA, mapped before the page tables become private.
  vm.space.mapRange(ALIAS_GVA, gpa, 4096n, { visibility: 'shared' });
  const hva = addrGva2Hva(vm, ALIAS_GVA);
  writeGuestGlobal(vm, 'page', page);
  writeGuestGlobal(vm, 'alias', ALIAS_GVA);
  writeGuestGlobal(vm, 'gpa', gpa);
  vmLaunch(vm);
  const vcpu = vm.vcpus[0]!;

  const toShared = (await vcpu.run()) as Exit & { reason: 'hypercall' };
  expect(toShared).toMatchObject({ reason: 'hypercall', nr: 12n, args: [gpa, 1n, 0n] });
  vm.raw.setMemoryAttributes({ address: gpa, size: 4096n, attributes: 0n });
  expect((await runUcall(vcpu)).args[0]).toBe(1n);
  // The host reads what the guest wrote into the now-shared page.
  expect(new DataView(hva.buffer.buffer, hva.buffer.byteOffset).getBigUint64(hva.offset, true)).toBe(
    0xfeed_f00dn,
  );

  const toPrivate = await vcpu.run();
  expect(toPrivate).toMatchObject({ reason: 'hypercall', nr: 12n, args: [gpa, 1n, MAP_GPA_RANGE.ENCRYPTED] });
  vm.raw.setMemoryAttributes({ address: gpa, size: 4096n, attributes: MEMORY_ATTRIBUTE.PRIVATE });
  const e = (await runUcall(vcpu).catch((x: unknown) => x)) as GuestUnhandledError;
  expect(e).toBeInstanceOf(GuestUnhandledError);
  expect(e.vector).toBe(VECTOR.VC);
  expect(e.errorCode).toBe(0x404); // PAGE_NOT_VALIDATED
  expect(e.line).toBe(lineOf(import.meta.url, '// @vc-line'));
});

test('an SNP guest terminates through the GHCB MSR protocol: KVM_EXIT_SYSTEM_EVENT sev-term, data[0] = 0x100', async (ctx) => {
  requireType(ctx, 'sev-snp');
  using vm = vmCreateWithOneVcpu(async (g) => {
    g.wrmsr(GHCB, 0x100n);
    await g.vmgexit();
  }, 'sev-snp');
  vmLaunch(vm);
  expect(await vm.vcpus[0]!.run()).toMatchObject({
    reason: 'system-event',
    type: 'sev-term',
    data: [0x100n],
  });
});

test('after the launch the host cannot write guest-owned pages: writeGuestGlobal is refused, the launch copy is the guest’s', async (ctx) => {
  requireType(ctx, 'sev-snp');
  const guest = defineGuest(
    async (g) => {
      await guestSync(g, g.readU64(g.global('value')));
      await guestDone(g);
    },
    { globals: { value: 0n } },
  );
  using vm = vmCreateWithOneVcpu(guest, 'sev-snp');
  writeGuestGlobal(vm, 'value', 7n);
  const where = vm.image.symbols.get('value')!;
  const staging = hostPtr(vm.space.memory.findRegion(where.gpa)!.backing, Number(where.gpa));
  vmLaunch(vm);
  // The VMM's buffer is the shared backing: scribbling on it does not reach the private page.
  staging.buffer[staging.offset] = 0x55;
  const e = (() => {
    try {
      writeGuestGlobal(vm, 'value', 9n);
    } catch (x) {
      return x;
    }
  })();
  expect(e).toBeInstanceOf(TestkitError);
  expect((e as TestkitError).code).toBe('LAUNCHED');
  expect((await runUcall(vm.vcpus[0]!)).args[0]).toBe(7n);
});
