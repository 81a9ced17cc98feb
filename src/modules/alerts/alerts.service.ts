/**
 * Alerts for technicians. An alert opens when a device has been offline longer than a threshold, is in
 * fault for another reason, or has stayed degraded longer than a threshold; it resolves itself when the
 * condition clears. Evaluated periodically over the live status the health service keeps in memory.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { FastifyBaseLogger } from 'fastify';
import type { Config } from '../../config.js';
import type { AlertKind, AlertRow } from '../../db/schema/index.js';
import { notFound } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { inScope, type Actor } from '../../lib/scope.js';
import type { AreasService } from '../areas/areas.service.js';
import type { AuditService } from '../audit/audit.service.js';
import type { LiveColumns } from '../health/health.repository.js';
import type { AlertsRepository, AlertWithDevice } from './alerts.repository.js';
import type { AlertView, ListAlertsQuery } from './alerts.schemas.js';
import type { WebhookOutboxRepository } from './outbox.repository.js';
import type { AlertEventSink } from './webhook.js';

const iso = (d: Date | null) => d?.toISOString() ?? null;

function toView(row: AlertRow & Partial<Pick<AlertWithDevice, 'deviceName' | 'areaId'>>): AlertView {
  return {
    id: row.id,
    deviceId: row.deviceId,
    deviceName: row.deviceName ?? null,
    areaId: row.areaId ?? null,
    kind: row.kind,
    state: row.state,
    reasons: row.reasons,
    openedAt: row.openedAt.toISOString(),
    resolvedAt: iso(row.resolvedAt),
    acknowledgedAt: iso(row.acknowledgedAt),
    acknowledgedBy: row.acknowledgedBy,
    note: row.note,
  };
}

/** The alert conditions a device meets now, with their reasons. */
export function alertConditions(
  live: Pick<LiveColumns, 'online' | 'onlineSince' | 'health' | 'healthReasons' | 'healthSince'>,
  now: number,
  thresholds: { offlineAfterMs: number; degradedAfterMs: number },
): Map<AlertKind, string[]> {
  const found = new Map<AlertKind, string[]>();
  // A device that never connected is being installed, not lost: no offline alert until it has been seen.
  if (!live.online && live.onlineSince && now - live.onlineSince.getTime() >= thresholds.offlineAfterMs) {
    found.set('offline', ['offline']);
  }
  const faults =
    live.health === 'fault'
      ? live.healthReasons.filter((r) => r === 'speaker_fault' || r === 'playback_failures')
      : [];
  if (faults.length > 0) found.set('fault', faults);
  if (
    live.health === 'degraded' &&
    live.healthSince &&
    now - live.healthSince.getTime() >= thresholds.degradedAfterMs
  ) {
    found.set('degraded', live.healthReasons);
  }
  return found;
}

/** Changes written per transaction by evaluate(). */
const EVALUATE_SLICE = 500;

type AlertChange =
  | { change: 'open'; deviceId: string; kind: AlertKind; reasons: string[] }
  | { change: 'reasons'; id: number; reasons: string[] }
  | { change: 'resolve'; alert: AlertRow };

export class AlertsService {
  /** The evaluation running in slices, if any. */
  private evaluating: Promise<{ opened: number; resolved: number }> | null = null;
  private sliced = false;

  constructor(
    private readonly repo: AlertsRepository,
    private readonly areas: AreasService,
    private readonly audit: AuditService,
    /** Where alert events go when a webhook is set; null: none. */
    private readonly webhook: AlertEventSink | null,
    private readonly config: Config['alerts'],
    private readonly clock: Clock,
    private readonly log: FastifyBaseLogger,
    private readonly outbox: Pick<WebhookOutboxRepository, 'countByState'>,
  ) {}

  /** Webhook events in the outbox by state, read by /metrics at scrape time. */
  webhookEvents(): { pending: number; givenUp: number } {
    return this.outbox.countByState();
  }

  /**
   * Opens, updates and resolves alerts to match the devices' live status; resolves to what changed. The
   * changes are written in slices of a few hundred, each one transaction with its webhook events, yielding
   * between slices: a province-wide outage opens 10,000 alerts at once, and MQTT and HTTP must not stall
   * behind them. A few changes (the usual case) are written before this returns its promise. Overlapping
   * calls are not possible: a call made while one is running gets that run's result.
   */
  evaluate(
    devices: ReadonlyMap<string, Readonly<LiveColumns>>,
  ): Promise<{ opened: number; resolved: number }> {
    if (this.evaluating) return this.evaluating;
    const run = this.evaluateInSlices(devices);
    // Still running after its first slice: kept until it ends (it clears this itself).
    if (this.sliced) this.evaluating = run;
    return run;
  }

