/**
 * `npm run bench:lifecycle` (node dist/bench/lifecycle.js [--json] [--runs N]): the management
 * plane's lifecycle costs, measured through the real service, worker processes and API:
 *
 * - start to first guest instruction: from the API call POST /v1/vms/{vm}/start to the first
 *   serial byte, which the guest's first instructions write (`mov dx,0x3f8; mov al,'T'; out`);
 *   and separately the worker spawn time (fork() to the worker's `ready`, as VMMS records it);
 * - save and restore of a 256 MiB guest whose every page the guest has written (so that the
 *   save file holds all 256 MiB; an untouched guest saves in milliseconds because zero pages
 *   are skipped);
 * - the worker's memory overhead beyond guest RAM: the worker's RSS (/proc/<pid>/smaps_rollup)
 *   minus the resident part of the guest RAM mapping (the smallest writable mapping at least as
 *   large as guest RAM, from /proc/<pid>/smaps). Measured twice: right after start (the guest
 *   has touched nothing) and after the guest has written every page.
 *
 * Anchors: Firecracker starts its VMM in about 12 ms and reports at most 5 MiB of VMM memory
 * overhead per microVM. Where /dev/kvm is unusable the benchmark says so and exits 0.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Table from 'cli-table3';
import type { VmInfo } from '../src/defs/api.js';
import { saveFilePath } from '../src/defs/paths.js';
import { TestHome, kvmSkipReason, rawRequest, sleep } from '../tests/vmms/helpers.js';

const MIB = 1024 * 1024;
const json = process.argv.includes('--json');
const runsArg = process.argv.indexOf('--runs');
const runs = runsArg >= 0 ? Number(process.argv[runsArg + 1]) : 5;
if (!Number.isInteger(runs) || runs < 1 || runs > 100) throw new Error('--runs must be 1..100');

const GUEST_MEMORY = 256 * MIB;
const TOUCH_FROM = 0x200000;

/**
 * Long-mode guest at 0x100000: prints 'T' at once, writes one qword into every page from 2 MiB
 * to the end of RAM, prints 'R', then spins.
 */
function guestImage(memoryBytes: number): Uint8Array {
  const pages = (memoryBytes - TOUCH_FROM) / 4096;
  const b: number[] = [
    0x66, 0xba, 0xf8, 0x03,                 // mov dx, 0x3f8
    0xb0, 0x54, 0xee,                       // mov al, 'T'; out dx, al
    0x48, 0xbf, ...le64(TOUCH_FROM),        // mov rdi, TOUCH_FROM
    0x48, 0xb9, ...le64(pages),             // mov rcx, pages
    0x48, 0x89, 0x3f,                       // l: mov [rdi], rdi
    0x48, 0x81, 0xc7, 0x00, 0x10, 0x00, 0x00, //    add rdi, 0x1000
    0x48, 0xff, 0xc9,                       //    dec rcx
    0x75, 0xf1,                             //    jnz l
    0xb0, 0x52, 0xee,                       // mov al, 'R'; out dx, al
    0xeb, 0xfe,                             // jmp $
  ];
  return Uint8Array.from(b);
}

function le64(v: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < 8; i++) out.push(Math.floor(v / 2 ** (8 * i)) & 0xff);
  return out;
}

function kib(line: string | undefined): number {
  const m = /([0-9]+) kB/.exec(line ?? '');
  return m ? Number(m[1]) * 1024 : 0;
}

/** {rss, guestResident}: the worker's RSS and the resident part of its largest mapping. */
function workerMemory(pid: number, memoryBytes: number): { rss: number; guestResident: number } {
  const rss = kib(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').split('\n').find((l) => l.startsWith('Rss:')));
  let guestResident = 0;
  let size = 0;
  let writable = false;
  let best = 0;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) {
      const [a, b] = line.split(' ')[0]!.split('-').map((x) => Number.parseInt(x, 16));
      size = (b ?? 0) - (a ?? 0);
      writable = line.split(' ')[1]?.startsWith('rw') === true;
    } else if (line.startsWith('Rss:') && writable && size >= memoryBytes && (best === 0 || size < best)) {
      best = size;
      guestResident = kib(line);
    }
  }
  return { rss, guestResident };
}

