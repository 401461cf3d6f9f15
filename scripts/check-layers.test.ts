import { describe, expect, test } from 'vitest';
// @ts-expect-error: a plain .mjs script without type declarations
import { LAYERS, layerViolations, workspacePackages } from './check-layers.mjs';

type Pkg = { group: string; file: string; manifest: { name: string; dependencies?: Record<string, string> } };
const pkg = (name: string, deps: string[] = [], group = 'packages'): Pkg => ({
  group,
  file: `${group}/${name}/package.json`,
  manifest: { name, dependencies: Object.fromEntries(deps.map((d) => [d, 'workspace:^'])) },
});

describe('layer check', () => {
  test('the real workspace has no upward edges', () => {
    expect(layerViolations(workspacePackages())).toEqual([]);
  });

  test('a dependency on a higher layer is reported with both names and layers', () => {
    const problems = layerViolations([pkg('@kvmtest/guest-memory', ['@kvmtest/kvm'])]);
    expect(problems).toEqual([
      '@kvmtest/guest-memory (layer 0) depends on @kvmtest/kvm (layer 1): a package may only depend on layers below it',
    ]);
  });

  test('siblings may not depend on each other', () => {
    expect(layerViolations([pkg('@kvmtest/ucall', ['@kvmtest/kvm-sim'])])).toHaveLength(1);
    expect(LAYERS['@kvmtest/ucall']).toBe(LAYERS['@kvmtest/kvm-sim']);
  });

  test('apps may use any library, and libraries may not use an app', () => {
    expect(layerViolations([pkg('coco-smoke', ['@kvmtest/cli', '@kvmtest/testkit'], 'apps')])).toEqual([]);
    expect(layerViolations([pkg('@kvmtest/cli', ['sev-migrate-tests'])])).toEqual([]);
    expect(layerViolations([pkg('@kvmtest/testkit', ['@kvmtest/sev-migrate-tests'])])).toEqual([
      '@kvmtest/testkit depends on @kvmtest/sev-migrate-tests, which is not a library layer',
    ]);
  });

  test('a package missing from the layer table is reported', () => {
    expect(layerViolations([pkg('@kvmtest/new-thing')])[0]).toMatch(/is not in the layer table/);
  });
});
