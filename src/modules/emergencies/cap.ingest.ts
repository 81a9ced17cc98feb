/**
 * A CAP 1.2 alert in, emergencies out (docs/emergency.md, "CAP mapping"). parseCap (cap.ts) has already
 * refused what is not a well-formed, safe CAP document; this service decides what the alert means here:
 *
 *   status  Actual → a real emergency; Exercise → a drill; Test, System, Draft → stored, never played.
 *   msgType Alert → send; Update / Cancel → the emergencies its `references` started; Ack, Error → stored.
 *
 * An Update changes the title, the spoken text and (only later) the expiry of the emergency; its areas are
 * not matched again (the emergency keeps its loudspeakers).
 *
 * Every alert accepted is stored once per principal and (sender, identifier) with the answer given
 * (cap_messages), so a warning system that posts the same alert again — its retry after a lost answer, a
 * second feed — gets the first answer back and nothing plays twice. The principal is who submitted it: a
 * warning source (its key) or a user. `<sender>` is only what the document claims, so it cannot be the
 * identity: keyed on it alone, any key (a commune's, misconfigured or stolen) could post first under the
 * national centre's name with a predictable identifier and make the real alert, from another key, a
 * "replay" that never plays. The same alert from another principal is therefore its own submission, played
 * within that principal's own area (one national alert forwarded by two provincial keys plays in both
 * provinces). For the same reason an Update or Cancel acts only on the alerts its own principal sent; an
 * admin's may name anyone's.
 */
import type { FastifyBaseLogger } from 'fastify';
import type { CapMessageRow } from '../../db/schema/index.js';
import { AppError, type ErrorCode } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import type { AreasService } from '../areas/areas.service.js';
import type { AuditService } from '../audit/audit.service.js';
import { matchDevices, VN_ADMIN } from './cap.geometry.js';
import {
  DuplicateCapMessage,
  type BoundingBox,
  type CapRepository,
  type PositionedDeviceRow,
} from './cap.repository.js';
import type { CapAnswer, Unmatched } from './cap.schemas.js';
import {
  hazard,
  parseCap,
  pickInfo,
  riskLevel,
  spokenText,
  type CapAlert,
  type CapArea,
  type CapCircle,
  type CapInfo,
  type LatLon,
} from './cap.js';
import type { EmergenciesService, Sender } from './emergencies.service.js';
import { MAX_EXPIRES_IN_S, MAX_TEXT_LENGTH } from './emergencies.schemas.js';

/** What the ingest needs of the emergencies service. */
export type EmergencyPort = Pick<EmergenciesService, 'send' | 'update' | 'cancel' | 'current'>;

/** Statuses that play (spec §3.2.1: Test, System and Draft "SHOULD NOT" be acted on by the public). */
const PLAYED_STATUSES = new Set(['Actual', 'Exercise']);
const TITLE_MAX = 200;

export interface CapResult {
  statusCode: 200 | 201;
  answer: CapAnswer;
}

/** Who submitted a document: what idempotency and references are keyed on (see the top of this file). */
interface Principal {
  id: string;
  /** An admin user: may reference every principal's alerts. */
  admin: boolean;
}

function principalOf(sender: Sender): Principal {
  return sender.kind === 'user'
    ? { id: sender.actor.id, admin: sender.actor.role === 'admin' }
    : { id: sender.source.id, admin: false };
}

/** A document being applied. `seq` orders them: one waits only for those that began before it. */
interface Applying {
  principal: string;
  sender: string;
  identifier: string;
  seq: number;
  done: Promise<unknown>;
}

const sourceOf = (sender: Sender) => (sender.kind === 'source' ? sender.source : null);
const userOf = (sender: Sender) => (sender.kind === 'user' ? sender.actor : null);