async function firstByteAfterStart(h: TestHome, name: string): Promise<{ firstByteMs: number; runningMs: number; spawnMs: number }> {
  const t0 = performance.now();
  let runningMs = 0;
  const start = h.ok<VmInfo>('POST', `/v1/vms/${name}/start`, {}).then((v) => { runningMs = performance.now() - t0; return v; });
  let firstByteMs = -1;
  while (firstByteMs < 0 && performance.now() - t0 < 20000) {
    const r = await rawRequest(h.paths.apiSocket, 'GET', `/v1/vms/${name}/console?since=0&waitMs=1000`);
    if (r.status === 200 && (r.body as { end: number }).end > 0) firstByteMs = performance.now() - t0;
  }
  const v = await start;
  if (firstByteMs < 0) throw new Error('the guest printed nothing within 20 s');
  return { firstByteMs, runningMs, spawnMs: v.workerSpawnMs ?? NaN };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

async function main(): Promise<void> {
  const skip = kvmSkipReason();
  if (skip !== undefined) {
    process.stdout.write(json ? JSON.stringify({ skipped: skip }) + '\n' : `bench:lifecycle skipped: ${skip}\n`);
    return;
  }
  const h = new TestHome('bench');
  try {
    const image = join(h.home, 'touch.bin');
    writeFileSync(image, guestImage(GUEST_MEMORY));
    await h.startService();
    await h.ok('POST', '/v1/vms', {
      name: 'bench', memoryBytes: GUEST_MEMORY, cpus: 1, backend: 'kvm',
      boot: { kind: 'flat', file: image, mode: 'long64', loadGpa: 0x100000 },
    });

    const starts: { firstByteMs: number; runningMs: number; spawnMs: number }[] = [];
    let fresh = { rss: 0, guestResident: 0 };
    for (let i = 0; i < runs; i++) {
      starts.push(await firstByteAfterStart(h, 'bench'));
      if (i === 0) fresh = workerMemory((await h.vm('bench')).workerPid!, GUEST_MEMORY);
      if (i < runs - 1) await h.ok('POST', '/v1/vms/bench/stop', { turnOff: true });
    }

    // Wait for the guest to have written every page ('R'), then measure memory and save/restore.
    const deadline = performance.now() + 60000;
    while (!(await h.transcript('bench')).includes('R')) {
      if (performance.now() > deadline) throw new Error('the guest did not finish touching its memory');
      await sleep(50);
    }
    const running = await h.vm('bench');
    const pid = running.workerPid!;
    const mem = workerMemory(pid, GUEST_MEMORY);

    let t = performance.now();
    await h.ok('POST', '/v1/vms/bench/save', {});
    const saveMs = performance.now() - t;
    const saveBytes = statSync(saveFilePath(h.paths, running.id)).size;
    t = performance.now();
    await h.ok('POST', '/v1/vms/bench/start', {});
    const restoreMs = performance.now() - t;
    await h.ok('POST', '/v1/vms/bench/stop', { turnOff: true });

    const r = {
      runs,
      startToFirstByteMs: round(median(starts.map((s) => s.firstByteMs))),
      startToRunningMs: round(median(starts.map((s) => s.runningMs))),
      workerSpawnMs: round(median(starts.map((s) => s.spawnMs))),
      guestMemoryMiB: GUEST_MEMORY / MIB,
      saveMs: round(saveMs),
      restoreMs: round(restoreMs),
      saveFileMiB: round(saveBytes / MIB),
      workerRssMiB: round(mem.rss / MIB),
      guestRamResidentMiB: round(mem.guestResident / MIB),
      workerOverheadMiB: round((mem.rss - mem.guestResident) / MIB),
      freshWorkerRssMiB: round(fresh.rss / MIB),
      freshGuestRamResidentMiB: round(fresh.guestResident / MIB),
      anchors: { firecrackerVmmStartMs: 12, firecrackerOverheadMiB: 5 },
    };
    if (json) {
      process.stdout.write(JSON.stringify(r) + '\n');
      return;
    }
    const t2 = new Table({ head: ['measure', 'tshv', 'anchor'], style: { head: [], border: [] } });
    t2.push(
      ['API start -> first guest serial byte (median)', `${r.startToFirstByteMs} ms`, 'Firecracker VMM start ~12 ms'],
      ['API start -> Running reply (median)', `${r.startToRunningMs} ms`, ''],
      ['worker spawn (fork -> ready, median)', `${r.workerSpawnMs} ms`, ''],
      [`save ${r.guestMemoryMiB} MiB guest (every page written)`, `${r.saveMs} ms (${r.saveFileMiB} MiB file)`, ''],
      [`restore ${r.guestMemoryMiB} MiB guest`, `${r.restoreMs} ms`, ''],
      ['worker RSS', `${r.workerRssMiB} MiB`, ''],
      ['  of which guest RAM resident', `${r.guestRamResidentMiB} MiB`, ''],
      ['worker overhead beyond guest RAM', `${r.workerOverheadMiB} MiB`, 'Firecracker <= 5 MiB'],
      ['fresh worker RSS / guest RAM resident (just started)', `${r.freshWorkerRssMiB} / ${r.freshGuestRamResidentMiB} MiB`, ''],
    );
    process.stdout.write(`bench:lifecycle (kvm backend, ${runs} starts)\n${t2.toString()}\n`);
  } finally {
    await h.cleanup();
  }
}

function round(x: number): number { return Math.round(x * 10) / 10; }

await main();
