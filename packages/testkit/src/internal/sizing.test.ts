import { describe, expect, test } from 'vitest';
import { BASE_GUEST_PAGES, ucallPagesRequired, vmNrPagesRequired } from './sizing.js';

describe('slot 0 sizing (vm_nr_pages_required)', () => {
  test('512 base pages, 5 stack pages per vCPU, page-table headroom and the ucall pool', () => {
    // 512 + 5 = 517; headroom floor(517 / 512) * 2 = 2; pool of 512 slots = 138 pages.
    expect(ucallPagesRequired()).toBe(138);
    expect(vmNrPagesRequired(1)).toBe(517 + 2 + 138);
    expect(vmNrPagesRequired(1, { ucallPages: 0 })).toBe(519);
    // extra pages only widen the page-table headroom
    expect(vmNrPagesRequired(1, { ucallPages: 0, extraPages: 1024 })).toBe(517 + 6);
    expect(vmNrPagesRequired(100, { ucallPages: 0 })).toBe(BASE_GUEST_PAGES + 500 + 2 * 1);
  });

  test('GHCB pages are added per vCPU when asked', () => {
    expect(ucallPagesRequired(512, 4)).toBe(142);
  });

  test('zero vCPUs points at vmCreateBarebones; too many names the limit', () => {
    expect(() => vmNrPagesRequired(0)).toThrow(/use vmCreateBarebones\(\)/);
    expect(() => vmNrPagesRequired(513)).toThrow(/exceeds KVM_MAX_VCPUS \(512\)/);
    expect(() => vmNrPagesRequired(1, { extraPages: -1 })).toThrow(/extra page count -1/);
  });
});
