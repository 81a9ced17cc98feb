import type { FastifyBaseLogger } from 'fastify';
import type { DeviceRow } from '../../db/schema/index.js';
import { BatchWriter } from '../../db/batch-writer.js';
import { notFound } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { hashSecret, secretMatches } from '../../lib/crypto.js';
import { newId, newSecret } from '../../lib/ids.js';
import { sortKey } from '../../lib/text.js';
import { inScope, type Actor } from '../../lib/scope.js';
import type { DeviceState } from '../../protocol/index.js';
import type { AreasService } from '../areas/areas.service.js';
import type { AuditService } from '../audit/audit.service.js';
import type { DevicesRepository, DeviceWithPath, PresenceChange, StateReport } from './devices.repository.js';
import type {
  CreateDeviceInput,
  Credentials,
  DeviceView,
  ListDevicesQuery,
  UpdateDeviceInput,
} from './devices.schemas.js';

/** What the devices service needs from the broker. */
export interface DeviceConnections {
  disconnect(deviceId: string): void;
}

export function toDeviceView(row: DeviceRow): DeviceView {
  return {
    id: row.id,
    name: row.name,
    kind: row.kind,
    areaId: row.areaId,
    online: row.online,
    lastSeenAt: row.lastSeenAt?.toISOString() ?? null,
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

const credentialsFor = (id: string, secret: string): Credentials => ({ clientId: id, username: id, password: secret });

export class DevicesService {
  private readonly presenceWriter: BatchWriter<PresenceChange>;
  private readonly stateWriter: BatchWriter<StateReport>;
  private readonly seenWriter: BatchWriter<{ deviceId: string; at: Date }>;

  constructor(
    private readonly repo: DevicesRepository,
    private readonly areas: AreasService,
    private readonly audit: AuditService,
    private readonly connections: DeviceConnections,
    private readonly clock: Clock,
    log: FastifyBaseLogger,
  ) {
    const onError = (what: string) => (err: unknown, items: readonly unknown[]) =>
      log.error({ err, count: items.length }, `failed to store ${what}`);
    this.presenceWriter = new BatchWriter<PresenceChange>((items) => repo.applyPresence(items), onError('presence'));
    this.stateWriter = new BatchWriter<StateReport>((items) => repo.applyStates(items), onError('device states'));
    // Only the latest sighting per device matters.
    this.seenWriter = new BatchWriter<{ deviceId: string; at: Date }>((items) => {
      repo.touch(new Map(items.map((i) => [i.deviceId, i.at])));
    }, onError('last-seen times'));
  }

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
      createdAt: now,
      updatedAt: now,
    });
    this.audit.record(actor, 'device.create', { type: 'device', id }, { name: input.name, kind: input.kind, areaId: input.areaId });
    return { ...toDeviceView(this.repo.findById(id)!), credentials: credentialsFor(id, secret) };
  }

  list(actor: Actor, query: ListDevicesQuery) {
    const pathPrefix = query.areaId ? this.areas.getVisible(actor, query.areaId).path : actor.areaPath;
    const { rows, total } = this.repo.list({
      pathPrefix,
      kind: query.kind,
      online: query.online,
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
    this.connections.disconnect(id);
    this.audit.record(actor, 'device.delete', { type: 'device', id }, { name: device.name });
  }

  /** Issues a new secret; the old one stops working at once and the current session is closed. */
  rotateCredentials(actor: Actor, id: string): Credentials {
    this.getVisible(actor, id);
    const secret = newSecret();
    this.repo.update(id, { secretHash: hashSecret(secret), updatedAt: this.clock.now() });
    this.connections.disconnect(id);
    this.audit.record(actor, 'device.credentials_rotated', { type: 'device', id });
    return credentialsFor(id, secret);
  }

  /** MQTT CONNECT check: the device exists and the secret matches its stored hash. */
  authenticate(deviceId: string, secret: string): boolean {
    const stored = this.repo.secretHash(deviceId);
    return stored !== undefined && secretMatches(secret, stored);
  }

  // ---- what devices report (called from the broker's events) ----

  markAllOffline(): void {
    this.repo.markAllOffline();
  }

  recordPresence(deviceId: string, online: boolean): void {
    this.presenceWriter.push({ deviceId, online, at: this.clock.now() });
  }

  recordState(deviceId: string, state: DeviceState): void {
    this.stateWriter.push({ deviceId, state, at: this.clock.now() });
  }

  recordSeen(deviceId: string): void {
    this.seenWriter.push({ deviceId, at: this.clock.now() });
  }

  flush(): void {
    this.presenceWriter.flush();
    this.stateWriter.flush();
    this.seenWriter.flush();
  }
}
