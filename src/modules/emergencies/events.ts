/**
 * The live progress of an emergency as Server-Sent Events (GET /api/v1/emergencies/:id/events).
 *
 * One poller per emergency and scope looks for changed devices every COALESCE_MS and tells every open
 * stream at once: 10,000 acks arriving in a second make two or three events, not 10,000. Each event's id
 * is the time (ms) of the latest change it carries; a client that reconnects with Last-Event-ID gets the
 * counts and every device changed since then, so a dropped connection loses nothing. Statuses are
 * derived from the database (EmergenciesRepository), so the stream needs no hook into the ack path.
 */
import type { Clock } from '../../lib/clock.js';
import type { Actor } from '../../lib/scope.js';
import type { DeviceChange, EmergenciesRepository, StateScope } from './emergencies.repository.js';
import { EmergenciesService } from './emergencies.service.js';
import type { DeviceStatus } from './emergencies.schemas.js';

/** How often changes are looked for and sent: the coalescing window. */
export const COALESCE_MS = 500;
/** A comment line this often keeps proxies from closing a quiet stream. */
export const KEEPALIVE_MS = 15_000;
/** After the end (expiry or cancel) the stream follows the last answers this long, then ends. */
export const TAIL_MS = 30_000;

export interface StreamEvent {
  event: 'snapshot' | 'progress' | 'end';
  id?: number;
  data: unknown;
}

/** The wire form of one event. */
export function formatEvent(e: StreamEvent): string {
  return `${e.id === undefined ? '' : `id: ${e.id}\n`}event: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`;
}

type Listener = (e: StreamEvent) => void;

interface Poller {
  emergencyId: string;
  scope: StateScope;
  cursor: number;
  /** The status last told for each device: a change seen twice (same ms as the cursor) is told once. */
  told: Map<string, DeviceStatus>;
  listeners: Set<Listener>;
  /** When the emergency was first seen over; the stream ends TAIL_MS later. */
  overSince: number | null;
}

export class EmergencyEvents {
  private readonly pollers = new Map<string, Poller>();
  private timer: unknown = null;
  private keepalive: unknown = null;
  private readonly keepaliveListeners = new Set<() => void>();

  constructor(
    private readonly service: EmergenciesService,
    private readonly repo: EmergenciesRepository,
    private readonly clock: Clock,
    private readonly log: { error(obj: object, msg: string): void },
  ) {}

  /**
   * Opens a stream: checks that the actor may see the emergency (404 otherwise, thrown before anything is
   * written), sends the snapshot (and, on a resume, the devices changed since `lastEventId`), then the
   * progress as it happens. Returns the function that closes it.
   */
  open(
    actor: Actor,
    id: string,
    lastEventId: number | undefined,
    send: Listener,
    keepalive: () => void,
  ): () => void {
    const { row, scope } = this.service.watchable(actor, id);
    const key = `${id}|${scope.path ?? ''}`;
    const { counts, cursor } = this.repo.counts(scope);
    const devices = lastEventId === undefined ? [] : this.repo.changes(scope, lastEventId);
    send({
      event: 'snapshot',
      id: Math.max(cursor, lastEventId ?? 0),
      data: {
        ...this.summary(row.id, counts),
        ...(lastEventId === undefined ? {} : { devices: devices.map(wire) }),
      },
    });

    let poller = this.pollers.get(key);
    if (!poller) {
      poller = { emergencyId: id, scope, cursor, told: new Map(), listeners: new Set(), overSince: null };
      for (const c of this.repo.changes(scope, cursor)) poller.told.set(c.deviceId, c.status);
      this.pollers.set(key, poller);
    }
    poller.listeners.add(send);
    this.keepaliveListeners.add(keepalive);
    this.ensureTimers();
    const p = poller;
    return () => {
      p.listeners.delete(send);
      this.keepaliveListeners.delete(keepalive);
      if (p.listeners.size === 0 && this.pollers.get(key) === p) this.pollers.delete(key);
      this.stopTimersIfIdle();
    };
  }

  /** Ends every open stream (server shutdown). */
  closeAll(): void {
    for (const p of this.pollers.values())
      for (const l of p.listeners) l({ event: 'end', data: { reason: 'shutdown' } });
    this.pollers.clear();
    this.keepaliveListeners.clear();
    this.stopTimersIfIdle();
  }

  /** One round: every poller looks for changes and tells its streams. Exposed for tests on a manual clock. */
  poll(): void {
    for (const [key, p] of this.pollers) {
      const row = this.service.current(p.emergencyId);
      if (!row) {
        this.end(key, p, 'deleted');
        continue;
      }
      // An update sends a new play: follow it.
      if (row.commandId !== p.scope.commandId) {
        p.scope = { ...p.scope, commandId: row.commandId, sessionId: row.sessionId };
        p.told.clear();
        p.cursor = 0;
      }
      const changed: DeviceChange[] = [];
      let cursor = p.cursor;
      for (const c of this.repo.changes(p.scope, p.cursor)) {
        cursor = Math.max(cursor, c.at);
        if (p.told.get(c.deviceId) === c.status) continue;
        p.told.set(c.deviceId, c.status);
        changed.push(c);
      }
      const status = this.service.statusOf(row);
      const now = this.clock.now().getTime();
      if (changed.length > 0 || (status !== 'active' && p.overSince === null)) {
        p.cursor = cursor;
        const { counts } = this.repo.counts(p.scope);
        const event: StreamEvent = {
          event: 'progress',
          id: cursor,
          data: { ...this.summary(row.id, counts), devices: changed.map(wire) },
        };
        for (const l of p.listeners) l(event);
      }
      if (status !== 'active') {
        p.overSince ??= now;
        if (now - p.overSince >= TAIL_MS) this.end(key, p, status);
      }
    }
  }

  private summary(id: string, counts: ReturnType<EmergenciesRepository['counts']>['counts']) {
    const row = this.service.current(id);
    return {
      emergencyId: id,
      status: row ? this.service.statusOf(row) : 'expired',
      exercise: row?.exercise ?? false,
      revision: row?.revision ?? 1,
      targetCount: Object.values(counts).reduce((a, b) => a + b, 0),
      counts,
      ...EmergenciesService.progress(counts),
    };
  }

  private end(key: string, p: Poller, reason: string): void {
    for (const l of p.listeners)
      l({ event: 'end', id: p.cursor, data: { emergencyId: p.emergencyId, reason } });
    this.pollers.delete(key);
    this.stopTimersIfIdle();
  }

  private ensureTimers(): void {
    this.timer ??= this.clock.setInterval(() => {
      // On a timer: a database error must be logged, not thrown into the event loop.
      try {
        this.poll();
      } catch (err) {
        this.log.error({ err }, 'emergency progress stream: polling failed; trying again');
      }
    }, COALESCE_MS);
    this.keepalive ??= this.clock.setInterval(() => {
      for (const k of this.keepaliveListeners) k();
    }, KEEPALIVE_MS);
  }

  private stopTimersIfIdle(): void {
    if (this.pollers.size > 0) return;
    if (this.timer !== null) this.clock.clearInterval(this.timer);
    if (this.keepalive !== null) this.clock.clearInterval(this.keepalive);
    this.timer = null;
    this.keepalive = null;
  }
}

function wire(c: DeviceChange) {
  return { deviceId: c.deviceId, status: c.status, at: new Date(c.at).toISOString() };
}