/** The subtree the sender acts in (null: everywhere, an admin) and the area at its top. */
function scopeOf(sender: Sender): { path: string | null; areaId: string | null } {
  return sender.kind === 'user'
    ? { path: sender.actor.areaPath, areaId: sender.actor.areaId }
    : { path: sender.source.areaPath, areaId: sender.source.areaId };
}

const polygonText = (ring: LatLon[]) => ring.map(([lat, lon]) => `${lat},${lon}`).join(' ');
const circleText = (c: CapCircle) => `${c.lat},${c.lon} ${c.radiusKm}`;

/** One degree of latitude is at least 110.57 km; a little margin keeps rounding from losing an edge device. */
const KM_PER_DEG_LAT = 110.5;
const KM_PER_DEG_LON_EQUATOR = 111.3;

/**
 * The box holding every polygon and circle, to read only nearby devices from the database. Longitude is
 * left open near the poles and across the antimeridian, where a box in degrees stops being simple.
 */
function boundingBox(areas: readonly CapArea[]): BoundingBox | null {
  let minLat = Infinity;
  let maxLat = -Infinity;
  let minLon: number | null = Infinity;
  let maxLon: number | null = -Infinity;
  const add = (lat0: number, lat1: number, lon0: number | null, lon1: number | null) => {
    minLat = Math.min(minLat, lat0);
    maxLat = Math.max(maxLat, lat1);
    if (lon0 === null || lon1 === null || minLon === null || maxLon === null) {
      minLon = maxLon = null;
    } else {
      minLon = Math.min(minLon, lon0);
      maxLon = Math.max(maxLon, lon1);
    }
  };
  for (const area of areas) {
    // A loop, not Math.min(...points): a 1 MB polygon has more points than a call may take arguments.
    for (const ring of area.polygons) for (const [lat, lon] of ring) add(lat, lat, lon, lon);
    for (const c of area.circles) {
      const dLat = c.radiusKm / KM_PER_DEG_LAT + 1e-6;
      const lat0 = c.lat - dLat;
      const lat1 = c.lat + dLat;
      const cos = Math.cos((Math.max(Math.abs(lat0), Math.abs(lat1)) * Math.PI) / 180);
      const dLon = cos > 0.1 ? c.radiusKm / (KM_PER_DEG_LON_EQUATOR * cos) + 1e-6 : Infinity;
      const wraps = c.lon - dLon < -180 || c.lon + dLon > 180;
      add(lat0, lat1, wraps ? null : c.lon - dLon, wraps ? null : c.lon + dLon);
    }
  }
  if (minLat === Infinity) return null;
  return { minLat, maxLat, minLon, maxLon };
}

export class CapIngestService {
  /**
   * Documents being applied, by principal and (sender, identifier): a second copy from the same principal
   * waits for the first, then is a replay; an Update or Cancel waits for the alerts it references (see
   * awaitReferenced).
   */
  private readonly inFlight = new Map<string, Applying>();
  private seq = 0;

  constructor(
    private readonly repo: CapRepository,
    private readonly emergencies: EmergencyPort,
    private readonly areas: Pick<AreasService, 'byCode'>,
    private readonly audit: AuditService,
    private readonly clock: Clock,
    private readonly log: FastifyBaseLogger,
  ) {}

  /**
   * Applies one CAP document for a sender already authenticated and allowed (role or key). Every attempt is
   * audited, refused ones included, with who sent it and which alert it was.
   */
  async ingest(sender: Sender, document: string): Promise<CapResult> {
    let alert: CapAlert | undefined;
    try {
      alert = parseCap(document);
      const parsed = alert;
      const principal = principalOf(sender);
      const result = await this.once(principal, parsed, (seq) =>
        this.apply(sender, principal, parsed, document, seq),
      );
      this.record(sender, alert, {
        outcome: result.answer.outcome,
        replayed: result.answer.replayed,
        emergencyIds: result.answer.emergencyIds,
        unmatched: result.answer.unmatched.length,
      });
      return result;
    } catch (err) {
      const code: ErrorCode = err instanceof AppError ? err.code : 'internal';
      this.record(sender, alert, { outcome: 'refused', code });
      throw err;
    }
  }

