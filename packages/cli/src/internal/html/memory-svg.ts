// The picture of one VM's guest physical memory: a band per memslot (its own scale: slots far apart in
// GPA space stay readable), every page coloured by what it holds, a thin row under it for private vs
// shared, the tag bit in a 64-bit PTE strip, and a legend with page counts. Pure SVG; the page's
// script adds horizontal zoom and pan on each band.
import { PAGE_KINDS, type PageKind, type PageRun, type VmMemoryMap } from '@kvmtest/testkit';
import { escapeHtml } from './escape.js';

/** Colour of each page kind (also the legend's). */
export const KIND_COLOURS: Readonly<Record<PageKind, string>> = {
  unused: '#e6e6e6',
  data: '#7fa7d6',
  private: '#7b3fa0',
  shared: '#4caf50',
  'page-table': '#f39c12',
  image: '#d64541',
  stack: '#16a085',
  ucall: '#2463b8',
  ghcb: '#e377c2',
  'boot-params': '#8c564b',
};

/** What each kind means, for the legend's tooltips. */
const KIND_TITLES: Readonly<Record<PageKind, string>> = {
  unused: 'not allocated',
  data: 'allocated memory of a VM without encryption',
  private: 'private (encrypted / protected) memory',
  shared: 'memory shared with the host',
  'page-table': 'guest page-table pages',
  image: 'the guest image (its globals)',
  stack: 'a vCPU stack',
  ucall: 'the ucall pool (shared)',
  ghcb: 'GHCB pages (SEV-ES/SNP, shared)',
  'boot-params': 'TDX boot parameters',
};

const PRIVATE_COLOUR = '#3d1f52';
const SHARED_COLOUR = '#a8dca8';
/** Width of a band in SVG units (the SVG scales to the page width). */
const W = 900;
/** Runs drawn one by one up to this many per slot; more are aggregated into this many columns. */
export const MAX_RUNS_DRAWN = 2000;

const hex = (n: bigint) => `0x${n.toString(16)}`;

function sizeText(pages: number): string {
  const kib = pages * 4;
  if (kib >= 1024 * 1024) return `${+(kib / 1024 / 1024).toFixed(2)} GiB`;
  if (kib >= 1024) return `${+(kib / 1024).toFixed(2)} MiB`;
  return `${kib} KiB`;
}

/**
 * Aggregates runs into `columns` equal spans of pages, each taking the kind (and visibility) that
 * covers most of its pages; neighbours of equal kind merge again. Keeps a huge or fragmented slot drawable.
 */
export function aggregateRuns(runs: readonly PageRun[], pages: number, columns: number): PageRun[] {
  const span = Math.ceil(pages / columns);
  const out: [number, number, number, 0 | 1][] = [];
  let r = 0;
  for (let start = 0; start < pages; start += span) {
    const end = Math.min(pages, start + span);
    const weight = new Map<number, number>();
    while (r < runs.length && runs[r]![0] + runs[r]![1] <= start) r++;
    for (let i = r; i < runs.length && runs[i]![0] < end; i++) {
      const [s, n, kind, priv] = runs[i]!;
      const overlap = Math.min(end, s + n) - Math.max(start, s);
      // Any page of a special kind wins over the plain kinds, so a lone page table stays visible.
      const special = kind >= PAGE_KINDS.indexOf('page-table') ? pages : 0;
      const key = kind * 2 + priv;
      weight.set(key, (weight.get(key) ?? 0) + overlap + special);
    }
    let best = 0;
    let bestW = -1;
    for (const [k, w] of weight)
      if (w > bestW) {
        best = k;
        bestW = w;
      }
    const kind = best >> 1;
    const priv = (best & 1) as 0 | 1;
    const last = out[out.length - 1];
    if (last && last[2] === kind && last[3] === priv) last[1] += end - start;
    else out.push([start, end - start, kind, priv]);
  }
  return out;
}

/** Fill of an unused run drawn shortened. */
const SHORTENED_COLOUR = '#cdcdcd';

/**
 * Where each run is drawn, in display units: unused runs longer than a tenth of the slot (and 64
 * pages) are shortened so the allocated pages get the width; every other run keeps its page count.
 */
