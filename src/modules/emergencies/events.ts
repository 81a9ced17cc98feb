/**
 * The live progress of an emergency as Server-Sent Events (GET /api/v1/emergencies/:id/events).
 *
 * One poller per emergency looks for changed devices every COALESCE_MS and tells every open stream at
 * once (each about the devices of its viewer's area): 10,000 acks arriving in a second make two or three events, not 10,000. Each event's id
 * is the time (ms) of the latest change it carries; a client that reconnects with Last-Event-ID gets the
 * counts and every device changed since then, so a dropped connection loses nothing. Statuses are
 * derived from the database (EmergenciesRepository), so the stream needs no hook into the ack path.
 */
import type { Clock } from '../../lib/clock.js';
import type { Actor } from '../../lib/scope.js';
import type { EmergencyRow } from '../../db/schema/index.js';
import {
  emptyCounts,
  type DeviceChange,
  type EmergenciesRepository,
  type StateScope,
} from './emergencies.repository.js';
import { EmergenciesService } from './emergencies.service.js';
import type { DeviceCounts, DeviceStatus } from './emergencies.schemas.js';

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

type Send = (e: StreamEvent) => void;

interface Listener {
  /** The subtree the viewer may see (null: everywhere); counts and devices are theirs only. */
  path: string | null;
  send: Send;
  keepalive: () => void;
}

/**
 * One per watched emergency, whoever watches: it holds every device's status and area, so that one scan
 * of the deliveries per round serves fifty commune operators watching the same province-wide alert.
 */
interface Poller {
  emergencyId: string;
  scope: StateScope;
  cursor: number;
  devices: Map<string, { status: DeviceStatus; path: string | null }>;
  listeners: Set<Listener>;
  /** When the emergency was first seen over; the stream ends TAIL_MS later. */
  overSince: number | null;
}

const within = (path: string | null, areaPath: string | null) =>
  path === null || (areaPath !== null && areaPath.startsWith(path));

export class EmergencyEvents {
  private readonly pollers = new Map<string, Poller>();
  private timer: unknown = null;
  private keepalive: unknown = null;

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
    send: Send,
    keepalive: () => void,
  ): () => void {
    const { row, scope } = this.service.watchable(actor, id);
    let poller = this.pollers.get(id);
    if (!poller) {
      poller = {
        emergencyId: id,
        scope: { ...scope, path: null },
        cursor: 0,
        devices: new Map(),
        listeners: new Set(),
        overSince: null,
      };
      this.load(poller);
      this.pollers.set(id, poller);
    }
    const listener: Listener = { path: scope.path, send, keepalive };
    const devices = lastEventId === undefined ? undefined : this.repo.changes(scope, lastEventId);
    send({
      event: 'snapshot',
      id: Math.max(poller.cursor, lastEventId ?? 0),
      data: {
        ...this.summary(row, this.countsFor(poller, scope.path)),
        ...(devices ? { devices: devices.map(wire) } : {}),
      },
    });
    poller.listeners.add(listener);
    this.ensureTimers();
    const p = poller;
    return () => {
      p.listeners.delete(listener);
      if (p.listeners.size === 0 && this.pollers.get(id) === p) this.pollers.delete(id);
      this.stopTimersIfIdle();
    };
  }

  /** Ends every open stream (server shutdown). */
  closeAll(): void {
    for (const p of this.pollers.values()) {
      for (const l of p.listeners)
        l.send({ event: 'end', data: { emergencyId: p.emergencyId, reason: 'shutdown' } });
    }
    this.pollers.clear();
    this.stopTimersIfIdle();
  }

  /** One round: every poller looks for changes and tells its streams. Exposed for tests on a manual clock. */
  poll(): void {
    for (const p of [...this.pollers.values()]) {
      const row = this.service.current(p.emergencyId);
      if (!row) {
        this.end(p, 'deleted');
        continue;
      }
      let changed: DeviceChange[] = [];
      if (row.commandId !== p.scope.commandId) {
        // An update sends a new play: follow it, every device starting again from its new status.
        p.scope = { ...p.scope, commandId: row.commandId, sessionId: row.sessionId };
        changed = this.load(p);
      } else {
        let cursor = p.cursor;
        for (const c of this.repo.changes(p.scope, p.cursor)) {
          cursor = Math.max(cursor, c.at);
          // A change seen twice (at the cursor's own millisecond) is told once.
          if (p.devices.get(c.deviceId)?.status === c.status) continue;
          p.devices.set(c.deviceId, { status: c.status, path: c.areaPath });
          changed.push(c);
        }
        p.cursor = cursor;
      }
      const status = this.service.statusOf(row);
      const ending = status !== 'active' && p.overSince === null;
      if (changed.length > 0 || ending) {
        for (const l of p.listeners) {
          const mine = changed.filter((c) => within(l.path, c.areaPath));
          if (mine.length === 0 && !ending) continue;
          l.send({
            event: 'progress',
            id: p.cursor,
            data: { ...this.summary(row, this.countsFor(p, l.path)), devices: mine.map(wire) },
          });
        }
      }
      if (status !== 'active') {
        const now = this.clock.now().getTime();
        p.overSince ??= now;
        if (now - p.overSince >= TAIL_MS) this.end(p, status);
      }
    }
  }

  /** Reads every device's status afresh; returns them all as changes. */
  private load(p: Poller): DeviceChange[] {
    const all = this.repo.changes(p.scope, 0);
    p.devices.clear();
    p.cursor = 0;
    for (const c of all) {
      p.devices.set(c.deviceId, { status: c.status, path: c.areaPath });
      p.cursor = Math.max(p.cursor, c.at);
    }
    return all;
  }

  private countsFor(p: Poller, path: string | null): DeviceCounts {
    const counts = emptyCounts();
    for (const d of p.devices.values()) if (within(path, d.path)) counts[d.status] += 1;
    return counts;
  }

  private summary(row: EmergencyRow, counts: DeviceCounts) {
    return {
      emergencyId: row.id,
      status: this.service.statusOf(row),
      exercise: row.exercise,
      revision: row.revision,
      targetCount: Object.values(counts).reduce((a, b) => a + b, 0),
      counts,
      ...EmergenciesService.progress(counts),
    };
  }

  private end(p: Poller, reason: string): void {
    for (const l of p.listeners) {
      l.send({ event: 'end', id: p.cursor, data: { emergencyId: p.emergencyId, reason } });
    }
    this.pollers.delete(p.emergencyId);
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
      for (const p of this.pollers.values()) for (const l of p.listeners) l.keepalive();
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
