/**
 * VM states and the one transition table every state change goes through.
 *
 * The states are Hyper-V's (Get-VM's State column): Off, Starting, Running, Paused, Saving,
 * Saved, Restoring, Stopping, plus Crashed (the worker process died or the partition hit an
 * unrecoverable error; Hyper-V shows this as "Critical"). A VM has a worker process (VMWP)
 * whenever it is not Off or Crashed: Running, Paused and Saved VMs all have one.
 *
 * Events are of two kinds: operations a user asks for through the API (`start`, `pause`,
 * `resume`, `save`, `stop`, `turnOff`, `remove`) and reports from the worker or the supervisor
 * (`started`, `startFailed`, `saved`, `saveFailed`, `restored`, `restoreFailed`, `stopped`,
 * `guestOff`, `crashed`). `transition()` is pure: the service asks it before every change and
 * answers 409 when it says no; the test enumerates every (state, event) pair.
 *
 * DEVNOTE: `remove` is a transition to the pseudo-state 'Removed' so that the same table
 * decides whether a VM may be deleted (Off, Saved and Crashed VMs may; Hyper-V's Remove-VM
 * discards a saved state too).
 */

export const VM_STATES = ['Off', 'Starting', 'Running', 'Paused', 'Saving', 'Saved', 'Restoring', 'Stopping', 'Crashed'] as const;
export type VmState = typeof VM_STATES[number];

export const USER_OPS = ['start', 'pause', 'resume', 'save', 'stop', 'turnOff', 'remove'] as const;
export type UserOp = typeof USER_OPS[number];

export const REPORTS = ['started', 'startFailed', 'saved', 'saveFailed', 'restored', 'restoreFailed', 'stopped', 'guestOff', 'crashed'] as const;
export type Report = typeof REPORTS[number];

export type VmEvent = UserOp | Report;
export const VM_EVENTS: readonly VmEvent[] = [...USER_OPS, ...REPORTS];

export type Target = VmState | 'Removed';

/** Every allowed transition; anything not listed is refused. */
const TABLE: Readonly<Record<VmState, Partial<Readonly<Record<VmEvent, Target>>>>> = {
  Off: { start: 'Starting', remove: 'Removed' },
  // A guest can power off before the worker's start reply reaches the service (a fast guest on
  // emu does): its `guestOff` report then ends the start, and the late `started` is refused.
  Starting: { started: 'Running', startFailed: 'Off', turnOff: 'Stopping', guestOff: 'Off', crashed: 'Crashed' },
  Running: {
    pause: 'Paused', save: 'Saving', stop: 'Stopping', turnOff: 'Stopping',
    guestOff: 'Off', crashed: 'Crashed',
  },
  Paused: {
    resume: 'Running', save: 'Saving', stop: 'Stopping', turnOff: 'Stopping',
    crashed: 'Crashed',
  },
  // A save that fails leaves the VM paused (its processors were stopped for the save).
  Saving: { saved: 'Saved', saveFailed: 'Paused', crashed: 'Crashed' },
  // `turnOff` of a saved VM discards the saved state (Hyper-V: "Delete Saved State").
  Saved: { start: 'Restoring', turnOff: 'Stopping', remove: 'Removed', crashed: 'Crashed' },
  // A refused save file leaves the VM Saved, with nothing changed.
  Restoring: { restored: 'Running', restoreFailed: 'Saved', guestOff: 'Off', crashed: 'Crashed' },
  Stopping: { stopped: 'Off', guestOff: 'Off', turnOff: 'Stopping', crashed: 'Crashed' },
  Crashed: { start: 'Starting', turnOff: 'Off', remove: 'Removed' },
};

/** The state after `event` in `state`, or undefined when the transition is invalid. */
export function transition(state: VmState, event: VmEvent): Target | undefined {
  return TABLE[state][event];
}

export function isVmState(s: string): s is VmState {
  return (VM_STATES as readonly string[]).includes(s);
}

/** States in which the VM has (or should have) a live worker process. */
export function hasWorker(state: VmState): boolean {
  return state !== 'Off' && state !== 'Crashed';
}

/** States that are stable (no operation in flight). */
export function isSteady(state: VmState): boolean {
  return state === 'Off' || state === 'Running' || state === 'Paused' || state === 'Saved' || state === 'Crashed';
}
