// The HTML reporter: the page's parts as units, then a real run opened in headless Chromium (Debian's
// package, driven by playwright-core) — skipped, with the reason, when no Chromium is installed.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PAGE_KINDS, type PageRun, type VmMemoryMap } from '@kvmtest/testkit';
import { PNG } from 'pngjs';
import { describe, expect, test } from 'vitest';
import { parseCommand } from '../src/index.js';
import { aggregateRuns, KIND_COLOURS, layoutRuns, memorySvg } from '../src/internal/html/memory-svg.js';
import { renderReport } from '../src/internal/html/page.js';
import { sourceSnippet } from '../src/internal/html/source.js';
import { contextSpans } from '../src/internal/html/timeline.js';
import type { CaseResult } from '../src/internal/protocol.js';

const bin = join(import.meta.dirname, '..', 'src', 'bin.ts');
const fixture = join(import.meta.dirname, 'fixtures', 'ws');
const repo = join(import.meta.dirname, '..', '..', '..');

function kvmtest(args: string[], cwd: string) {
  const r = spawnSync(process.execPath, ['--conditions=@kvmtest/source', '--import', 'tsx', bin, ...args], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, KVMTEST_BACKEND: '', KVMTEST_SIM_HOST: '', FORCE_COLOR: '0' },
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const K = (k: (typeof PAGE_KINDS)[number]) => PAGE_KINDS.indexOf(k);

const sevMap = (runs: PageRun[], pages: number): VmMemoryMap => ({
  id: 1,
  type: 'sev',
  fd: 3,
  barebones: false,
  vcpus: 1,
  launch: 'finished',
  tag: { kind: 'c-bit', bit: 51, setWhen: 'private' },
  takenAt: 'close',
  slots: [{ slot: 0, gpa: '0x0', pages, readOnly: false, guestMemfd: false, runs }],
});

describe('html reporter parts', () => {
  test('--reporter html takes an optional folder', () => {
    expect(parseCommand(['run', '--reporter', 'html'], {})).toMatchObject({
      reporters: [{ name: 'html' }],
    });
    expect(parseCommand(['run', '--reporter', 'html=out/r'], {})).toMatchObject({
      reporters: [{ name: 'html', file: 'out/r' }],
    });
    expect(parseCommand(['run', '--reporter', 'pretty', '--reporter', 'html=out/r'], {})).toMatchObject({
      reporters: [{ name: 'pretty' }, { name: 'html', file: 'out/r' }],
    });
    expect(() => parseCommand(['run', '--reporter', 'html='], {})).toThrow(/html= names no file/);
  });

  test('aggregation keeps a lone special page visible and covers the slot', () => {
    const runs: PageRun[] = [
      [0, 1, K('page-table'), 1],
      [1, 99_999, K('unused'), 0],
    ];
    const agg = aggregateRuns(runs, 100_000, 100);
    expect(agg[0]).toEqual([0, 1000, K('page-table'), 1]);
    expect(agg.reduce((n, r) => n + r[1], 0)).toBe(100_000);
    // A slot fragmented into more runs than are drawn gets one bar per span of pages.
    const many: PageRun[] = Array.from({ length: 6000 }, (_, i) => [
      i,
      1,
      i % 2 ? K('private') : K('shared'),
      (i % 2) as 0 | 1,
    ]);
    const svg = memorySvg(sevMap(many, 6000));
    expect(svg).toContain('aggregated: one bar per 3 pages');
    expect(svg.match(/<rect /g)!.length).toBeLessThan(5000);
  });

  test('long unused runs are drawn shortened, the rest to scale', () => {
    const runs: PageRun[] = [
      [0, 10, K('image'), 0],
      [10, 1000, K('unused'), 0],
      [1010, 14, K('page-table'), 0],
      [1024, 40, K('unused'), 0],
    ];
    const lay = layoutRuns(runs, 1064);
    expect(lay.shortened).toEqual([false, true, false, false]);
    expect(lay.len).toEqual([10, 8, 14, 40]);
    expect(lay.pos).toEqual([0, 10, 18, 32]);
    expect(lay.total).toBe(72);
    const svg = memorySvg(sevMap(runs, 1064));
    expect(svg).toContain('1000 pages · unused (drawn shortened)');
    expect(svg).toContain('unused, shortened');
  });

  test('the memory picture has a band per slot, a legend with counts and a private/shared row', () => {
    const svg = memorySvg(
      sevMap(
        [
          [0, 4, K('page-table'), 1],
          [4, 2, K('ucall'), 0],
          [6, 10, K('unused'), 0],
        ],
        16,
      ),
    );
    expect(svg).toContain('slot 0 · GPA 0x0–0xffff · 16 pages (64 KiB)');
    expect(svg).toMatch(/page-table <b>4<\/b>/);
    expect(svg).toMatch(/ucall <b>2<\/b>/);
    expect(svg).toContain('0x0–0x3fff · 4 pages · page-table · private');
    expect(svg).toContain(KIND_COLOURS['page-table']);
  });

  test('the timeline follows moves, mirrors and closes', () => {
    const ev = (
      step: number,
      op: 'create' | 'init' | 'move' | 'mirror' | 'close',
      vm: number,
      from?: number,
    ) => ({
      step,
      atMs: step,
      op,
      vm,
      ...(from === undefined ? {} : { from }),
    });
    const vms = [1, 2, 3].map((id) => ({ id, type: 'default' as const, barebones: true }));
    const { spans, lanes } = contextSpans(
      [
        ev(0, 'create', 1),
        ev(1, 'create', 2),
        ev(2, 'move', 2, 1),
        ev(3, 'create', 3),
        ev(4, 'mirror', 3, 2),
        ev(5, 'close', 2),
      ],
      vms,
    );
    expect(lanes).toEqual([1, 2, 3]);
    // KVM_SEV_INIT dates the context; without it, it is dated from the VM's creation.
    const inited = contextSpans(
      [ev(0, 'create', 1), ev(1, 'init', 1), ev(2, 'create', 2), ev(3, 'move', 2, 1)],
      vms,
    );
    expect(inited.spans.map((x) => [x.vm, x.from, x.to])).toEqual([
      [1, 1, 3],
      [2, 3, 4],
    ]);
    expect(spans).toEqual([
      { vm: 1, ctx: 1, role: 'owner', from: 0, to: 2 },
      { vm: 2, ctx: 1, role: 'owner', from: 2, to: 5 },
      { vm: 3, ctx: 1, role: 'mirror', from: 4, to: 6 },
    ]);
  });

  test('a failure shows the source around its line, preferring the suite over library frames', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvmtest-html-'));
    writeFileSync(join(dir, 'suite.ts'), ['a', 'b', 'c', 'd', 'e', 'testAssert(x === 1)', 'g'].join('\n'));
    const message = `==== Test Assertion Failure ====\n  suite.ts:6: x === 1\n    at f (${repo}/packages/testkit/src/internal/asserts.ts:10:3)`;
    const s = sourceSnippet(message, [dir], 2)!;
    expect(s).toMatchObject({ line: 6, first: 4, lines: ['d', 'e', 'testAssert(x === 1)', 'g'] });
    const r: CaseResult = {
      suite: 's',
      name: 'c <1>',
      status: 'fail',
      durationMs: 3,
      reason: message,
      output: 'guest: hi\n',
    };
    const html = renderReport({
      results: [r],
      summary: { passed: 0, failed: 1, skipped: 0, interrupted: 0, total: 1, durationMs: 3 },
      backends: [],
      roots: [dir],
      generatedAt: 'now',
    });
    expect(html).toContain('<tr class="hit"><td class="ln">6</td><td><code>testAssert(x === 1)</code>');
    expect(html).toContain('c &lt;1&gt;');
    expect(html).toContain('guest: hi');
    expect(html).not.toMatch(/https?:\/\//); // self-contained: nothing fetched
  });
});

describe('html beside other reporters', () => {
  test('TAP keeps stdout to itself (the report location goes to stderr); pretty prints one summary', () => {
    const out = mkdtempSync(join(tmpdir(), 'kvmtest-html-'));
    const tap = kvmtest(['run', 'demo:passes', '--reporter', 'tap', '--reporter', `html=${out}/a`], fixture);
    expect(tap.code).toBe(0);
    expect(tap.stdout).toMatch(/^TAP version 13\n/);
    expect(tap.stdout).not.toContain('HTML report');
    expect(tap.stderr).toBe(`HTML report: ${out}/a/index.html\n`);
    expect(readFileSync(join(out, 'a', 'index.html'), 'utf8')).toContain('1 passed, 0 failed');
    const pretty = kvmtest(
      ['run', 'demo:passes', '--reporter', 'pretty', '--reporter', `html=${out}/b`],
      fixture,
    );
    expect(pretty.code).toBe(0);
    expect(pretty.stderr).toBe('');
    expect(pretty.stdout.match(/1 passed, 0 failed/g)).toHaveLength(1);
    expect(pretty.stdout).toMatch(new RegExp(`\\nHTML report: ${out}/b/index\\.html\\n$`));
  }, 120_000);
});

/** Debian's Chromium (or one named by KVMTEST_CHROMIUM), if installed. */
function findChromium(): string | undefined {
  return [process.env.KVMTEST_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find(
    (p): p is string => typeof p === 'string' && p !== '' && existsSync(p),
  );
}

/** Distinct colours of a PNG, and the share of pixels that differ from its top-left one. */
function pngStats(buf: Buffer): { colours: Set<number>; inked: number } {
  const png = PNG.sync.read(buf);
  const colours = new Set<number>();
  const bg = png.data.readUInt32BE(0);
  let inked = 0;
  for (let i = 0; i < png.data.length; i += 4) {
    const c = png.data.readUInt32BE(i);
    colours.add(c);
    if (c !== bg) inked++;
  }
  return { colours, inked: inked / (png.width * png.height) };
}

const rgba = (hex: string) => ((Number.parseInt(hex.slice(1), 16) << 8) | 0xff) >>> 0;

describe('html report in a browser', () => {
  test('a run of coco-smoke and sev-migrate-tests: cases, one memory picture per VM type, the timeline', async (ctx) => {
    const executablePath = findChromium();
    if (!executablePath)
      ctx.skip('no Chromium installed (apt-get install chromium, or set KVMTEST_CHROMIUM)');
    const out = mkdtempSync(join(tmpdir(), 'kvmtest-html-'));
    const run = kvmtest(['run', 'coco-smoke', 'sev-migrate-tests', '--reporter', `html=${out}/report`], repo);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`HTML report: ${out}/report/index.html`);
    const fail = kvmtest(
      ['run', 'demo:fails', 'demo:logs & passes', '--reporter', `html=${out}/fail`],
      fixture,
    );
    expect(fail.code).toBe(1);
    const data = JSON.parse(readFileSync(join(out, 'report', 'report.json'), 'utf8')) as {
      results: CaseResult[];
    };

    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      page.on('request', (r) => {
        if (!r.url().startsWith('file:')) errors.push(`fetched ${r.url()}`);
      });
      await page.goto(`file://${out}/report/index.html`);
      await page.click('#expand');
      expect(await page.textContent('#summary')).toMatch(/^\d+ passed, 0 failed/);
      expect(await page.locator('section.suite h2').allTextContents()).toEqual([
        expect.stringMatching(/^coco-smoke /),
        expect.stringMatching(/^sev-migrate-tests /),
      ]);
      expect(await page.locator('details.case').count()).toBe(data.results.length);
      expect(await page.locator('details.case .badge.pass').count()).toBe(data.results.length);

      for (const type of ['default', 'sw-protected', 'sev', 'sev-es', 'sev-snp', 'tdx']) {
        const vm = page.locator(`.vm[data-vm-type="${type}"]`, { has: page.locator('svg.memmap') }).first();
        await vm.scrollIntoViewIfNeeded();
        const legend = await vm.locator('.legend .lg').allTextContents();
        expect(legend.join(' | '), type).toMatch(/page-table \d+/);
        expect(legend.join(' | '), type).toMatch(/unused \d+/);
        const box = await vm.locator('svg.memmap').boundingBox();
        expect(box!.width, type).toBeGreaterThan(500);
        const tag = await vm.locator('svg.tagbit, p.tag').first().textContent();
        if (type.startsWith('sev'))
          expect(tag, type).toMatch(/C-bit = bit \d+: set in the PTEs of private pages/);
        else if (type === 'tdx')
          expect(tag, type).toMatch(/S-bit = bit (47|51): set in the PTEs of shared pages/);
        else expect(tag, type).toMatch(/No tag bit/);
        if (type.startsWith('sev') || type === 'tdx') expect(legend.join(' | '), type).toMatch(/private \d+/);
        // The picture is drawn: its kind colours are on screen.
        const shot = pngStats(await vm.screenshot());
        for (const k of ['page-table', 'unused', 'stack'] as const)
          expect(shot.colours.has(rgba(KIND_COLOURS[k])), `${type}: ${k} colour`).toBe(true);
      }
      const tdx = page.locator('.vm[data-vm-type="tdx"]', { has: page.locator('svg.memmap') }).first();
      expect(await tdx.locator('.slotlabel').allTextContents()).toEqual([
        expect.stringMatching(/^slot 0 · GPA 0x0–.* · guest_memfd$/),
        expect.stringMatching(/^slot \d+ · GPA 0xffff0000–.* · guest_memfd$/),
      ]);
      const migrate = page.locator('details.case', { hasText: 'sev_migrate_from' }).first();
      expect(await migrate.locator('svg.timeline rect.span').count()).toBeGreaterThan(1);
      expect(await migrate.locator('svg.timeline').textContent()).toContain(
        'KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM',
      );

      // Zoom: the wheel over a band narrows its view.
      const band = page.locator('svg.band').first();
      await band.scrollIntoViewIfNeeded();
      const before = await band.getAttribute('viewBox');
      const b = (await band.boundingBox())!;
      await page.mouse.move(b.x + 20, b.y + b.height / 2);
      await page.mouse.wheel(0, -400);
      await expect.poll(() => band.getAttribute('viewBox')).not.toBe(before);

      const full = pngStats(await page.screenshot({ fullPage: true }));
      expect(full.colours.size).toBeGreaterThan(50);
      expect(full.inked).toBeGreaterThan(0.1);

      // The failing case: the assertion and the suite's line around it.
      await page.goto(`file://${out}/fail/index.html`);
      expect(await page.textContent('#summary')).toMatch(/1 passed, 1 failed/);
      const failed = page.locator('details.case.fail');
      expect(await failed.getAttribute('open')).not.toBeNull();
      expect(await failed.locator('.snippet .file').textContent()).toMatch(
        /apps\/demo\/src\/suite\.ts:21:15$/,
      );
      expect(await failed.locator('.snippet tr.hit').textContent()).toContain(
        "throw new Error('expected 0x10 but got 0x20');",
      );
      await page.locator('details.case.pass summary').click();
      expect(await page.locator('details.case.pass pre.output').textContent()).toContain(
        'guest says <hello> & "bye"',
      );
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  }, 240_000);
});
