import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VM_EVENTS, VM_STATES, hasWorker, transition, type Target, type VmEvent, type VmState } from './states.js';

// The specification, written out independently of the table: every allowed transition.
// Anything not listed here must be refused.
const ALLOWED: readonly [VmState, VmEvent, Target][] = [
  ['Off', 'start', 'Starting'], ['Off', 'remove', 'Removed'],
  ['Starting', 'started', 'Running'], ['Starting', 'startFailed', 'Off'], ['Starting', 'turnOff', 'Stopping'], ['Starting', 'guestOff', 'Off'], ['Starting', 'crashed', 'Crashed'],
  ['Running', 'pause', 'Paused'], ['Running', 'save', 'Saving'], ['Running', 'stop', 'Stopping'], ['Running', 'turnOff', 'Stopping'],
  ['Running', 'guestOff', 'Off'], ['Running', 'crashed', 'Crashed'],
  ['Paused', 'resume', 'Running'], ['Paused', 'save', 'Saving'], ['Paused', 'stop', 'Stopping'], ['Paused', 'turnOff', 'Stopping'], ['Paused', 'crashed', 'Crashed'],
  ['Saving', 'saved', 'Saved'], ['Saving', 'saveFailed', 'Paused'], ['Saving', 'crashed', 'Crashed'],
  ['Saved', 'start', 'Restoring'], ['Saved', 'turnOff', 'Stopping'], ['Saved', 'remove', 'Removed'], ['Saved', 'crashed', 'Crashed'],
  ['Restoring', 'restored', 'Running'], ['Restoring', 'restoreFailed', 'Saved'], ['Restoring', 'guestOff', 'Off'], ['Restoring', 'crashed', 'Crashed'],
  ['Stopping', 'stopped', 'Off'], ['Stopping', 'guestOff', 'Off'], ['Stopping', 'turnOff', 'Stopping'], ['Stopping', 'crashed', 'Crashed'],
  ['Crashed', 'start', 'Starting'], ['Crashed', 'turnOff', 'Off'], ['Crashed', 'remove', 'Removed'],
];

test('transition_everyStateEventPair_matchesTheSpecification', () => {
  let checked = 0;
  for (const s of VM_STATES) {
    for (const ev of VM_EVENTS) {
      const spec = ALLOWED.find(([a, b]) => a === s && b === ev);
      assert.equal(transition(s, ev), spec?.[2], `${s} --${ev}-->`);
      checked++;
    }
  }
  assert.equal(checked, VM_STATES.length * VM_EVENTS.length);
});

test('transition_everyStateIsReachableFromOff', () => {
  const seen = new Set<string>(['Off']);
  const queue: VmState[] = ['Off'];
  while (queue.length > 0) {
    const s = queue.shift()!;
    for (const ev of VM_EVENTS) {
      const t = transition(s, ev);
      if (t !== undefined && t !== 'Removed' && !seen.has(t)) { seen.add(t); queue.push(t); }
    }
  }
  assert.deepEqual([...seen].sort(), [...VM_STATES].sort());
});

test('transition_turnOffThenReports_alwaysReachesOffOrRemovable', () => {
  // From every state, the management plane can get the VM to a removable state.
  for (const s of VM_STATES) {
    let cur: VmState = s;
    for (let i = 0; i < 4 && transition(cur, 'remove') === undefined; i++) {
      const next: Target | undefined = transition(cur, 'turnOff') ?? transition(cur, 'stopped') ?? transition(cur, 'crashed');
      assert.ok(next !== undefined && next !== 'Removed', `${cur} is stuck`);
      cur = next === 'Stopping' ? 'Stopping' : next;
      if (cur === 'Stopping') cur = transition(cur, 'stopped') as VmState;
    }
    assert.notEqual(transition(cur, 'remove'), undefined, `${s} never becomes removable`);
  }
});

test('transition_crashed_fromEveryStateWithAWorker', () => {
  for (const s of VM_STATES) {
    if (hasWorker(s)) assert.equal(transition(s, 'crashed'), 'Crashed', s);
    else assert.equal(transition(s, 'crashed'), undefined, s);
  }
});

test('transition_userOpsDuringTransientStates_areRefused', () => {
  for (const s of ['Starting', 'Saving', 'Restoring', 'Stopping'] as const) {
    for (const op of ['start', 'pause', 'resume', 'save', 'stop', 'remove'] as const) {
      assert.equal(transition(s, op), undefined, `${op} in ${s}`);
    }
  }
});
