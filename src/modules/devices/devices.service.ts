import type { DeviceRow } from '../../db/schema/index.js';
import { AppError, forbidden, notFound } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { hashSecret, secretMatches } from '../../lib/crypto.js';
import { newId, newSecret } from '../../lib/ids.js';
import { sortKey } from '../../lib/text.js';
import { inScope, type Actor } from '../../lib/scope.js';
import type { DeviceState } from '../../protocol/index.js';
import type { AreasService } from '../areas/areas.service.js';
import type { AuditService } from '../audit/audit.service.js';
import type { KickCause } from '../../plugins/broker.js';
import type { DevicesRepository, DeviceWithPath } from './devices.repository.js';
import type {
  CreateDeviceInput,
  Credentials,
  DeviceView,
  ListDevicesQuery,
  UpdateDeviceInput,
} from './devices.schemas.js';

/** What the devices service needs from the broker. */
export interface DeviceConnections {
  disconnect(deviceId: string, cause: KickCause): void;
}

/** Told when a device leaves the registry, so that live status and alerts forget it. */
export type DeviceRemoved = (deviceId: string) => void;

export function toDeviceView(row: DeviceRow): DeviceView {
  return {
    id: row.id,
    name: row.name,
    kind: row.kind,
    areaId: row.areaId,
    lat: row.lat,
    lon: row.lon,
    drillParticipant: row.drillParticipant,
    online: row.online,
    onlineSince: row.onlineSince?.toISOString() ?? null,
    lastSeenAt: row.lastSeenAt?.toISOString() ?? null,
    health: row.health,
    healthReasons: row.healthReasons,
    state: row.stateAt
      ? {
          firmware: row.firmware,
          volume: row.volume,
          playing: (row.playing ?? null) as DeviceState['playing'],
          reportedAt: row.stateAt.toISOString(),
        }
      : null,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

const credentialsFor = (id: string, secret: string): Credentials => ({
  clientId: id,
  username: id,
  password: secret,
});

export class DevicesService {
  constructor(
    private readonly repo: DevicesRepository,
    private readonly areas: AreasService,
    private readonly audit: AuditService,
    private readonly connections: DeviceConnections,
    private readonly removed: DeviceRemoved,
    private readonly clock: Clock,
  ) {}

  create(actor: Actor, input: CreateDeviceInput): DeviceView & { credentials: Credentials } {
    this.areas.requireActionable(actor, input.areaId, 'areaId');
    const id = newId('dev');
    const secret = newSecret();
    const now = this.clock.now();
    this.repo.insert({
      id,
      name: input.name,
      sortName: sortKey(input.name),
      kind: input.kind,
      areaId: input.areaId,
      secretHash: hashSecret(secret),
      lat: input.lat ?? null,
      lon: input.lon ?? null,
      drillParticipant: input.drillParticipant,
      createdAt: now,
      updatedAt: now,
    });
    this.audit.record(
      actor,
      'device.create',
      { type: 'device', id },
      {
        name: input.name,
        kind: input.kind,
        areaId: input.areaId,
        lat: input.lat ?? null,
        lon: input.lon ?? null,
        drillParticipant: input.drillParticipant,
      },
    );
    return { ...toDeviceView(this.repo.findById(id)!), credentials: credentialsFor(id, secret) };
  }

  list(actor: Actor, query: ListDevicesQuery) {
    const pathPrefix = query.areaId ? this.areas.getVisible(actor, query.areaId).path : actor.areaPath;
    const { rows, total } = this.repo.list({
      pathPrefix,
      kind: query.kind,
      online: query.online,
      health: query.health,
      firmware: query.firmware,
      drillParticipant: query.drillParticipant,
      silentSince: query.silentForS
        ? new Date(this.clock.now().getTime() - query.silentForS * 1000)
        : undefined,
      sort: query.sort,
      limit: query.limit,
      offset: query.offset,
    });
    return { items: rows.map(toDeviceView), total, limit: query.limit, offset: query.offset };
  }

  /** The device if the actor may see it; 404 otherwise, so nothing outside the scope is revealed. */
  getVisible(actor: Actor, id: string): DeviceWithPath {
    const row = this.repo.findById(id);
    if (!row || !inScope(actor, row.areaPath)) throw notFound('Device');
    return row;
  }

  get(actor: Actor, id: string): DeviceView {
    return toDeviceView(this.getVisible(actor, id));
  }

  update(actor: Actor, id: string, input: UpdateDeviceInput): DeviceView {
    this.getVisible(actor, id);
    if (input.areaId !== undefined) this.areas.requireActionable(actor, input.areaId, 'areaId');
    this.repo.update(id, {
      ...input,
      ...(input.name !== undefined ? { sortName: sortKey(input.name) } : {}),
      updatedAt: this.clock.now(),
    });
    this.audit.record(actor, 'device.update', { type: 'device', id }, { ...input });
    return toDeviceView(this.repo.findById(id)!);
  }

  delete(actor: Actor, id: string): void {
    const device = this.getVisible(actor, id);
    this.repo.delete(id);
    this.connections.disconnect(id, 'deleted');
    this.removed(id);
    this.audit.record(actor, 'device.delete', { type: 'device', id }, { name: device.name });
  }

  /** Issues a new secret; the old one stops working at once and the current session is closed. */
  rotateCredentials(actor: Actor, id: string): Credentials {
    this.getVisible(actor, id);
    const secret = newSecret();
    this.repo.update(id, { secretHash: hashSecret(secret), updatedAt: this.clock.now() });
    this.connections.disconnect(id, 'credentials_rotated');
    this.audit.record(actor, 'device.credentials_rotated', { type: 'device', id });
    return credentialsFor(id, secret);
  }

  /**
   * Devices an actor names in order to act on them (commands): each must exist (404) and lie in the actor's
   * area (403). Errors name the field by the index the caller used; repeated ids count once.
   */
  requireActionableMany(actor: Actor, ids: readonly string[], field: string): DeviceWithPath[] {
    const found = new Map(this.repo.findManyWithPath([...new Set(ids)]).map((d) => [d.id, d]));
    const out = new Map<string, DeviceWithPath>();
    ids.forEach((id, i) => {
      if (out.has(id)) return;
      const device = found.get(id);
      if (!device) throw new AppError('not_found', `${field}.${i}: device ${id} not found`);
      if (!inScope(actor, device.areaPath))
        throw forbidden(`${field}.${i}: device ${id} is outside your area`);
      out.set(id, device);
    });
    return [...out.values()];
  }

  /** The devices with these ids that still exist, with their area paths; no scope check (server work). */
  withPaths(ids: readonly string[]): DeviceWithPath[] {
    return ids.length === 0 ? [] : this.repo.findManyWithPath([...new Set(ids)]);
  }

  /** Ids of every device in the subtrees with these paths; the caller has checked the areas' scope. */
  idsInSubtrees(paths: readonly string[]): string[] {
    // A subtree inside another adds nothing, so only the outermost ones are queried. Sorted, a path comes
    // right after the paths it extends, so comparing with the last kept one is enough.
    const outermost: string[] = [];
    for (const path of [...new Set(paths)].sort()) {
      const last = outermost.at(-1);
      if (last === undefined || !path.startsWith(last)) outermost.push(path);
    }
    return this.repo.idsInSubtrees(outermost);
  }

  /**
   * Recomputes stored sort keys that differ from what sortKey() gives today, so that a change of the
   * ordering rule needs no migration (SQL cannot compute the keys). One read of the names when none differ.
   */
  refreshSortNames(): number {
    const stale = this.repo
      .names()
      .map((d) => ({ id: d.id, sortName: sortKey(d.name), old: d.sortName }))
      .filter((d) => d.sortName !== d.old);
    if (stale.length > 0) this.repo.setSortNames(stale);
    return stale.length;
  }

  /** MQTT CONNECT check: the device exists and the secret matches its stored hash. */
  authenticate(deviceId: string, secret: string): boolean {
    const stored = this.repo.secretHash(deviceId);
    return stored !== undefined && secretMatches(secret, stored);
  }
}
