/**
 * How a playback record follows a device's log entries, and what its outcome is when the slot closes
 * (docs/schedules.md "The playback log"). Pure functions: the repository reads the record and the delivery
 * of its command, these decide, the repository writes.
 */
import type { DeliveryStatus, PlaybackOutcome } from '../../db/schema/index.js';
import type { PlaybackLogEntry } from '../../protocol/index.js';

/** A start or an amount aired within this of the slot start or of the full length still counts as whole. */
export const PLAYED_TOLERANCE_MS = 2_000;
/** A record closes this long after its slot ended: late acks and log entries of a flaky link still count. */
export const CLOSE_GRACE_MS = 60_000;
/** Marks, in an open record's reason, that the device started again after its last interruption. */
export const RESUMED = ' +resumed';

/** The fields of a record its log entries change (epoch ms; null when not known). */
export interface RecordProgress {
  scheduleId: string | null;
  dueAt: number;
  plannedMs: number | null;
  startedAt: number | null;
  finishedAt: number | null;
  airedMs: number;
  playingSince: number | null;
  joinedAtMs: number | null;
  interruptions: number;
  /**
   * While open: the device's reason of the last interruption ("preempted", "stopped"), with RESUMED appended
   * once the device started again after it; a failure's reason. Replaced by the outcome's reason at closing.
   */
  reason: string | null;
  outcome: PlaybackOutcome | null;
}

/** Where the command that carried the entry asked the device to be, and when (play params). */
export interface PlayPosition {
  offsetMs: number;
  startAt: number | null;
}

/**
 * The record after one new log entry. `position` is the params of the entry's command (the opening play,
 * or a resume of the same session): a device given `startAt` is at `offsetMs + (at − startAt)` when it
 * starts late; one without it plays from `offsetMs` on receipt.
 */
export function applyEntry(
  r: RecordProgress,
  entry: { event: PlaybackLogEntry['event']; reason?: string | null | undefined },
  at: number,
  position: PlayPosition | null,
): RecordProgress {
  const next = { ...r };
  const endSpan = () => {
    if (next.playingSince !== null) next.airedMs += Math.max(0, at - next.playingSince);
    next.playingSince = null;
  };
  switch (entry.event) {
    case 'started': {
      next.startedAt = r.startedAt ?? at;
      if (r.interruptions > 0 && r.reason !== null && !r.reason.endsWith(RESUMED))
        next.reason = r.reason + RESUMED;
      // A start without the previous span's end (the device crashed): that span's length is unknown.
      next.playingSince = at;
      if (r.joinedAtMs === null) {
        let joined: number;
        if (position?.startAt != null) joined = position.offsetMs + (at - position.startAt);
        else if (position) joined = position.offsetMs;
        else joined = r.scheduleId !== null ? at - r.dueAt : 0;
        next.joinedAtMs = Math.max(0, joined);
      }
      break;
    }
    case 'interrupted':
      endSpan();
      next.interruptions += 1;
      next.reason = entry.reason ?? 'interrupted';
      break;
    case 'finished':
      endSpan();
      next.finishedAt = at;
      break;
    case 'failed':
      endSpan();
      next.outcome = 'failed';
      next.reason = entry.reason ?? 'the device reported a failure';
      break;
  }
  return next;
}

/** The record may close before its slot ends: nothing more can happen to it. */
export function isFinal(r: RecordProgress): boolean {
  if (r.outcome === 'failed') return true;
  return (
    r.finishedAt !== null &&
    r.playingSince === null &&
    r.plannedMs !== null &&
    r.airedMs >= r.plannedMs - PLAYED_TOLERANCE_MS
  );
}

/** The delivery of the record's command to its device (command_deliveries), when there is one. */
export interface DeliveryView {
  status: DeliveryStatus;
  reason: string | null;
  sentAt: number | null;
}

export interface Closing {
  outcome: PlaybackOutcome;
  reason: string | null;
  airedMs: number;
  joinedAtMs: number | null;
}

const seconds = (ms: number) => `${Math.round(ms / 1000)} s`;

