/**
 * Command line for the differential runner: `node dist/tests/diff/cli.js [perForm] [seed]`
 * runs the generated single-instruction cases on emu and QEMU and prints every mismatch;
 * `--gaps` adds the generators of KNOWN_GAPS (instructions emu does not implement yet).
 */
import { pathToFileURL } from 'node:url';
import { generateCases, runDifferential } from './runner.js';
import { qemuAvailable } from './qemu.js';

async function main(): Promise<void> {
  const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
  const perForm = Number(args[0] ?? '4');
  const seed = Number(args[1] ?? '12345');
  const avail = qemuAvailable();
  if (!avail.ok) { console.log(`skipped: ${avail.reason}`); return; }
  const cases = generateCases(seed, perForm, { includeGaps: process.argv.includes('--gaps') });
  const r = await runDifferential(cases, { log: (s) => console.log(s) });
  console.log(`${r.cases} cases, ${r.mismatches.length} mismatches, ${r.undefinedOnly} differing only in undefined flags/registers, ${(r.ms / 1000).toFixed(1)} s`);
  for (const [k, n] of [...r.undefinedSummary].sort()) console.log(`  undefined-only: ${k} (${n})`);
  process.exitCode = r.mismatches.length === 0 ? 0 : 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) void main();