  private record(sender: Sender, alert: CapAlert | undefined, details: Record<string, unknown>) {
    const source = sourceOf(sender);
    this.audit.record(
      userOf(sender),
      'cap.ingest',
      { type: 'cap_alert', id: alert ? `${alert.sender},${alert.identifier}` : null },
      {
        ...(alert ? { status: alert.status, msgType: alert.msgType } : {}),
        ...(source ? { sourceId: source.id, sourceName: source.name } : {}),
        ...details,
      },
    );
  }

  private async once<T>(
    principal: Principal,
    alert: CapAlert,
    work: (seq: number) => Promise<T>,
  ): Promise<T> {
    const key = `${principal.id}\u0000${alert.sender}\u0000${alert.identifier}`;
    for (let pending = this.inFlight.get(key); pending; pending = this.inFlight.get(key)) {
      await pending.done.catch(() => undefined);
    }
    const seq = ++this.seq;
    const running = work(seq);
    this.inFlight.set(key, {
      principal: principal.id,
      sender: alert.sender,
      identifier: alert.identifier,
      seq,
      done: running,
    });
    try {
      return await running;
    } finally {
      this.inFlight.delete(key);
    }
  }

  /**
   * Waits for the alerts an Update or Cancel references that are still being applied (rendering takes about
   * a second): a warning system that sends a Cancel right after its Alert means that alert, and must not be
   * told 404 because the alert was not stored yet. Only documents that began earlier are waited for, so two
   * that reference each other cannot wait for each other; only those of the same principal (any, for an
   * admin), as only those could be referenced.
   */
  private async awaitReferenced(principal: Principal, alert: CapAlert, seq: number): Promise<void> {
    const waits: Promise<unknown>[] = [];
    for (const entry of this.inFlight.values()) {
      if (entry.seq >= seq || (!principal.admin && entry.principal !== principal.id)) continue;
      if (alert.references.some((r) => r.sender === entry.sender && r.identifier === entry.identifier)) {
        waits.push(entry.done.catch(() => undefined));
      }
    }
    await Promise.all(waits);
  }

  private async apply(
    sender: Sender,
    principal: Principal,
    alert: CapAlert,
    document: string,
    seq: number,
  ): Promise<CapResult> {
    const known = this.repo.findMessage(principal.id, alert.sender, alert.identifier);
    if (known) return this.replay(known, alert);

    const base = {
      status: alert.status,
      msgType: alert.msgType,
      sender: alert.sender,
      identifier: alert.identifier,
      replayed: false,
    };
    let result: CapResult;
    if (!PLAYED_STATUSES.has(alert.status) || alert.msgType === 'Ack' || alert.msgType === 'Error') {
      const reason = PLAYED_STATUSES.has(alert.status)
        ? `msgType ${alert.msgType}: kept, nothing to play`
        : `status ${alert.status}: kept, never played`;
      result = {
        statusCode: 200,
        answer: {
          ...base,
          emergencyId: null,
          emergencyIds: [],
          outcome: 'not_played',
          unmatched: [],
          reason,
          emergency: null,
        },
      };
    } else if (alert.msgType === 'Alert') {
      const { emergency, unmatched } = await this.send(sender, alert);
      result = {
        statusCode: 201,
        answer: {
          ...base,
          emergencyId: emergency.id,
          emergencyIds: [emergency.id],
          outcome: 'sent',
          unmatched,
          emergency,
        },
      };
    } else {
      await this.awaitReferenced(principal, alert, seq);
      const ids = this.referencedEmergencies(principal, alert);
      const views = [];
      if (alert.msgType === 'Update') {
        const { title, text, expiresAt } = this.content(alert);
        for (const id of ids) {
          // An Update usually repeats the alert's <expires>: only a later one extends the emergency.
          const current = this.emergencies.current(id)?.expiresAt;
          const later = expiresAt && current && expiresAt.getTime() > current.getTime() ? { expiresAt } : {};
          views.push(await this.emergencies.update(sender, id, { title, text, ...later }));
        }
      } else {
        const reason = `CAP Cancel ${alert.sender},${alert.identifier}`;
        for (const id of ids) views.push(this.emergencies.cancel(sender, id, reason));
      }
      result = {
        statusCode: 200,
        answer: {
          ...base,
          emergencyId: ids[0]!,
          emergencyIds: ids,
          outcome: alert.msgType === 'Update' ? 'updated' : 'cancelled',
          unmatched: [],
          emergency: views[0] ?? null,
        },
      };
    }
    this.store(sender, principal, alert, document, result.answer);
    return result;
  }

