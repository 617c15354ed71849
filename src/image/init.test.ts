import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { TshvError } from '../base/errors.js';
import { encodeExecParam, EXIT_MARKER, READY_BANNER, renderInit } from './init.js';

const mods = [
  { name: 'hv_vmbus', relPath: 'kernel/drivers/hv/hv_vmbus.ko' },
  { name: 'hv_utils', relPath: 'kernel/drivers/hv/hv_utils.ko' },
];

describe('init script', () => {
  it('renderInit_isValidShInLoadOrder', () => {
    const s = renderInit('6.1.0-56-amd64', mods);
    execFileSync('sh', ['-n'], { input: s }); // syntax check by the host shell
    assert.ok(s.startsWith('#!/bin/sh\n'));
    assert.ok(s.indexOf('hv_vmbus:kernel/drivers/hv/hv_vmbus.ko') < s.indexOf('hv_utils:kernel/drivers/hv/hv_utils.ko'));
    for (const needle of ['mount -t proc', 'mount -t sysfs', 'mount -t devtmpfs', '--install -s', 'setsid cttyhack sh', 'poweroff -f', READY_BANNER, EXIT_MARKER, 'moddir=/lib/modules/6.1.0-56-amd64']) {
      assert.ok(s.includes(needle), needle);
    }
    execFileSync('sh', ['-n'], { input: renderInit('r', []) });
  });

  it('renderInit_unsafeStrings_rejected', () => {
    assert.throws(() => renderInit('6.1; rm -rf /', mods), TshvError);
    assert.throws(() => renderInit('r', [{ name: 'x', relPath: 'a b.ko' }]), TshvError);
    assert.throws(() => renderInit('r', [{ name: '$(x)', relPath: 'a.ko' }]), TshvError);
  });

  it('execContract_cmdlineParsingAndDecoding_matchInitScript', () => {
    // Run the script's own cmdline-parsing fragment on the host shell with a fake /proc/cmdline.
    const s = renderInit('r', []);
    const start = s.indexOf('exec_b64=\n');
    const end = s.indexOf('echo "' + READY_BANNER);
    const fragment = s.slice(start, end).replace('$(cat /proc/cmdline)', '$CMDLINE');
    const cmd = "echo 'a b' | tr ' ' '_'; exit 5";
    const param = encodeExecParam(cmd);
    const out = execFileSync('sh', ['-c', `set -f\n${fragment}\nprintf %s "$exec_b64" | base64 -d`], {
      env: { ...process.env, CMDLINE: `console=ttyS0 ${param} panic=-1` },
    }).toString();
    assert.equal(out, cmd);
  });
});