export function layoutRuns(
  runs: readonly PageRun[],
  pages: number,
): { pos: number[]; len: number[]; total: number; shortened: boolean[] } {
  const unused = PAGE_KINDS.indexOf('unused');
  const threshold = Math.max(64, pages * 0.1);
  const shortened = runs.map((r) => r[2] === unused && r[1] > threshold);
  const kept = runs.reduce((n, r, i) => n + (shortened[i] ? 0 : r[1]), 0);
  const gap = Math.max(8, kept * 0.08);
  const pos: number[] = [];
  const len: number[] = [];
  let at = 0;
  runs.forEach((r, i) => {
    const l = shortened[i] ? Math.min(r[1], gap) : r[1];
    pos.push(at);
    len.push(l);
    at += l;
  });
  return { pos, len, total: at, shortened };
}

/** The 64-bit PTE strip with the tag bit marked (C-bit set on private leaves, S-bit on shared ones). */
export function tagBitSvg(map: VmMemoryMap): string {
  const tag = map.tag;
  if (!tag)
    return `<p class="tag none">No tag bit: a ${escapeHtml(map.type)} VM's page tables carry no encryption bit.</p>`;
  const cell = 12;
  const cells: string[] = [];
  for (let b = 63; b >= 0; b--) {
    const x = (63 - b) * cell;
    const isTag = b === tag.bit;
    cells.push(
      `<rect x="${x}" y="14" width="${cell - 1}" height="16" fill="${isTag ? '#c0392b' : b === 0 || b === 63 ? '#bbb' : '#eee'}"><title>bit ${b}${isTag ? ` — the ${tag.kind === 'c-bit' ? 'C-bit' : 'S-bit'}` : b === 0 ? ' — present' : b === 63 ? ' — NX' : ''}</title></rect>`,
    );
  }
  const tx = (63 - tag.bit) * cell + cell / 2;
  const name = tag.kind === 'c-bit' ? 'C-bit' : 'S-bit';
  return `<svg class="tagbit" viewBox="0 0 ${64 * cell} 48" role="img" aria-label="${name} ${tag.bit}">
<text x="0" y="10" class="axis">63</text><text x="${64 * cell - 8}" y="10" class="axis" text-anchor="end">0</text>
${cells.join('')}
<text x="${Math.max(0, tx - 5)}" y="43" class="tagtext">▲ ${name} = bit ${tag.bit}: set in the PTEs of ${tag.setWhen} pages</text>
</svg>`;
}

