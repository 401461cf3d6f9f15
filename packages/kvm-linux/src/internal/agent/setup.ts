// Placing the guest agent: its memslot (created lazily, once per VM), the page-table pages that
// map it at AGENT_GVA, its GDT, IDT and TSS, its code, and per vCPU a stack, a mailbox and a data
// page. At a vCPU's first run the agent points one top-level entry of the guest's own page tables
// (PML4[511], or PML5[511] with LA57) at its PDPT and loads its segments and descriptor tables with
// KVM_SET_SREGS; a vCPU without 64-bit paging gets the agent's own PML4 as CR3.

import { hex } from '@kvmtest/coco';
import { codeSegment64, dataSegment64, tssSegment64, type UserMemory, type Vm } from '@kvmtest/kvm';
import { encodeSegment } from '../sregs.js';
import { SIZE, SREGS } from '../uapi.js';
import { AGENT_CODE } from './agent-bytes.js';
import type { AgentVcpuHost } from './host.js';
import {
  AGENT_BYTES,
  AGENT_GPA,
  AGENT_GVA,
  AGENT_MAX_VCPUS,
  AGENT_PAGE,
  AGENT_PAGES,
  AGENT_PML4_INDEX,
  AGENT_SELECTOR,
  AGENT_SLOT,
  CODE_HEADER,
  CODE_MAGIC,
} from './layout.js';

const PAGE = 4096;
/** PTE bits: present, writable. */
const PTE_P_RW = 3n;
/** Physical-address bits of a paging-structure entry or of CR3 (bits 51:12). */
const ADDR_MASK = 0x000f_ffff_ffff_f000n;
const CR0_PE = 1n;
const CR0_ET = 1n << 4n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const CR4_LA57 = 1n << 12n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;
/** Number of IDT gates the agent installs (the architectural exceptions). */
export const AGENT_IDT_GATES = 32;

/** The GPA of agent page `i`. */
export function agentPageGpa(i: number): bigint {
  return AGENT_GPA + BigInt(i * PAGE);
}

/** The GVA of agent page `i`. */
export function agentPageGva(i: number): bigint {
  return AGENT_GVA + BigInt(i * PAGE);
}

/** The agent's memory in one VM. */
export class AgentVm {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  /** GVA of the agent's entry point. */
  readonly entryGva: bigint;
  /** GVA of the code of each operation, by operation code (what the host posts in the mailbox). */
  readonly opGva: readonly bigint[];
  /** GVAs of the qword and byte copy ladders of readBytes / writeBytes. */
  readonly qwordLadder: bigint;
  readonly byteLadder: bigint;
  private nextIndex = 0;

  constructor(
    readonly vm: Vm,
    memory: UserMemory,
  ) {
    this.bytes = memory.bytes;
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
    const code = new DataView(AGENT_CODE.buffer, AGENT_CODE.byteOffset, AGENT_CODE.byteLength);
    if (AGENT_CODE.byteLength > (AGENT_PAGE.vcpus - AGENT_PAGE.code) * PAGE)
      throw new Error(`the guest agent's code (${AGENT_CODE.byteLength} bytes) does not fit its pages`);
    if (code.getUint32(CODE_HEADER.magic, true) !== CODE_MAGIC)
      throw new Error('the guest agent code has no valid header (agent-bytes.ts is not from agent.S)');
    const codeGva = agentPageGva(AGENT_PAGE.code);
    this.entryGva = codeGva + BigInt(code.getUint32(CODE_HEADER.entry, true));
    this.qwordLadder = codeGva + BigInt(code.getUint32(CODE_HEADER.qwordLadder, true));
    this.byteLadder = codeGva + BigInt(code.getUint32(CODE_HEADER.byteLadder, true));
    const table = code.getUint32(CODE_HEADER.ops, true);
    this.opGva = Array.from(
      { length: code.getUint32(CODE_HEADER.opCount, true) },
      (_, i) => codeGva + BigInt(code.getUint32(table + 4 * i, true)),
    );
    const stubs = codeGva + BigInt(code.getUint32(CODE_HEADER.stubs, true));
    const stride = BigInt(code.getUint32(CODE_HEADER.stride, true));
    this.build(stubs, stride);
  }

  private setU64(page: number, index: number, value: bigint): void {
    this.view.setBigUint64(page * PAGE + index * 8, value, true);
  }

