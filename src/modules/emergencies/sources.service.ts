import { AppError, notFound } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { hashSecret } from '../../lib/crypto.js';
import { newId, newSecret } from '../../lib/ids.js';
import type { Actor } from '../../lib/scope.js';
import type { AreasService } from '../areas/areas.service.js';
import type { AuditService } from '../audit/audit.service.js';
import type { CapRepository, WarningSourceWithArea } from './cap.repository.js';
import type { CreateWarningSourceInput, WarningSourceView } from './cap.schemas.js';

/**
 * Keys of warning sources start so: a user token is `loa_` + base64url, so the longer prefix tells the two
 * apart before any lookup (a user token could begin with "wsk_" by chance, 1 in 16 million: it is then
 * looked up as a user token too).
 */
export const SOURCE_KEY_PREFIX = 'loa_wsk_';

/** Who a warning-source key belongs to, as the emergencies service takes it (Sender kind 'source'). */
export interface SourcePrincipal {
  id: string;
  name: string;
  areaId: string;
  areaPath: string;
}

function toView(row: WarningSourceWithArea): WarningSourceView {
  return {
    id: row.id,
    name: row.name,
    areaId: row.areaId,
    areaName: row.areaName,
    createdAt: row.createdAt.toISOString(),
    lastUsedAt: row.lastUsedAt?.toISOString() ?? null,
    revokedAt: row.revokedAt?.toISOString() ?? null,
  };
}

/**
 * Warning systems (a national or provincial hydro-meteorological centre) that send CAP alerts with their own
 * key, each limited to an area: an admin creates them, sees the key once, and revokes it. Keys are 256-bit
 * random secrets, stored as SHA-256 like user tokens (src/lib/crypto.ts says why not scrypt).
 */
export class WarningSourcesService {
  constructor(
    private readonly repo: CapRepository,
    private readonly areas: AreasService,
    private readonly audit: AuditService,
    private readonly clock: Clock,
  ) {}

  create(actor: Actor, input: CreateWarningSourceInput): WarningSourceView & { key: string } {
    const area = this.areas.requireActionable(actor, input.areaId, 'body.areaId');
    const key = `${SOURCE_KEY_PREFIX}${newSecret()}`;
    const id = newId('wsrc');
    this.repo.insertSource({
      id,
      name: input.name,
      areaId: area.id,
      keyHash: hashSecret(key),
      createdBy: actor.id,
      createdAt: this.clock.now(),
      lastUsedAt: null,
      revokedAt: null,
    });
    this.audit.record(
      actor,
      'warning_source.create',
      { type: 'warning_source', id },
      { name: input.name, areaId: area.id },
    );
    return { ...toView(this.repo.findSource(id)!), key };
  }

  list(): { items: WarningSourceView[] } {
    return { items: this.repo.listSources().map(toView) };
  }

  /** Revoking twice is answered the same and audited once. */
  revoke(actor: Actor, id: string): WarningSourceView {
    const source = this.repo.findSource(id);
    if (!source) throw notFound('Warning source');
    if (this.repo.revokeSource(id, this.clock.now())) {
      this.audit.record(
        actor,
        'warning_source.revoke',
        { type: 'warning_source', id },
        { name: source.name },
      );
    }
    return toView(this.repo.findSource(id)!);
  }

  /**
   * The source holding this key; AppError unauthenticated when the key is unknown or revoked. Each use is
   * remembered (lastUsedAt), so an admin sees which keys are alive before revoking one.
   */
  authenticate(key: string): SourcePrincipal {
    const source = key.startsWith(SOURCE_KEY_PREFIX)
      ? this.repo.findSourceByKeyHash(hashSecret(key))
      : undefined;
    if (!source) throw new AppError('unauthenticated', 'The token or warning-source key is not valid');
    if (source.revokedAt !== null) {
      throw new AppError('unauthenticated', 'This warning-source key has been revoked; ask an administrator');
    }
    this.repo.touchSource(source.id, this.clock.now());
    return { id: source.id, name: source.name, areaId: source.areaId, areaPath: source.areaPath };
  }
}
