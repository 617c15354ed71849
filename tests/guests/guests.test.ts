/**
 * The freestanding guest suite: every guest of tests/guests/guests.json, on every backend of
 * BACKENDS, built with the machine's gcc/ld when the tests run, loaded by src/loader/flat.ts,
 * run in a fresh VM, and judged by its exact serial transcript (tests/guests/expected/) and
 * its exit kind and code.
 *
 * A backend this host cannot run is reported as a skipped test with the reason, never passed.
 * TSHV_GUEST_BACKENDS=kvm,emu picks the backends for one run.
 * A missing toolchain or a build error fails the suite (the guests are part of the tests).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isBackendKind, type BackendKind } from '../../src/winhv/winhv.js';
import { buildGuests, CPU_FEATURES, fillTranscript, loadManifest, readExpectedTranscript, type BuiltGuest, type CpuFeature } from './build.js';
import type { Backend } from '../../src/winhv/winhv.js';
import { backendFor, comparableExit, cpuVendorOf, runGuest } from './harness.js';

/** The backends the suite runs on. The emu backend joins with one line: 'emu'. */
const DEFAULT_BACKENDS: readonly BackendKind[] = ['kvm', 'emu'];

/** TSHV_GUEST_BACKENDS=kvm,emu overrides the list (an unknown name fails the suite). */
function backends(): readonly BackendKind[] {
  const env = process.env['TSHV_GUEST_BACKENDS'];
  if (env === undefined || env.trim() === '') return DEFAULT_BACKENDS;
  return env.split(',').map((s) => {
    const k = s.trim();
    if (!isBackendKind(k)) throw new Error(`TSHV_GUEST_BACKENDS: unknown backend ${JSON.stringify(k)}`);
    return k;
  });
}

const manifest = loadManifest();

/** The required features this backend's processor does not advertise (CPUID leaf 1). */
function missingFeatures(backend: Backend, required: readonly CpuFeature[]): CpuFeature[] {
  const leaf1 = backend.supportedCpuid().find((e) => e.function === 1 && e.index === 0);
  return required.filter((f) => {
    const [reg, bit] = CPU_FEATURES[f];
    return leaf1 === undefined || ((leaf1[reg] >>> bit) & 1) === 0;
  });
}

let built: Map<string, BuiltGuest> | undefined;
function guest(name: string): BuiltGuest {
  built ??= buildGuests();
  const g = built.get(name);
  if (g === undefined) throw new Error(`guest ${name} was not built`);
  return g;
}

for (const kind of backends()) {
  describe(`guests on ${kind}`, () => {
    const avail = backendFor(kind);
    for (const spec of manifest) {
      test(`${spec.name} on ${kind}`, { timeout: spec.timeoutMs + 30000 }, async (t) => {
        if (!avail.ok) {
          t.skip(avail.reason);
          return;
        }
        const missing = missingFeatures(avail.backend, spec.requires);
        if (missing.length > 0) {
          t.skip(`the ${kind} processor does not offer ${missing.join(', ')}, which ${spec.name} needs`);
          return;
        }
        const g = guest(spec.name);
        const expected = fillTranscript(readExpectedTranscript(spec.name), { cpuVendor: cpuVendorOf(avail.backend) });
        const run = await runGuest(avail.backend, g);
        t.diagnostic(`${spec.name} on ${kind}: ${run.exit.kind} after ${run.wallMs.toFixed(0)} ms, ${run.transcript.length} serial bytes`);
        assert.equal(run.transcript, expected, `serial transcript of ${spec.name} (exit: ${JSON.stringify(comparableExit(run.exit))})`);
        assert.deepEqual(comparableExit(run.exit), spec.exit, `exit of ${spec.name}`);
      });
    }
  });
}