  private build(stubs: bigint, stride: bigint): void {
    const v = this.view;
    // Page tables: PDPT[0] → PD, PD[0] → PT, PT[i] → agent page i (the MMIO window entry stays 0).
    this.setU64(AGENT_PAGE.pdpt, 0, agentPageGpa(AGENT_PAGE.pd) | PTE_P_RW);
    this.setU64(AGENT_PAGE.pd, 0, agentPageGpa(AGENT_PAGE.pt) | PTE_P_RW);
    for (let i = 0; i < AGENT_PAGES; i++) this.setU64(AGENT_PAGE.pt, i, agentPageGpa(i) | PTE_P_RW);
    this.setU64(AGENT_PAGE.pml4, AGENT_PML4_INDEX, agentPageGpa(AGENT_PAGE.pdpt) | PTE_P_RW);
    // GDT: null, 64-bit code (L=1, P, DPL 0, execute/read), data (read/write), a 64-bit busy TSS.
    this.setU64(AGENT_PAGE.gdt, 1, 0x00af_9b00_0000_ffffn);
    this.setU64(AGENT_PAGE.gdt, 2, 0x00cf_9300_0000_ffffn);
    const tss = agentPageGva(AGENT_PAGE.tss);
    const tssLow =
      0x67n |
      ((tss & 0xffffffn) << 16n) |
      (0x8bn << 40n) | // P, DPL 0, type 0xB (64-bit TSS, busy)
      (((tss >> 24n) & 0xffn) << 56n);
    this.setU64(AGENT_PAGE.gdt, 3, tssLow);
    this.setU64(AGENT_PAGE.gdt, 4, (tss >> 32n) & 0xffff_ffffn);
    // IDT: 32 interrupt gates (type 0xE, P, DPL 0) on the code selector, one stub each.
    const idt = AGENT_PAGE.idt * PAGE;
    for (let n = 0; n < AGENT_IDT_GATES; n++) {
      const target = stubs + BigInt(n) * stride;
      const at = idt + n * 16;
      v.setUint16(at, Number(target & 0xffffn), true);
      v.setUint16(at + 2, AGENT_SELECTOR.code, true);
      v.setUint8(at + 4, 0);
      v.setUint8(at + 5, 0x8e);
      v.setUint16(at + 6, Number((target >> 16n) & 0xffffn), true);
      v.setUint32(at + 8, Number((target >> 32n) & 0xffff_ffffn), true);
      v.setUint32(at + 12, 0, true);
    }
    this.bytes.set(AGENT_CODE, AGENT_PAGE.code * PAGE);
  }

  /** The next free per-vCPU page triple (stack, mailbox, data): the index of its stack page. */
  allocVcpuPages(vcpuId: number): number {
    if (this.nextIndex >= AGENT_MAX_VCPUS)
      throw new Error(
        `vCPU ${vcpuId}: the guest agent has pages for ${AGENT_MAX_VCPUS} vCPUs per VM, and every one is taken`,
      );
    return AGENT_PAGE.vcpus + 3 * this.nextIndex++;
  }

  /** Points agent PT entry `index` at `gpaPage` (the MMIO window); the agent INVLPGs before using it. */
  setPte(index: number, gpaPage: bigint): void {
    this.setU64(AGENT_PAGE.pt, index, (gpaPage & ADDR_MASK) | PTE_P_RW);
  }
}

const agentVms = new WeakMap<Vm, AgentVm>();

/** The agent of `vm`, adding its memslot on first use. */
export function agentVmOf(vm: Vm): AgentVm {
  let a = agentVms.get(vm);
  if (a === undefined) {
    const memory = vm.kvm.allocateUserMemory(AGENT_BYTES);
    try {
      vm.setUserMemoryRegion({
        slot: AGENT_SLOT,
        flags: 0,
        guestPhysAddr: AGENT_GPA,
        memorySize: BigInt(AGENT_BYTES),
        userspace: memory.bytes,
      });
    } finally {
      // The agent lives exactly as long as its memslot: the backend frees the memory once no memslot
      // of an open VM maps it (and never while a view of it can still be used), i.e. with the VM.
      memory.release();
    }
    a = new AgentVm(vm, memory);
    agentVms.set(vm, a);
  }
  return a;
}

/**
 * Installs the agent's top-level entry in the root at `cr3` (PML4, or PML5 with LA57); throws
 * when the guest already uses that entry for something else.
 */
