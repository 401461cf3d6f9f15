#!/usr/bin/env node
// Layer check: a workspace package may depend only on packages below it (ARCHITECTURE.md, "Layers").
// Reads every workspace package.json; fails naming each upward or sideways edge.
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

// Rank per package; a dependency must have a strictly lower rank (siblings may not import each other).
export const LAYERS = {
  '@kvmtest/guest-memory': 0,
  '@kvmtest/coco': 0,
  '@kvmtest/kvm': 1,
  '@kvmtest/kvm-sim': 2,
  '@kvmtest/kvm-linux': 2,
  '@kvmtest/ucall': 2,
  '@kvmtest/testkit': 3,
  '@kvmtest/cli': 4,
};
const APP_RANK = 5;

export function workspacePackages(dir = root) {
  const out = [];
  for (const group of ['packages', 'apps']) {
    const base = join(dir, group);
    if (!existsSync(base)) continue;
    for (const name of readdirSync(base)) {
      const file = join(base, name, 'package.json');
      if (existsSync(file)) out.push({ group, file, manifest: JSON.parse(readFileSync(file, 'utf8')) });
    }
  }
  return out;
}

export function layerViolations(pkgs) {
  const problems = [];
  const rankOf = (p) => (p.group === 'apps' ? APP_RANK : LAYERS[p.manifest.name]);
  for (const p of pkgs) {
    const rank = rankOf(p);
    if (rank === undefined) {
      problems.push(`${p.manifest.name} (${p.file}) is not in the layer table of scripts/check-layers.mjs`);
      continue;
    }
    const deps = {
      ...p.manifest.dependencies,
      ...p.manifest.peerDependencies,
      ...p.manifest.devDependencies,
    };
    for (const dep of Object.keys(deps)) {
      if (!dep.startsWith('@kvmtest/')) continue;
      const depRank = LAYERS[dep];
      if (depRank === undefined)
        problems.push(`${p.manifest.name} depends on ${dep}, which is not a library layer`);
      else if (depRank >= rank)
        problems.push(
          `${p.manifest.name} (layer ${rank}) depends on ${dep} (layer ${depRank}): a package may only depend on layers below it`,
        );
    }
  }
  return problems;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const pkgs = workspacePackages();
  const problems = layerViolations(pkgs);
  if (problems.length) {
    for (const p of problems) console.error(`layer check: ${p}`);
    process.exit(1);
  }
  console.log(`layer check: ${pkgs.length} workspace packages, no upward edges`);
}
