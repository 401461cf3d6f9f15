// `npm run bench`: runs every benchmark file (packages/*/bench/*.bench.ts, apps/*/bench/*.bench.ts),
// each in its own process so memory figures start clean, prints the figures and writes
// bench/results.json as { "<name>": { "value": n, "unit": "ops/s" | "ns/op" | "MiB" } }.
// Arguments: substrings; only files or benchmarks whose name contains one of them run, and the
// figures are merged into the existing results file.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Bench } from './bench/measure.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const resultsFile = join(root, 'bench', 'results.json');
const MARK = '@@bench-result ';

interface Figure {
  value: number;
  unit: string;
  goal?: string;
  reference?: string;
}

function benchFiles(): string[] {
  const files: string[] = [];
  for (const group of ['packages', 'apps']) {
    const base = join(root, group);
    if (!existsSync(base)) continue;
    for (const pkg of readdirSync(base).sort()) {
      const dir = join(base, pkg, 'bench');
      if (!existsSync(dir)) continue;
      for (const f of readdirSync(dir).sort()) if (f.endsWith('.bench.ts')) files.push(join(dir, f));
    }
  }
  return files;
}

async function runOne(file: string, filters: string[]): Promise<void> {
  const mod = (await import(pathToFileURL(file).href)) as { default: Bench[] };
  for (const b of mod.default) {
    if (filters.length && !filters.some((f) => b.name.includes(f) || file.includes(f))) continue;
    const value = await b.run();
    const fig: Figure = { value: Number(value.toPrecision(4)), unit: b.unit };
    if (b.goal) fig.goal = b.goal;
    if (b.reference) fig.reference = b.reference;
    process.stdout.write(`${MARK}${JSON.stringify({ name: b.name, ...fig })}\n`);
  }
}

function fmt(n: number): string {
  return n >= 1000 ? Math.round(n).toLocaleString('en-US') : String(n);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === '--one') return runOne(args[1]!, args.slice(2));
  const filters = args;
  const results: Record<string, Figure> =
    filters.length && existsSync(resultsFile) ? JSON.parse(readFileSync(resultsFile, 'utf8')) : {};
  let failed = 0;
  for (const file of benchFiles()) {
    const rel = relative(root, file);
    const r = spawnSync(
      process.execPath,
      [
        '--expose-gc',
        '--conditions=@kvmtest/source',
        '--import',
        'tsx',
        fileURLToPath(import.meta.url),
        '--one',
        file,
        ...filters,
      ],
      { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    for (const line of r.stdout.split('\n')) {
      if (!line.startsWith(MARK)) continue;
      const { name, ...fig } = JSON.parse(line.slice(MARK.length)) as Figure & { name: string };
      results[name] = fig;
      const extra = [fig.goal && `goal ${fig.goal}`, fig.reference && `ref ${fig.reference}`]
        .filter(Boolean)
        .join('; ');
      console.log(`${name.padEnd(44)} ${fmt(fig.value).padStart(14)} ${fig.unit.padEnd(6)} ${extra}`);
    }
    if (r.status !== 0) {
      failed++;
      console.error(`bench: ${rel} exited with ${r.status}`);
    }
  }
  mkdirSync(dirname(resultsFile), { recursive: true });
  const sorted = Object.fromEntries(Object.entries(results).sort(([a], [b]) => a.localeCompare(b)));
  writeFileSync(resultsFile, `${JSON.stringify(sorted, null, 2)}\n`);
  console.log(`bench: ${Object.keys(results).length} figures written to ${relative(root, resultsFile)}`);
  if (failed) process.exit(1);
}

await main();