  /**
   * The first answer again, to the principal that got it (found by principal: never another's). Only for
   * the same message: CAP makes (sender, identifier) name one message, so the same pair on another
   * message (another `sent`, msgType or status: a Cancel sent under its Update's identifier, say) is a
   * sender's mistake, refused so that it is not taken for done.
   */
  private replay(known: CapMessageRow, alert: CapAlert): CapResult {
    if (
      known.sent.getTime() !== alert.sent.getTime() ||
      known.msgType !== alert.msgType ||
      known.status !== alert.status
    ) {
      throw new AppError(
        'conflict',
        `identifier ${alert.identifier} from ${alert.sender} was already used for another message ` +
          `(${known.msgType}, ${known.status}, sent ${known.sent.toISOString()}); nothing was done. ` +
          'A new message needs a new identifier.',
      );
    }
    return { statusCode: 200, answer: { ...(known.answer as CapAnswer), replayed: true } };
  }

  private store(sender: Sender, principal: Principal, alert: CapAlert, document: string, answer: CapAnswer) {
    try {
      this.repo.insertMessage({
        principal: principal.id,
        sender: alert.sender,
        identifier: alert.identifier,
        sent: alert.sent,
        status: alert.status,
        msgType: alert.msgType,
        emergencyId: answer.emergencyId,
        outcome: answer.outcome,
        answer,
        userId: userOf(sender)?.id ?? null,
        sourceId: sourceOf(sender)?.id ?? null,
        receivedAt: this.clock.now(),
        document,
      });
    } catch (err) {
      // Only another process sharing the database can get here first (in this one, `once` serialises the
      // copies); what was sent is sent, so the answer stands and the race is logged.
      if (!(err instanceof DuplicateCapMessage)) throw err;
      this.log.warn({ sender: alert.sender, identifier: alert.identifier }, 'CAP alert stored twice at once');
    }
  }

  /** The info spoken, with its index for error fields: an Alert or Update that plays needs one. */
  private infoToPlay(alert: CapAlert): { info: CapInfo; field: string } {
    const info = pickInfo(alert);
    if (!info) {
      throw new AppError(
        'validation_failed',
        `body.alert.info: an ${alert.msgType} to be played needs an <info>`,
        {
          errors: [{ field: 'body.alert.info', message: `an ${alert.msgType} to be played needs an <info>` }],
        },
      );
    }
    return { info, field: `body.alert.info.${alert.infos.indexOf(info)}` };
  }

