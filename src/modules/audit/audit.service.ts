import type { Clock } from '../../lib/clock.js';
import type { Actor } from '../../lib/scope.js';
import type { AuditRepository } from './audit.repository.js';

/** What can be audited; a closed list so that reports can rely on the names. */
export type AuditAction =
  | 'auth.login'
  | 'auth.login_failed'
  | 'auth.logout'
  | 'auth.login_refused'
  | 'auth.password_change'
  | 'auth.password_change_failed'
  | 'user.create'
  | 'user.password_reset'
  | 'user.disable'
  | 'user.enable'
  | 'user.delete'
  | 'area.create'
  | 'area.update'
  | 'area.delete'
  | 'device.create'
  | 'device.update'
  | 'device.delete'
  | 'device.credentials_rotated'
  | 'command.create'
  | 'media.upload'
  | 'media.delete'
  | 'programme.create'
  | 'programme.update'
  | 'programme.submit'
  | 'programme.approve'
  | 'programme.reject'
  | 'programme.delete'
  | 'area.jingles_update'
  | 'tts.abbreviation_set'
  | 'tts.abbreviation_delete'
  | 'alert.acknowledged'
  | 'emergency.send'
  | 'emergency.update'
  | 'emergency.cancel'
  | 'schedule.create'
  | 'schedule.update'
  | 'schedule.delete'
  | 'schedule.pause'
  | 'schedule.resume'
  /** The server planned a schedule's occurrences again: a revision of another length was approved. */
  | 'schedule.replan'
  /** The server sent a schedule's occurrence (actor null), or resumed one after pre-emption. */
  | 'schedule.dispatch'
  | 'schedule.resume_play'
  | 'warning_source.create'
  | 'warning_source.revoke'
  /** A CAP document posted to /emergencies/cap: its identifier and what came of it (played or not, refused). */
  | 'cap.ingest';

export class AuditService {
  constructor(
    private readonly repo: AuditRepository,
    private readonly clock: Clock,
  ) {}

  record(
    actor: Pick<Actor, 'id' | 'username'> | null,
    action: AuditAction,
    target: { type: string; id?: string | null },
    details?: Record<string, unknown>,
  ): void {
    this.repo.insert({
      at: this.clock.now(),
      actorId: actor?.id ?? null,
      actorUsername: actor?.username ?? null,
      action,
      targetType: target.type,
      targetId: target.id ?? null,
      details: details ?? null,
    });
  }

  list(filter: { beforeId?: number; targetType?: string; targetId?: string; limit: number }) {
    return this.repo.list(filter).map((row) => ({
      id: row.id,
      at: row.at.toISOString(),
      actorId: row.actorId,
      actorUsername: row.actorUsername,
      action: row.action,
      targetType: row.targetType,
      targetId: row.targetId,
      details: (row.details ?? null) as Record<string, unknown> | null,
    }));
  }
}
