/**
 * Alerts for technicians. An alert opens when a device has been offline longer than a threshold, is in
 * fault for another reason, or has stayed degraded longer than a threshold; it resolves itself when the
 * condition clears. Evaluated periodically over the live status the health service keeps in memory.
 */
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
import type { AlertNotifier } from './webhook.js';

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

export class AlertsService {
  constructor(
    private readonly repo: AlertsRepository,
    private readonly areas: AreasService,
    private readonly audit: AuditService,
    private readonly notifier: AlertNotifier,
    private readonly config: Config['alerts'],
    private readonly clock: Clock,
    private readonly log: FastifyBaseLogger,
  ) {}

  /** Opens, updates and resolves alerts to match the devices' live status; returns what changed. */
  evaluate(devices: ReadonlyMap<string, Readonly<LiveColumns>>): { opened: number; resolved: number } {
    const now = this.clock.now();
    const open = new Map(this.repo.open().map((a) => [`${a.deviceId}|${a.kind}`, a]));
    let opened = 0;
    let resolved = 0;
    for (const [deviceId, live] of devices) {
      for (const [kind, reasons] of alertConditions(live, now.getTime(), this.config)) {
        const key = `${deviceId}|${kind}`;
        const existing = open.get(key);
        open.delete(key);
        if (!existing) {
          const alert = this.repo.insert({ deviceId, kind, reasons, openedAt: now });
          this.log.warn({ alertId: alert.id, deviceId, kind, reasons }, 'alert opened');
          this.notifier.notify({
            event: 'alert.opened',
            alert: this.notified(alert),
            sentAt: now.toISOString(),
          });
          opened += 1;
        } else if (existing.reasons.join() !== reasons.join()) {
          this.repo.setReasons(existing.id, reasons);
        }
      }
    }
    // Whatever is still open no longer holds (or its device was deleted).
    for (const alert of open.values()) {
      const done = this.repo.resolve(alert.id, now);
      if (!done) continue;
      this.log.info({ alertId: alert.id, deviceId: alert.deviceId, kind: alert.kind }, 'alert resolved');
      this.notifier.notify({
        event: 'alert.resolved',
        alert: this.notified(done),
        sentAt: now.toISOString(),
      });
      resolved += 1;
    }
    return { opened, resolved };
  }

  /**
   * An alert as a webhook carries it: with its device's name and area, so that whoever reads it in a chat
   * knows which loudspeaker (the bare row only has the id; a deleted device has neither).
   */
  private notified(alert: AlertRow): AlertView {
    return toView(this.repo.findById(alert.id) ?? alert);
  }

  /** On shutdown: give queued webhook deliveries a moment, then stop. */
  drain(timeoutMs: number): Promise<void> {
    return this.notifier.drain(timeoutMs);
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