  /** Title, spoken text and expiry of an info, refused when it cannot be played as it is. */
  private content(alert: CapAlert) {
    const { info, field } = this.infoToPlay(alert);
    const heading = (info.headline ?? info.event).trim();
    const title = heading.length > TITLE_MAX ? `${heading.slice(0, TITLE_MAX - 1)}…` : heading;
    const text = spokenText(info) || `${info.event}.`;
    if (text.length > MAX_TEXT_LENGTH) {
      const message = `headline, description and instruction make ${text.length} characters to speak; at most ${MAX_TEXT_LENGTH}`;
      throw new AppError('validation_failed', `${field}.description: ${message}`, {
        errors: [{ field: `${field}.description`, message }],
      });
    }
    const now = this.clock.now();
    let expiresAt: Date | undefined;
    if (info.expires) {
      // An alert that is over must not sound: answered 400 (not stored) so the sender sees it at once.
      if (info.expires.getTime() <= now.getTime()) {
        const message = `the alert expired at ${info.expires.toISOString()}; nothing was played`;
        throw new AppError('validation_failed', `${field}.expires: ${message}`, {
          errors: [{ field: `${field}.expires`, message }],
        });
      }
      // Delivery is tracked for at most a day (the emergencies' limit): a device that comes back later than
      // that no longer plays a warning that old, even if the alert itself stays in force.
      expiresAt = new Date(Math.min(info.expires.getTime(), now.getTime() + MAX_EXPIRES_IN_S * 1000));
    }
    return { info, title, text, expiresAt };
  }

  private async send(sender: Sender, alert: CapAlert) {
    const { info, title, text, expiresAt } = this.content(alert);
    const exercise = alert.status === 'Exercise';
    const targets = this.targets(sender, info.areas, exercise);
    try {
      const emergency = await this.emergencies.send(sender, {
        title,
        text,
        areaIds: targets.areaIds,
        deviceIds: targets.deviceIds,
        hazard: hazard(info),
        riskLevel: riskLevel(info),
        exercise,
        ...(expiresAt ? { expiresAt } : {}),
      });
      return { emergency, unmatched: targets.unmatched };
    } catch (err) {
      // The areas matched but hold no loudspeaker (or no drill participant): say what matched nothing.
      if (err instanceof AppError && err.code === 'no_target_devices') {
        throw new AppError('no_target_devices', err.detail, {
          members: { ...err.extra.members, unmatched: targets.unmatched },
        });
      }
      throw err;
    }
  }

