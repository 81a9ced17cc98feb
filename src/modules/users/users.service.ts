import type { UserRow } from '../../db/schema/index.js';
import { AppError, notFound } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { hashPassword } from '../../lib/crypto.js';
import { newId } from '../../lib/ids.js';
import type { Actor } from '../../lib/scope.js';
import type { AreasService } from '../areas/areas.service.js';
import type { AuditService } from '../audit/audit.service.js';
import type { UsersRepository } from './users.repository.js';
import type { CreateUserInput, UserView } from './users.schemas.js';

export function toUserView(row: UserRow): UserView {
  return {
    id: row.id,
    username: row.username,
    displayName: row.displayName,
    role: row.role,
    areaId: row.areaId,
    createdAt: row.createdAt.toISOString(),
  };
}

export class UsersService {
  constructor(
    private readonly repo: UsersRepository,
    private readonly areas: AreasService,
    private readonly audit: AuditService,
    private readonly clock: Clock,
  ) {}

  async create(actor: Actor, input: CreateUserInput): Promise<UserView> {
    if (input.areaId !== undefined) this.areas.requireActionable(actor, input.areaId, 'areaId');
    if (this.repo.findByUsername(input.username)) {
      throw new AppError('conflict', `username: "${input.username}" is already taken`, {
        errors: [{ field: 'body.username', message: 'is already taken' }],
      });
    }
    const row: UserRow = {
      id: newId('usr'),
      username: input.username,
      displayName: input.displayName ?? null,
      passwordHash: await hashPassword(input.password),
      role: input.role,
      areaId: input.areaId ?? null,
      createdAt: this.clock.now(),
      disabledAt: null,
    };
    this.repo.insert(row);
    this.audit.record(
      actor,
      'user.create',
      { type: 'user', id: row.id },
      {
        username: row.username,
        role: row.role,
        areaId: row.areaId,
      },
    );
    return toUserView(row);
  }

  get(id: string): UserView {
    const row = this.repo.findById(id);
    if (!row) throw notFound('User');
    return toUserView(row);
  }

  list(actor: Actor): UserView[] {
    return this.repo.list(actor.areaPath).map(toUserView);
  }

  /**
   * First start with an empty database: create `admin` with ADMIN_PASSWORD, or with a random password
   * that is returned so the server can print it once.
   */
  async ensureAdmin(
    password: string | undefined,
    generate: () => string,
  ): Promise<{ created: boolean; password?: string }> {
    if (this.repo.count() > 0) return { created: false };
    const chosen = password ?? generate();
    this.repo.insert({
      id: newId('usr'),
      username: 'admin',
      displayName: 'Administrator',
      passwordHash: await hashPassword(chosen),
      role: 'admin',
      areaId: null,
      createdAt: this.clock.now(),
      disabledAt: null,
    });
    return { created: true, ...(password === undefined ? { password: chosen } : {}) };
  }
}
