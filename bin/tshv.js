#!/usr/bin/env node
// The `tshv` command: runs the compiled CLI (built by `npm ci` through the prepare script).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  process.stderr.write('tshv: not built yet; run `npm ci` (or `npm run build`) in the checkout first\n');
  process.exit(70);
}
const { runCli } = await import(main.href);
process.exitCode = await runCli(process.argv);
