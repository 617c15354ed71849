/**
 * The VM registry: one configuration file per VM, <data>/vms/<id>/config.json, written
 * atomically (temp file, fsync, rename, fsync of the directory) so that a crash at any moment
 * leaves either the old or the new file, never a torn one.
 *
 * The file holds the VM's configuration and the last persistent facts about it: its state (as
 * last recorded: a restarted service reconciles it with the live workers), the status line,
 * and whether a saved state exists. Files are validated on load; a file that fails validation
 * is skipped with a warning rather than taking the whole service down.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { GUID_PATTERN, VmConfig, VmStateSchema } from '../defs/api.js';
import { vmDir, type TshvPaths } from '../defs/paths.js';

export const RegistryRecord = Type.Object({
  version: Type.Literal(1),
  config: VmConfig,
  state: VmStateSchema,
  status: Type.String({ maxLength: 4096 }),
  hasSavedState: Type.Boolean(),
}, { additionalProperties: false });
export type RegistryRecord = Static<typeof RegistryRecord>;

const check = TypeCompiler.Compile(RegistryRecord);
const GUID_RE = new RegExp(GUID_PATTERN);

/** Write `text` to `path` atomically and durably. */
export function writeFileAtomic(path: string, text: string, mode = 0o600): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dir = openSync(join(path, '..'), 'r');
  try { fsyncSync(dir); } finally { closeSync(dir); }
}

export class Registry {
  constructor(readonly paths: TshvPaths) {
    mkdirSync(paths.vmsDir, { recursive: true, mode: 0o700 });
  }

  configPath(id: string): string { return join(vmDir(this.paths, id), 'config.json'); }

  save(rec: RegistryRecord): void {
    mkdirSync(vmDir(this.paths, rec.config.id), { recursive: true, mode: 0o700 });
    writeFileAtomic(this.configPath(rec.config.id), JSON.stringify(rec, null, 2) + '\n');
  }

  remove(id: string): void {
    if (!GUID_RE.test(id)) return;
    rmSync(vmDir(this.paths, id), { recursive: true, force: true });
  }

  /** Every valid record; invalid files are reported through `warn` and skipped. */
  loadAll(warn: (msg: string) => void): RegistryRecord[] {
    const out: RegistryRecord[] = [];
    for (const name of readdirSync(this.paths.vmsDir)) {
      if (!GUID_RE.test(name)) continue;
      const p = this.configPath(name);
      let v: unknown;
      try { v = JSON.parse(readFileSync(p, 'utf8')); } catch (e) {
        warn(`skipping ${p}: ${e instanceof Error ? e.message : String(e)}`);
        continue;
      }
      if (!check.Check(v)) {
        const first = [...check.Errors(v)][0];
        warn(`skipping ${p}: ${first ? `${first.path}: ${first.message}` : 'invalid'}`);
        continue;
      }
      if (v.config.id !== name) { warn(`skipping ${p}: id ${v.config.id} does not match its directory`); continue; }
      out.push(v);
    }
    return out;
  }
}