  private async evaluateInSlices(
    devices: ReadonlyMap<string, Readonly<LiveColumns>>,
  ): Promise<{ opened: number; resolved: number }> {
    const now = this.clock.now();
    const changes = this.changes(devices, now);
    const total = { opened: 0, resolved: 0 };
    try {
      for (let i = 0; i < changes.length; i += EVALUATE_SLICE) {
        if (i > 0) {
          this.sliced = true;
          await nextTurn();
        }
        const done = this.repo.transaction(() => this.apply(changes.slice(i, i + EVALUATE_SLICE), now));
        total.opened += done.opened;
        total.resolved += done.resolved;
        // After the commit: the sender must not look before the events are there.
        if (done.opened + done.resolved > 0) this.webhook?.wake();
      }
      return total;
    } finally {
      this.sliced = false;
      this.evaluating = null;
    }
  }

  /** What must change, from the open alerts and the devices' live status now. */
  private changes(devices: ReadonlyMap<string, Readonly<LiveColumns>>, now: Date): AlertChange[] {
    const open = new Map(this.repo.open().map((a) => [`${a.deviceId}|${a.kind}`, a]));
    const changes: AlertChange[] = [];
    for (const [deviceId, live] of devices) {
      for (const [kind, reasons] of alertConditions(live, now.getTime(), this.config)) {
        const key = `${deviceId}|${kind}`;
        const existing = open.get(key);
        open.delete(key);
        if (!existing) changes.push({ change: 'open', deviceId, kind, reasons });
        else if (existing.reasons.join() !== reasons.join())
          changes.push({ change: 'reasons', id: existing.id, reasons });
      }
    }
    // Whatever is still open no longer holds (or its device was deleted). After the openings, so that
    // the outbox order never puts a resolution before an opening of the same pass.
    for (const alert of open.values()) changes.push({ change: 'resolve', alert });
    return changes;
  }

  /** Writes some changes, with their webhook events when a webhook is set; call inside a transaction. */
  private apply(changes: AlertChange[], now: Date): { opened: number; resolved: number } {
    // Written a statement per kind of change, not per alert: 10,000 alerts cost a few dozen statements.
    const opened = this.repo.insertMany(
      changes.flatMap((c) =>
        c.change === 'open'
          ? [{ deviceId: c.deviceId, kind: c.kind, reasons: c.reasons, openedAt: now }]
          : [],
      ),
    );
    for (const c of changes) if (c.change === 'reasons') this.repo.setReasons(c.id, c.reasons);
    const resolved = this.repo.resolveMany(
      changes.flatMap((c) => (c.change === 'resolve' ? [c.alert.id] : [])),
      now,
    );
    for (const alert of opened) {
      const { id: alertId, deviceId, kind, reasons } = alert;
      this.log.warn({ alertId, deviceId, kind, reasons }, 'alert opened');
    }
    for (const { id: alertId, deviceId, kind } of resolved) {
      this.log.info({ alertId, deviceId, kind }, 'alert resolved');
    }
    if (this.webhook) {
      const at = now.toISOString();
      const views = this.repo.findManyById([...opened, ...resolved].map((a) => a.id));
      // Openings first: a pass never resolves an alert it opened, so order within it is free.
      this.webhook.enqueue(
        [
          ...opened.map((a) => ({ event: 'alert.opened' as const, at, alert: this.notified(a, views) })),
          ...resolved.map((a) => ({ event: 'alert.resolved' as const, at, alert: this.notified(a, views) })),
        ],
        now,
      );
    }
    return { opened: opened.length, resolved: resolved.length };
  }

  /**
   * An alert as a webhook carries it: the API's view plus its area's name, so that whoever reads it in a
   * chat knows which loudspeaker and where (the bare row only has the device id; a deleted device has
   * neither name).
   */
  private notified(alert: AlertRow, views: Map<number, AlertWithDevice>): Record<string, unknown> {
    const found = views.get(alert.id);
    return { ...toView(found ?? alert), areaName: found?.areaName ?? null };
  }

  list(actor: Actor, query: ListAlertsQuery) {
    const pathPrefix = query.areaId ? this.areas.getVisible(actor, query.areaId).path : actor.areaPath;
    const { rows, total } = this.repo.list({
      pathPrefix,
      state: query.state,
      deviceId: query.deviceId,
      limit: query.limit,
      offset: query.offset,
    });
    return { items: rows.map(toView), total, limit: query.limit, offset: query.offset };
  }

  acknowledge(actor: Actor, id: number, note: string | undefined): AlertView {
    const alert = this.repo.findById(id);
    // Alerts of deleted devices have no area: only an admin sees them.
    if (!alert || (actor.areaPath !== null && (alert.areaPath === null || !inScope(actor, alert.areaPath)))) {
      throw notFound('Alert');
    }
    this.repo.acknowledge(id, actor.username, this.clock.now(), note ?? null);
    this.audit.record(
      actor,
      'alert.acknowledged',
      { type: 'alert', id: String(id) },
      { note: note ?? null, deviceId: alert.deviceId },
    );
    return toView(this.repo.findById(id)!);
  }
}
