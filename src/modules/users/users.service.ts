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
    disabled: row.disabledAt !== null,
    disabledAt: row.disabledAt?.toISOString() ?? null,
  };
}

const usernameTaken = (username: string) =>
  new AppError('conflict', `username: "${username}" is already taken`, {
    errors: [{ field: 'body.username', message: 'is already taken' }],
  });

export class UsersService {
  constructor(
    private readonly repo: UsersRepository,
    private readonly areas: AreasService,
    private readonly audit: AuditService,
    private readonly clock: Clock,
  ) {}

  async create(actor: Actor, input: CreateUserInput): Promise<UserView> {
    if (input.areaId !== undefined) this.areas.requireActionable(actor, input.areaId, 'areaId');
    if (this.repo.findByUsername(input.username)) throw usernameTaken(input.username);
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
    // Checked again by the database: another create of this username may have won while we hashed.
    if (!this.repo.insert(row)) throw usernameTaken(input.username);
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
    return toUserView(this.require(id));
  }

  list(actor: Actor): UserView[] {
    return this.repo.list(actor.areaPath).map(toUserView);
  }

  /**
   * An admin sets someone else's password (a forgotten one, or a suspected leak): every token of theirs is
   * revoked. Admins change their own through POST /auth/password, which asks for the current one: a stolen
   * admin token alone must not be enough to take the account over.
   */
  async resetPassword(actor: Actor, id: string, newPassword: string): Promise<void> {
    const user = this.require(id);
    if (user.id === actor.id) {
      throw new AppError(
        'conflict',
        'To change your own password use POST /api/v1/auth/password, which asks for the current one',
      );
    }
    const passwordHash = await hashPassword(newPassword);
    this.repo.setPassword(user.id, passwordHash, null);
    this.audit.record(
      actor,
      'user.password_reset',
      { type: 'user', id: user.id },
      { username: user.username },
    );
  }

  /** Login is refused and every token revoked; the account, its history and its commands stay. */
  disable(actor: Actor, id: string): UserView {
    const user = this.require(id);
    this.requireRemovable(actor, user, 'disable');
    if (user.disabledAt === null) {
      this.repo.disable(user.id, this.clock.now());
      this.audit.record(actor, 'user.disable', { type: 'user', id: user.id }, { username: user.username });
    }
    return this.get(id);
  }

  enable(actor: Actor, id: string): UserView {
    const user = this.require(id);
    if (user.disabledAt !== null) {
      this.repo.enable(user.id);
      this.audit.record(actor, 'user.enable', { type: 'user', id: user.id }, { username: user.username });
    }
    return this.get(id);
  }

  /** Tokens go with the user; commands they sent stay, with no creator. */
  delete(actor: Actor, id: string): void {
    const user = this.require(id);
    this.requireRemovable(actor, user, 'delete');
    this.repo.delete(user.id);
    this.audit.record(
      actor,
      'user.delete',
      { type: 'user', id: user.id },
      { username: user.username, role: user.role },
    );
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

  private require(id: string): UserRow {
    const row = this.repo.findById(id);
    if (!row) throw notFound('User');
    return row;
  }

  /**
   * Someone must always be able to administer the system. The check and the write that follows run with
   * no await between them, and SQLite has one writer, so two admins disabling each other cannot both pass.
   */
  private requireRemovable(actor: Actor, user: UserRow, verb: 'disable' | 'delete'): void {
    if (user.id === actor.id) {
      throw new AppError('conflict', `An admin cannot ${verb} their own account; ask another admin`);
    }
    if (
      user.role === 'admin' &&
      user.disabledAt === null &&
      this.repo.countOtherEnabledAdmins(user.id) === 0
    ) {
      throw new AppError('conflict', `"${user.username}" is the last enabled admin and cannot be ${verb}d`);
    }
  }
}
