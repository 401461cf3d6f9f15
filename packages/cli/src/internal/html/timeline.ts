// The encryption-context timeline of a case: one lane per VM that took part in a move or a mirror,
// a bar while the VM held a context (solid: owner; striped: mirror), an arrow at each move/mirror.
import type { EncContextEvent, VmMemoryMap } from '@kvmtest/testkit';
import { escapeHtml } from './escape.js';

/** A span of steps [from, to) during which `vm` held context `ctx`. */
export interface ContextSpan {
  vm: number;
  ctx: number;
  role: 'owner' | 'mirror';
  from: number;
  to: number;
}

/**
 * Spans and transfers computed from the events: a context starts at KVM_SEV_INIT* (`init`), or at
 * creation for a VM vmCreate made of an SEV type (it ran INIT2), or else at the VM's creation when it
 * is first seen giving one away.
 */
export function contextSpans(
  events: readonly EncContextEvent[],
  vms: readonly Pick<VmMemoryMap, 'id' | 'type' | 'barebones'>[],
): { spans: ContextSpan[]; transfers: EncContextEvent[]; lanes: number[]; steps: number } {
  const transfers = events.filter((e) => e.op === 'move' || e.op === 'mirror');
  const lanes = [...new Set(transfers.flatMap((e) => [e.from!, e.vm]))].sort((a, b) => a - b);
  const steps = events.length;
  const created = new Map<number, number>();
  const open = new Map<number, ContextSpan>();
  const spans: ContextSpan[] = [];
  let nextCtx = 1;
  const info = new Map(vms.map((v) => [v.id, v]));
  const start = (vm: number, ctx: number, role: ContextSpan['role'], from: number) => {
    const s = { vm, ctx, role, from, to: steps };
    open.set(vm, s);
    spans.push(s);
  };
  const end = (vm: number, at: number) => {
    const s = open.get(vm);
    if (s) s.to = at;
    open.delete(vm);
  };
  for (const e of events) {
    if (!lanes.includes(e.vm) && !(e.from !== undefined && lanes.includes(e.from))) continue;
    if (e.op === 'create') {
      created.set(e.vm, e.step);
      const v = info.get(e.vm);
      // vmCreate ran KVM_SEV_INIT2 for a memory-backed SEV-family VM: it owns a context from birth.
      if (v && !v.barebones && v.type.startsWith('sev')) start(e.vm, nextCtx++, 'owner', e.step);
    } else if (e.op === 'close') end(e.vm, e.step);
    else if (e.op === 'init') {
      if (!open.has(e.vm)) start(e.vm, nextCtx++, 'owner', e.step);
    } else {
      const src = e.from!;
      if (!open.has(src)) start(src, nextCtx++, 'owner', created.get(src) ?? 0);
      const ctx = open.get(src)!.ctx;
      end(e.vm, e.step);
      if (e.op === 'move') end(src, e.step);
      start(e.vm, ctx, e.op === 'move' ? 'owner' : 'mirror', e.step);
    }
  }
  return { spans, transfers, lanes, steps };
}

const PALETTE = ['#7b3fa0', '#2463b8', '#d35400', '#16a085', '#c0392b', '#8e44ad', '#27ae60'];

/** The timeline SVG, or '' when the case moved and mirrored no context. */
export function timelineSvg(
  events: readonly EncContextEvent[],
  vms: readonly Pick<VmMemoryMap, 'id' | 'type' | 'barebones'>[],
): string {
  const { spans, transfers, lanes, steps } = contextSpans(events, vms);
  if (transfers.length === 0) return '';
  const left = 150;
  const laneH = 26;
  const stepW = Math.max(6, Math.min(48, 740 / Math.max(1, steps)));
  const width = left + steps * stepW + 20;
  const height = lanes.length * laneH + 34;
  const yOf = (vm: number) => 8 + lanes.indexOf(vm) * laneH;
  const type = new Map(vms.map((v) => [v.id, v.type]));
  const parts: string[] = [
    `<defs><pattern id="mirror-stripes" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="3" height="6" fill="#fff" opacity="0.55"/></pattern>
<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0L10,5L0,10z" fill="#333"/></marker></defs>`,
  ];
  for (const vm of lanes) {
    const y = yOf(vm);
    parts.push(
      `<text x="0" y="${y + 15}" class="lane">VM ${vm}${type.has(vm) ? ` (${escapeHtml(type.get(vm)!)})` : ''}</text><line x1="${left}" x2="${width - 10}" y1="${y + 10}" y2="${y + 10}" stroke="#ddd"/>`,
    );
  }
  for (const s of spans) {
    const x = left + s.from * stepW;
    const w = Math.max(2, (s.to - s.from) * stepW);
    const fill = PALETTE[(s.ctx - 1) % PALETTE.length]!;
    const title = `VM ${s.vm} ${s.role === 'owner' ? 'holds' : 'mirrors'} encryption context ${s.ctx} (steps ${s.from}–${s.to})`;
    parts.push(
      `<rect class="span ${s.role}" x="${x}" y="${yOf(s.vm) + 3}" width="${w}" height="14" rx="3" fill="${fill}"><title>${escapeHtml(title)}</title></rect>`,
    );
    if (s.role === 'mirror')
      parts.push(
        `<rect x="${x}" y="${yOf(s.vm) + 3}" width="${w}" height="14" rx="3" fill="url(#mirror-stripes)"/>`,
      );
  }
  for (const e of transfers) {
    const x = left + e.step * stepW;
    const y1 = yOf(e.from!) + 10;
    const y2 = yOf(e.vm) + 10;
    parts.push(
      `<line x1="${x}" x2="${x}" y1="${y1}" y2="${y2 + (y2 > y1 ? -7 : 7)}" stroke="#333" stroke-width="1.5" ${e.op === 'mirror' ? 'stroke-dasharray="3 2" ' : ''}marker-end="url(#arrow)"><title>${e.op === 'move' ? 'KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM' : 'KVM_CAP_VM_COPY_ENC_CONTEXT_FROM'}: VM ${e.from} → VM ${e.vm} at ${e.atMs} ms</title></line>`,
    );
  }
  parts.push(
    `<text x="${left}" y="${height - 6}" class="axis">step 0</text><text x="${width - 10}" y="${height - 6}" class="axis" text-anchor="end">step ${steps} (VM creations, closes, moves and mirrors in order)</text>`,
  );
  return `<svg class="timeline" viewBox="0 0 ${width} ${height}" width="${Math.min(width, 900)}" role="img" aria-label="encryption context timeline">${parts.join('\n')}</svg>
<p class="hint">Solid bar: the VM owns the encryption context; striped: a mirror of it (KVM_CAP_VM_COPY_ENC_CONTEXT_FROM); arrows: moves (solid) and mirrors (dashed).</p>`;
}