  /**
   * Areas (by VN-ADMIN geocode) and devices (inside a polygon or circle) the alert reaches within the
   * sender's area, and what reached nothing. A geocode naming an area that holds the sender's whole area (a
   * national alert for a province, sent with a key of one of its communes) targets the sender's area: the
   * part of the alert it may act on. Throws 403 when everything matched lies outside the sender's area, and
   * no_target_devices (422) when nothing matched at all.
   */
  private targets(sender: Sender, capAreas: readonly CapArea[], exercise: boolean) {
    const scope = scopeOf(sender);
    const within = (path: string) => scope.path === null || path.startsWith(scope.path);
    const unmatched: Unmatched[] = [];
    const reported = new Set<string>();
    const report = (entry: Unmatched) => {
      const key = `${entry.kind}\u0000${entry.value}`;
      if (reported.has(key)) return;
      reported.add(key);
      unmatched.push(entry);
    };
    const areaIds = new Set<string>();
    const deviceIds = new Set<string>();
    let outside = false;

    let candidates: PositionedDeviceRow[] | undefined;
    const nearby = () => {
      const box = boundingBox(capAreas);
      candidates ??= box ? this.repo.positionedDevices(box, exercise) : [];
      return candidates;
    };

    if (capAreas.length === 0) {
      throw new AppError('no_target_devices', 'The alert names no <area>: there is nothing to target', {
        members: { unmatched },
      });
    }
    for (const area of capAreas) {
      const { areaDesc } = area;
      if (area.geocodes.length === 0 && area.polygons.length === 0 && area.circles.length === 0) {
        report({ kind: 'area', value: areaDesc, areaDesc, reason: 'no_geometry' });
      }
      for (const { valueName, value: raw } of area.geocodes) {
        const value = raw.trim();
        if (valueName !== VN_ADMIN) {
          report({
            kind: 'geocode',
            value: `${valueName}=${value}`,
            areaDesc,
            reason: 'unsupported_geocode',
          });
          continue;
        }
        const row = this.areas.byCode(value);
        if (!row) {
          report({ kind: 'geocode', value, areaDesc, reason: 'unknown_code' });
        } else if (within(row.path)) {
          areaIds.add(row.id);
          if (this.repo.countDevicesIn(row.path, exercise) === 0) {
            report({ kind: 'geocode', value, areaDesc, reason: 'no_devices' });
          }
        } else if (scope.path !== null && scope.areaId !== null && scope.path.startsWith(row.path)) {
          areaIds.add(scope.areaId);
          if (this.repo.countDevicesIn(scope.path, exercise) === 0) {
            report({ kind: 'geocode', value, areaDesc, reason: 'no_devices' });
          }
        } else {
          outside = true;
          report({ kind: 'geocode', value, areaDesc, reason: 'outside_scope' });
        }
      }
      const shapes = [
        ...area.polygons.map((ring) => ({
          kind: 'polygon' as const,
          value: polygonText(ring),
          area: { areaDesc, polygons: [ring], circles: [], geocodes: [] },
        })),
        ...area.circles.map((circle) => ({
          kind: 'circle' as const,
          value: circleText(circle),
          area: { areaDesc, polygons: [], circles: [circle], geocodes: [] },
        })),
      ];
      for (const shape of shapes) {
        const devices = nearby();
        const hits = matchDevices([shape.area], devices);
        let inScope = 0;
        for (const device of devices) {
          if (!hits.has(device.id) || !within(device.areaPath)) continue;
          deviceIds.add(device.id);
          inScope++;
        }
        if (inScope === 0) {
          if (hits.size > 0) outside = true;
          report({
            kind: shape.kind,
            value: shape.value,
            areaDesc,
            reason: hits.size > 0 ? 'outside_scope' : 'no_devices',
          });
        }
      }
    }

    if (areaIds.size === 0 && deviceIds.size === 0) {
      if (outside) {
        throw new AppError(
          'forbidden',
          "Every target of the alert lies outside your area (or the key's area)",
          {
            members: { unmatched },
          },
        );
      }
      throw new AppError('no_target_devices', 'No loudspeaker matches the areas of the alert', {
        members: { unmatched },
      });
    }
    return { areaIds: [...areaIds], deviceIds: [...deviceIds], unmatched };
  }

  /**
   * The emergencies an Update or Cancel acts on, from its references (spec §3.2.1: "sender,identifier,sent"
   * of earlier messages). A chain usually names every earlier message; those never received here (refused,
   * or sent to another system), never played (Test), or of the other mode (a drill may never change a real
   * alert, nor the reverse) are passed over as long as one names an emergency. None → 404 naming them all.
   *
   * A reference is looked up among the principal's own messages only ("never received" covers another's:
   * a key cannot stop or rewrite what another key sent); an admin's among everyone's, so an admin's Cancel
   * of an alert that several keys forwarded stops every emergency it started.
   */
  private referencedEmergencies(principal: Principal, alert: CapAlert): string[] {
    const ids: string[] = [];
    const skipped = new Set<string>();
    for (const ref of alert.references) {
      const name = `${ref.sender},${ref.identifier}`;
      const rows = this.repo.findReferenced(
        principal.admin ? null : principal.id,
        ref.sender,
        ref.identifier,
      );
      if (rows.length === 0) skipped.add(`${name} (never received${principal.admin ? '' : ' from you'})`);
      for (const row of rows) {
        if (row.emergencyId === null) skipped.add(`${name} (not played)`);
        else if (row.status !== alert.status)
          skipped.add(`${name} (status ${row.status}, not ${alert.status})`);
        else if (!ids.includes(row.emergencyId)) ids.push(row.emergencyId);
      }
    }
    if (ids.length === 0) {
      throw new AppError(
        'not_found',
        `body.alert.references: no referenced alert started an emergency here: ${[...skipped].join('; ')}; nothing was played`,
      );
    }
    return ids;
  }
}