function interruptionWords(state: string | null): string {
  const resumed = state?.endsWith(RESUMED) ?? false;
  const reason = resumed ? state!.slice(0, -RESUMED.length) : state;
  if (reason === 'stopped') return resumed ? 'stopped, started again' : 'stopped';
  const by =
    reason === 'preempted' ? 'interrupted by a higher-priority broadcast' : `interrupted (${reason})`;
  return resumed ? `${by}, resumed` : by;
}

/**
 * The outcome of a record when its slot closes (or at once when final), following the contract of issue 8:
 * played / partial / failed / skipped / expired / undelivered. `receivedAt`: when the device acknowledged
 * the command, if it did (copied from the delivery while the slot was open). `endsAt`/`now` bound a span
 * still open at closing: the device never said it stopped, so it is counted to the end of the slot.
 */
export function decideOutcome(
  r: RecordProgress & { endsAt: number; receivedAt: number | null },
  delivery: DeliveryView | null,
  now: number,
): Closing {
  let aired = r.airedMs;
  if (r.playingSince !== null) aired += Math.max(0, Math.min(r.endsAt, now) - r.playingSince);
  if (r.plannedMs !== null) aired = Math.min(aired, r.plannedMs);
  let joined = r.joinedAtMs;

  if (r.outcome === 'failed')
    return { outcome: 'failed', reason: r.reason, airedMs: aired, joinedAtMs: joined };
  if (r.startedAt !== null) {
    // A device that finished on its own played to the end: what it missed, it missed at the start.
    if (r.finishedAt !== null && r.interruptions === 0 && r.plannedMs !== null) {
      joined = Math.max(joined ?? 0, r.plannedMs - aired);
    }
    const whole = r.plannedMs === null || aired >= r.plannedMs - PLAYED_TOLERANCE_MS;
    const late = (joined ?? 0) > PLAYED_TOLERANCE_MS;
    if (whole && !late && r.interruptions === 0) {
      return { outcome: 'played', reason: null, airedMs: aired, joinedAtMs: joined };
    }
    const why: string[] = [];
    if (late) why.push(`joined ${seconds(joined ?? 0)} late`);
    if (r.interruptions > 0) why.push(interruptionWords(r.reason));
    if (why.length === 0) why.push('stopped');
    const of = r.plannedMs !== null ? ` of ${seconds(r.plannedMs)}` : '';
    return {
      outcome: 'partial',
      reason: `${why.join(', ')}; ${seconds(aired)}${of} aired`,
      airedMs: aired,
      joinedAtMs: joined,
    };
  }
  const closed = (outcome: PlaybackOutcome, reason: string): Closing => ({
    outcome,
    reason,
    airedMs: 0,
    joinedAtMs: joined,
  });
  // Ended before it went on air (protocol.md §3.5: while downloading or waiting for `startAt`): the device
  // had it in time, so neither `expired` nor a fault of the device.
  if (r.interruptions > 0 && r.reason === 'preempted')
    return closed('skipped', 'a higher-priority broadcast was playing');
  if (r.interruptions > 0 && r.reason === 'stopped') return closed('skipped', 'stopped before it started');
  if (!delivery) return closed('undelivered', 'never sent');
  switch (delivery.status) {
    case 'failed':
      return closed('failed', delivery.reason ?? 'the device reported a failure');
    case 'rejected':
      if (delivery.reason === 'lower_priority')
        return closed('skipped', 'a higher-priority broadcast was playing');
      if (delivery.reason === 'expired')
        return closed('expired', 'the device received it after it had expired');
      return closed('failed', `refused by the device: ${delivery.reason ?? 'no reason given'}`);
    case 'done':
      // `done` for a play means playback started, but no log entry said so or for how long.
      return closed('partial', 'started (acknowledged) but the device logged nothing');
    case 'received':
      return closed('expired', 'received but never started before the slot closed');
    case 'pending':
    case 'offline':
    case 'expired':
      if (r.receivedAt !== null)
        return closed('expired', 'received but never started before the slot closed');
      if (delivery.sentAt === null) return closed('undelivered', 'never sent: the device was offline');
      return closed('undelivered', 'sent but never acknowledged');
  }
}
