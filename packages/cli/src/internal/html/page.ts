// The report page: one self-contained HTML document (inline CSS and script, no network) with the
// run's summary, every suite and case (result, duration, backend, output, the failure with the source
// around the failing line) and, for each VM a case made, the picture of its guest physical memory.
import { relative } from 'node:path';
import { isFailure } from '@kvmtest/testkit';
import type { ResolvedBackend } from '../backends.js';
import type { CaseResult } from '../protocol.js';
import type { Summary } from '../summary.js';
import { summaryLine } from '../summary.js';
import { escapeHtml } from './escape.js';
import { memorySvg, tagBitSvg } from './memory-svg.js';
import { type SourceSnippet, sourceSnippet } from './source.js';
import { timelineSvg } from './timeline.js';

/** Everything the page shows. */
export interface ReportInput {
  results: readonly CaseResult[];
  summary: Summary;
  backends: readonly ResolvedBackend[];
  /** Folders a relative location in a failure resolves against (the working directory, the suites' folders). */
  roots: readonly string[];
  /** When the report was written (shown as is). */
  generatedAt: string;
}

/** Output kept per case in the page; the rest is cut with a note. */
const MAX_OUTPUT = 200_000;

// biome-ignore lint/suspicious/noControlCharactersInRegex: removing ANSI escape sequences
const ANSI = /\u001b\[[0-9;]*[A-Za-z]/g;

const STATUS_TEXT = {
  pass: 'PASS',
  fail: 'FAIL',
  skip: 'SKIP',
  timeout: 'TIMEOUT',
  interrupted: 'INTERRUPTED',
} as const;

function duration(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
}

function snippetHtml(s: SourceSnippet, root: string): string {
  const shown = relative(root, s.file) || s.file;
  const rows = s.lines
    .map((text, i) => {
      const n = s.first + i;
      return `<tr class="${n === s.line ? 'hit' : ''}"><td class="ln">${n}</td><td><code>${escapeHtml(text) || ' '}</code></td></tr>`;
    })
    .join('');
  return `<div class="snippet"><div class="file">${escapeHtml(shown)}:${s.line}${s.column ? `:${s.column}` : ''}</div><table>${rows}</table></div>`;
}

function vmHtml(r: CaseResult): string {
  const mem = r.memory;
  if (!mem || (mem.vms.length === 0 && mem.omitted === 0)) return '';
  const cards = mem.vms.map((vm) => {
    const facts = [
      vm.type,
      `fd ${vm.fd}`,
      `${vm.vcpus} vCPU${vm.vcpus === 1 ? '' : 's'}`,
      vm.barebones ? 'barebones' : '',
      vm.launch !== 'none' ? `launch ${vm.launch}` : '',
      `pictured at ${vm.takenAt === 'close' ? 'close' : 'case end'}`,
    ].filter(Boolean);
    return `<div class="vm" data-vm-type="${escapeHtml(vm.type)}"><h4>VM ${vm.id} <span class="facts">${facts.map(escapeHtml).join(' · ')}</span></h4>
${vm.slots.length === 0 && !vm.tag ? `<p class="nomem">No guest memory and no tag bit: ${vm.barebones ? 'a barebones VM (vmCreateBarebones) is only the VM object' : 'the VM has no memslot'}.</p>` : `${tagBitSvg(vm)}\n${memorySvg(vm)}`}</div>`;
  });
  const omitted = mem.omitted
    ? `<p class="hint">${mem.omitted} more VM${mem.omitted === 1 ? '' : 's'} not pictured (the first ${mem.vms.length} are).</p>`
    : '';
  const timeline = timelineSvg(mem.timeline, mem.vms);
  return `<h3>Guest memory <span class="hint">wheel over a band to zoom, drag to pan, double-click to reset; hover for GPAs</span></h3>
${cards.join('\n')}${omitted}${timeline ? `<h3>Encryption context timeline</h3>${timeline}` : ''}`;
}

function caseHtml(r: CaseResult, roots: readonly string[]): string {
  const failed = isFailure(r.status);
  const vms = r.memory?.vms.length ?? 0;
  const parts: string[] = [];
  if (r.reason) {
    parts.push(`<pre class="message ${r.status}">${escapeHtml(r.reason.replace(ANSI, ''))}</pre>`);
    if (failed) {
      const s = sourceSnippet(r.reason, roots);
      if (s) parts.push(snippetHtml(s, roots[0] ?? '/'));
    }
  }
  if (r.comparison) parts.push(`<p class="comparison">comparison: ${escapeHtml(r.comparison.summary)}</p>`);
  if (r.output) {
    let out = r.output.replace(ANSI, '');
    if (out.length > MAX_OUTPUT)
      out = `${out.slice(0, MAX_OUTPUT)}\n… (${out.length - MAX_OUTPUT} more characters cut)`;
    parts.push(`<h3>Output</h3><pre class="output">${escapeHtml(out)}</pre>`);
  }
  parts.push(vmHtml(r));
  const body = parts.filter(Boolean).join('\n');
  return `<details class="case ${r.status}" data-status="${r.status}" data-vms="${vms}"${failed ? ' open' : ''}>
<summary><span class="badge ${r.status}">${STATUS_TEXT[r.status]}</span> <span class="name">${escapeHtml(r.name)}</span> <span class="dur">${duration(r.durationMs)}</span>${r.backend ? ` <span class="backend">${escapeHtml(r.backend)}</span>` : ''}${vms ? ` <span class="vms">${vms} VM${vms === 1 ? '' : 's'}</span>` : ''}</summary>
<div class="body">${body || '<p class="hint">No output.</p>'}</div>
</details>`;
}

/** The report document. */
export function renderReport(input: ReportInput): string {
  const { results, summary: s } = input;
  const bySuite = new Map<string, CaseResult[]>();
  for (const r of results) bySuite.set(r.suite, [...(bySuite.get(r.suite) ?? []), r]);
  const suites = [...bySuite].map(([suite, rs]) => {
    const count = (st: CaseResult['status']) => rs.filter((r) => r.status === st).length;
    const counts = `${count('pass')} passed, ${rs.filter((r) => isFailure(r.status)).length} failed, ${count('skip')} skipped`;
    return `<section class="suite" data-suite="${escapeHtml(suite)}"><h2>${escapeHtml(suite)} <small>${counts}</small></h2>
${rs.map((r) => caseHtml(r, input.roots)).join('\n')}
</section>`;
  });
  const backends = input.backends.map((b) => `${b.label}${b.note ? ` (${b.note})` : ''}`).join(' vs ');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>kvmtest report — ${s.failed ? `${s.failed} failed` : 'all passed'}</title>
<style>${CSS}</style></head>
<body>
<header><h1>kvmtest report</h1>
<p class="summary ${s.failed ? 'bad' : 'good'}" id="summary">${escapeHtml(summaryLine(s))}</p>
<p class="meta">backend: ${escapeHtml(backends || 'sim')} · written ${escapeHtml(input.generatedAt)}</p>
<nav><button data-filter="all" class="on">all</button><button data-filter="fail">failed</button><button data-filter="vms">with VMs</button><button id="expand">expand all</button><button id="collapse">collapse all</button></nav>
</header>
<main>
${suites.join('\n') || '<p>No case ran.</p>'}
</main>
<script>${SCRIPT}</script>
</body></html>
`;
}

const CSS = `
:root{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;background:#fafafa}
body{margin:0 auto;max-width:1000px;padding:0 16px 40px}
header{background:#fafafa;border-bottom:1px solid #ddd;padding:8px 0}
h1{font-size:20px;margin:6px 0}
.summary{font-weight:600;margin:4px 0}.summary.good{color:#1e7e34}.summary.bad{color:#b02a37}
.meta{color:#666;font-size:13px;margin:2px 0 6px}
nav button{font:inherit;font-size:13px;border:1px solid #bbb;background:#fff;border-radius:4px;padding:2px 10px;margin-right:4px;cursor:pointer}
nav button.on{background:#333;color:#fff;border-color:#333}
h2{font-size:17px;margin:22px 0 8px;border-bottom:2px solid #333;padding-bottom:3px}
h2 small{font-weight:normal;color:#666;font-size:13px}
h3{font-size:14px;margin:14px 0 6px}
h4{font-size:14px;margin:0 0 4px}
.case{background:#fff;border:1px solid #ddd;border-left-width:5px;border-radius:4px;margin:6px 0}
.case.pass{border-left-color:#2e9e4f}.case.fail,.case.timeout,.case.interrupted{border-left-color:#d9363e}.case.skip{border-left-color:#c9a400}
.case>summary{cursor:pointer;padding:6px 10px;display:flex;gap:10px;align-items:baseline}
.case>summary .name{font-weight:600;flex:1}
.dur,.backend,.vms{color:#555;font-size:13px}
.backend,.vms{background:#eef;border-radius:3px;padding:0 6px}
.badge{font-size:11px;font-weight:700;padding:1px 6px;border-radius:3px;color:#fff;min-width:52px;text-align:center}
.badge.pass{background:#2e9e4f}.badge.fail,.badge.timeout,.badge.interrupted{background:#d9363e}.badge.skip{background:#c9a400}
.body{padding:2px 12px 12px}
pre{background:#f4f4f4;border-radius:4px;padding:8px;overflow:auto;font-size:12.5px;max-height:360px;margin:6px 0}
pre.message.fail,pre.message.timeout,pre.message.interrupted{background:#fdecea;color:#7a1c1c}
.snippet{border:1px solid #e3c4c4;border-radius:4px;overflow:auto;margin:6px 0}
.snippet .file{background:#f7e6e6;font:12px monospace;padding:3px 8px}
.snippet table{border-collapse:collapse;font:12.5px monospace;width:100%}
.snippet td{padding:0 8px;white-space:pre}.snippet td.ln{color:#999;text-align:right;width:1%;user-select:none}
.snippet tr.hit{background:#ffe3e3}.snippet tr.hit td.ln{color:#b02a37;font-weight:700}
.vm{border:1px solid #e3e3e3;border-radius:4px;padding:8px;margin:8px 0;background:#fff}
.vm .facts{font-weight:normal;color:#555;font-size:13px}
.legend{display:flex;flex-wrap:wrap;gap:4px 12px;font-size:12.5px;margin:4px 0 6px}
.lg i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-1px;border:1px solid #0002}
.lg b{font-weight:600;color:#555}
svg.memmap{display:block;width:100%;height:auto;font-family:inherit}
svg.band{cursor:grab}
svg .slotlabel{font-size:12.5px;fill:#333}
svg .axis{font-size:10px;fill:#777;font-family:monospace}
svg.tagbit{display:block;width:100%;max-width:600px;height:auto}
svg .tagtext{font-size:11.5px;fill:#c0392b;font-weight:600}
p.tag.none,p.nomem{font-size:13px;color:#666;margin:4px 0}
svg.timeline{display:block;max-width:100%;height:auto}
svg .lane{font-size:12px;fill:#333}
.hint{font-size:12px;color:#777;font-weight:normal}
.hidden{display:none}
`;

const SCRIPT = `
(() => {
  const cases = [...document.querySelectorAll('details.case')];
  for (const b of document.querySelectorAll('nav button[data-filter]'))
    b.addEventListener('click', () => {
      for (const o of document.querySelectorAll('nav button[data-filter]')) o.classList.toggle('on', o === b);
      const f = b.dataset.filter;
      for (const c of cases) {
        const show = f === 'all' || (f === 'fail' ? /fail|timeout|interrupted/.test(c.dataset.status) : +c.dataset.vms > 0);
        c.classList.toggle('hidden', !show);
      }
      for (const s of document.querySelectorAll('section.suite'))
        s.classList.toggle('hidden', !s.querySelector('details.case:not(.hidden)'));
    });
  document.getElementById('expand').addEventListener('click', () => { for (const c of cases) c.open = true; fit(); });
  document.getElementById('collapse').addEventListener('click', () => { for (const c of cases) c.open = false; });
  if (location.hash === '#expand') for (const c of cases) c.open = true;
  const bands = [...document.querySelectorAll('svg.band')].map((band) => {
    const pages = +band.dataset.pages;
    const h = band.viewBox.baseVal.height;
    const rects = [...band.querySelectorAll('rect[data-n]')];
    const st = { x0: 0, span: pages };
    const apply = () => {
      band.setAttribute('viewBox', st.x0 + ' 0 ' + st.span + ' ' + h);
      const px = band.getBoundingClientRect().width;
      if (!px) return;
      const min = st.span / px;
      for (const r of rects) r.setAttribute('width', Math.max(+r.dataset.n, min));
    };
    band.addEventListener('wheel', (ev) => {
      ev.preventDefault();
      const b = band.getBoundingClientRect();
      const f = (ev.clientX - b.left) / b.width;
      const at = st.x0 + f * st.span;
      const span = Math.min(pages, Math.max(Math.min(8, pages), st.span * (ev.deltaY < 0 ? 0.8 : 1.25)));
      st.x0 = Math.min(pages - span, Math.max(0, at - f * span));
      st.span = span;
      apply();
    }, { passive: false });
    let drag;
    band.addEventListener('pointerdown', (ev) => { drag = { x: ev.clientX, x0: st.x0 }; band.setPointerCapture(ev.pointerId); });
    band.addEventListener('pointermove', (ev) => {
      if (!drag) return;
      const b = band.getBoundingClientRect();
      st.x0 = Math.min(pages - st.span, Math.max(0, drag.x0 - ((ev.clientX - drag.x) / b.width) * st.span));
      apply();
    });
    band.addEventListener('pointerup', () => { drag = undefined; });
    band.addEventListener('dblclick', () => { st.x0 = 0; st.span = pages; apply(); });
    return apply;
  });
  const fit = () => { for (const a of bands) a(); };
  for (const c of cases) c.addEventListener('toggle', fit);
  window.addEventListener('resize', fit);
  fit();
})();
`;