/** The memslot bands of a VM, with the legend. */
export function memorySvg(map: VmMemoryMap): string {
  if (map.slots.length === 0)
    return `<p class="nomem">No guest memory: ${map.barebones ? 'a barebones VM (vmCreateBarebones) has only the VM object' : 'the VM has no memslot'}.</p>`;
  const coco = map.tag !== undefined || map.slots.some((s) => s.runs.some((r) => r[3] === 1));
  const totals = new Map<number, number>();
  const bands: string[] = [];
  const bandH = 26;
  const visH = coco ? 7 : 0;
  let y = 0;
  for (const slot of map.slots) {
    for (const [, n, k] of slot.runs) totals.set(k, (totals.get(k) ?? 0) + n);
    const aggregated = slot.runs.length > MAX_RUNS_DRAWN;
    const runs = aggregated ? aggregateRuns(slot.runs, slot.pages, MAX_RUNS_DRAWN) : slot.runs;
    const gpa = BigInt(slot.gpa);
    const end = gpa + BigInt(slot.pages) * 4096n - 1n;
    const flags = [slot.guestMemfd ? 'guest_memfd' : '', slot.readOnly ? 'read-only' : ''].filter(Boolean);
    const label = `slot ${slot.slot} · GPA ${hex(gpa)}–${hex(end)} · ${slot.pages} pages (${sizeText(slot.pages)})${flags.length ? ` · ${flags.join(', ')}` : ''}${aggregated ? ` · aggregated: one bar per ${Math.ceil(slot.pages / MAX_RUNS_DRAWN)} pages` : ''}`;
    const rects: string[] = [];
    const vis: string[] = [];
    const lay = layoutRuns(runs, slot.pages);
    const total = lay.total;
    // At least one pixel wide until zoomed (the page's script recomputes this on zoom; data-n is the truth).
    const minLen = total / W;
    const wide = (n: number) => +Math.max(n, minLen).toFixed(3);
    const num = (n: number) => +n.toFixed(3);
    // Plain kinds first, special ones on top (a 1-page run widened to a pixel must not be hidden).
    const order = runs.map((_, i) => i).sort((a, b) => runs[a]![2] - runs[b]![2]);
    for (const i of order) {
      const [start, n, kind, priv] = runs[i]!;
      const k = PAGE_KINDS[kind] ?? 'unused';
      const first = gpa + BigInt(start) * 4096n;
      const last = first + BigInt(n) * 4096n - 1n;
      const short = lay.shortened[i] === true;
      const title = `${hex(first)}–${hex(last)} · ${n} page${n === 1 ? '' : 's'} · ${k}${k !== 'unused' && coco ? (priv ? ' · private' : ' · shared') : ''}${short ? ' (drawn shortened)' : ''}`;
      const x = num(lay.pos[i]!);
      const len = num(lay.len[i]!);
      rects.push(
        `<rect x="${x}" width="${wide(len)}" y="0" height="${bandH}" data-n="${len}" fill="${short ? SHORTENED_COLOUR : KIND_COLOURS[k]}"${short ? ' class="short"' : ''}><title>${escapeHtml(title)}</title></rect>`,
      );
      if (coco && k !== 'unused')
        vis.push(
          `<rect x="${x}" width="${wide(len)}" y="${bandH + 1}" height="${visH - 1}" data-n="${len}" fill="${priv ? PRIVATE_COLOUR : SHARED_COLOUR}"><title>${escapeHtml(title)}</title></rect>`,
        );
    }
    // GPA ticks: quarters of a slot drawn to scale; else the ends and the edges of shortened runs.
    const points: { at: number; page: number }[] = [];
    if (!lay.shortened.includes(true))
      for (const f of [0, 0.25, 0.5, 0.75, 1])
        points.push({ at: f * total, page: Math.round(f * slot.pages) });
    else {
      points.push({ at: 0, page: 0 });
      runs.forEach((r, i) => {
        if (!lay.shortened[i]) return;
        points.push({ at: lay.pos[i]!, page: r[0] });
        points.push({ at: lay.pos[i]! + lay.len[i]!, page: r[0] + r[1] });
      });
      points.push({ at: total, page: slot.pages });
    }
    const ticks: string[] = [];
    let lastX = -Infinity;
    for (const [j, p] of points.entries()) {
      const x = (p.at / total) * W;
      const isEnd = j === points.length - 1;
      if (x - lastX < 95 && !isEnd) continue;
      if (isEnd && x - lastX < 95 && ticks.length > 1) ticks.pop();
      lastX = x;
      const anchor = x < 40 ? 'start' : x > W - 40 ? 'end' : 'middle';
      ticks.push(
        `<text x="${num(x)}" y="${y + 18 + bandH + visH + 12}" text-anchor="${anchor}" class="axis">${hex(gpa + BigInt(p.page) * 4096n)}</text>`,
      );
    }
    bands.push(`<text x="0" y="${y + 12}" class="slotlabel">${escapeHtml(label)}</text>
<svg class="band" x="0" y="${y + 18}" width="${W}" height="${bandH + visH}" viewBox="0 0 ${num(total)} ${bandH + visH}" preserveAspectRatio="none" data-pages="${num(total)}">${rects.join('')}${vis.join('')}</svg>
${ticks.join('')}`);
    y += 18 + bandH + visH + 22;
  }
  const legendItems = PAGE_KINDS.map((k, i) => ({ k, i, n: totals.get(i) ?? 0 })).filter(
    (e) => e.n > 0 || (coco ? e.k === 'private' || e.k === 'shared' : e.k === 'data'),
  );
  const legend = legendItems
    .map(
      ({ k, n }) =>
        `<span class="lg" title="${escapeHtml(KIND_TITLES[k])}"><i style="background:${KIND_COLOURS[k]}"></i>${escapeHtml(k)} <b>${n}</b></span>`,
    )
    .concat(
      map.slots.some((sl) => layoutRuns(sl.runs, sl.pages).shortened.includes(true))
        ? [
            `<span class="lg" title="a long unallocated run drawn shorter than to scale (hover it for its size)"><i style="background:${SHORTENED_COLOUR}"></i>unused, shortened</span>`,
          ]
        : [],
    )
    .concat(
      coco
        ? [
            `<span class="lg" title="thin row under each band"><i style="background:${PRIVATE_COLOUR}"></i>private row</span>`,
            `<span class="lg" title="thin row under each band"><i style="background:${SHARED_COLOUR}"></i>shared row</span>`,
          ]
        : [],
    )
    .join('');
  return `<div class="legend" data-legend="${escapeHtml(map.type)}">${legend}</div>
<svg class="memmap" viewBox="0 0 ${W} ${y}" width="100%" role="img" aria-label="guest physical memory of VM ${map.id} (${escapeHtml(map.type)})">${bands.join('\n')}</svg>`;
}