export function installRootEntry(host: AgentVcpuHost, cr3: bigint, la57: boolean): void {
  const root = cr3 & ADDR_MASK;
  const table = host.hostBytes(root, PAGE);
  if (table === undefined)
    throw new Error(
      `vCPU ${host.id}: CR3 ${hex(cr3)} names GPA ${hex(root)}, which no memslot backs: the guest agent cannot map itself`,
    );
  const t = new DataView(table.buffer, table.byteOffset, PAGE);
  // With LA57 the agent's own PML4 (entry 511 → PDPT) hangs below PML5[511].
  const ours = agentPageGpa(la57 ? AGENT_PAGE.pml4 : AGENT_PAGE.pdpt) | PTE_P_RW;
  const old = t.getBigUint64(AGENT_PML4_INDEX * 8, true);
  if (old !== 0n && (old & ADDR_MASK) !== (ours & ADDR_MASK))
    throw new Error(
      `vCPU ${host.id}: the guest's top-level page-table entry 511 (at GPA ${hex(root + 511n * 8n)}) is in use (${hex(old)}); the guest agent reserves GVAs from ${hex(AGENT_GVA)}`,
    );
  t.setBigUint64(AGENT_PML4_INDEX * 8, ours, true);
}

/** What installVcpu set up: the vCPU's agent pages. */
export interface AgentVcpuPages {
  /** Byte offset of the mailbox page in the agent slot. */
  mailbox: number;
  /** Byte offset of the data page in the agent slot. */
  data: number;
}

/**
 * First run of a vCPU with a program: its agent pages, the agent's entry in the guest's page
 * tables, the agent's segments and descriptor tables (KVM_SET_SREGS), and RIP/RSP at the agent.
 */
export function installVcpu(host: AgentVcpuHost, agent: AgentVm): AgentVcpuPages {
  const stackPage = agent.allocVcpuPages(host.id);
  const raw = host.getSregsRaw();
  if (raw.byteLength < SIZE.kvm_sregs) throw new Error(`struct kvm_sregs of ${raw.byteLength} bytes`);
  const s = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  let cr0 = s.getBigUint64(SREGS.cr0, true);
  let cr3 = s.getBigUint64(SREGS.cr3, true);
  let cr4 = s.getBigUint64(SREGS.cr4, true);
  let efer = s.getBigUint64(SREGS.efer, true);
  if ((cr0 & CR0_PG) === 0n || (efer & EFER_LMA) === 0n) {
    // No 64-bit paging of the guest's own: the agent's PML4, which maps only the agent.
    cr0 |= CR0_PE | CR0_ET | CR0_PG;
    cr4 = (cr4 | CR4_PAE) & ~CR4_LA57;
    efer |= EFER_LME | EFER_LMA;
    cr3 = agentPageGpa(AGENT_PAGE.pml4);
  } else installRootEntry(host, cr3, (cr4 & CR4_LA57) !== 0n);
  s.setBigUint64(SREGS.cr0, cr0, true);
  s.setBigUint64(SREGS.cr3, cr3, true);
  s.setBigUint64(SREGS.cr4, cr4, true);
  s.setBigUint64(SREGS.efer, efer, true);
  // The agent's own GDT holds these descriptors; the hidden parts are the contract's flat 64-bit
  // segments (the selftests' kvm_seg_set_kernel_code_64bit() and friends).
  encodeSegment(s, SREGS.cs, codeSegment64(AGENT_SELECTOR.code));
  for (const seg of [SREGS.ds, SREGS.es, SREGS.fs, SREGS.gs, SREGS.ss])
    encodeSegment(s, seg, dataSegment64(AGENT_SELECTOR.data));
  encodeSegment(s, SREGS.tr, tssSegment64(agentPageGva(AGENT_PAGE.tss), AGENT_SELECTOR.tss));
  s.setBigUint64(SREGS.gdt, agentPageGva(AGENT_PAGE.gdt), true);
  s.setUint16(SREGS.gdt + 8, 5 * 8 - 1, true);
  s.setBigUint64(SREGS.idt, agentPageGva(AGENT_PAGE.idt), true);
  s.setUint16(SREGS.idt + 8, AGENT_IDT_GATES * 16 - 1, true);
  host.setSregsRaw(raw);
  const regs = host.getRegs();
  regs.rip = agent.entryGva;
  regs.rsp = agentPageGva(stackPage + 1); // the stack's top is the mailbox's base
  regs.rflags = 2n;
  host.setRegs(regs);
  return { mailbox: (stackPage + 1) * PAGE, data: (stackPage + 2) * PAGE };
}
