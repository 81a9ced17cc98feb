import { AppError, invalid } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { dummyPasswordHash, hashPassword, hashSecret, verifyPassword } from '../../lib/crypto.js';
import { newSecret } from '../../lib/ids.js';
import type { Actor } from '../../lib/scope.js';
import type { AuditService } from '../audit/audit.service.js';
import type { UsersRepository } from '../users/users.repository.js';
import { toUserView } from '../users/users.service.js';
import type { AuthRepository } from './auth.repository.js';
import type { LoginThrottle } from './login-throttle.js';

const TOKEN_PREFIX = 'loa_';
const NOWHERE = '/\u0000/';

export class AuthService {
  constructor(
    private readonly repo: AuthRepository,
    private readonly users: UsersRepository,
    private readonly audit: AuditService,
    private readonly throttle: LoginThrottle,
    private readonly clock: Clock,
    private readonly tokenTtlMs: number,
  ) {}

  async login(username: string, password: string, address: string) {
    // Counted before the slow hash: parallel guesses beyond the limit never reach verifyPassword.
    const attempt = await this.throttle.attempt(username, address);
    const user = this.users.findByUsername(username);
    // Same work and same answer whether or not the user exists: nothing tells an attacker which.
    const ok = await verifyPassword(password, user?.passwordHash ?? (await dummyPasswordHash()));
    if (!user || !ok) {
      this.audit.record(
        null,
        'auth.login_failed',
        { type: 'user', id: user?.id ?? null },
        { username, address },
      );
      throw new AppError('invalid_credentials');
    }
    await this.throttle.succeeded(attempt);
    // Said only to someone who knows the password, so it reveals nothing to a guesser.
    if (user.disabledAt !== null) {
      this.audit.record(
        user,
        'auth.login_refused',
        { type: 'user', id: user.id },
        { address, reason: 'disabled' },
      );
      throw new AppError('account_disabled', 'This account has been disabled; ask an administrator');
    }

    const now = this.clock.now();
    this.repo.deleteExpired(now);
    const token = `${TOKEN_PREFIX}${newSecret()}`;
    const expiresAt = new Date(now.getTime() + this.tokenTtlMs);
    this.repo.insertToken({ tokenHash: hashSecret(token), userId: user.id, createdAt: now, expiresAt });
    this.audit.record(user, 'auth.login', { type: 'user', id: user.id }, { address });
    return { token, expiresAt: expiresAt.toISOString(), user: toUserView(user) };
  }

  /**
   * Users change their own password. Every other token of theirs is revoked (a session on a lost phone
   * ends); the one used for this request stays valid, so the caller is not logged out. Guesses of the
   * current password count against the login limits: a stolen token must not become a password oracle.
   */
  async changePassword(
    actor: Actor,
    token: string,
    input: { currentPassword: string; newPassword: string },
    address: string,
  ): Promise<void> {
    const attempt = await this.throttle.attempt(actor.username, address);
    const user = this.users.findById(actor.id);
    if (!user || !(await verifyPassword(input.currentPassword, user.passwordHash))) {
      this.audit.record(actor, 'auth.password_change_failed', { type: 'user', id: actor.id }, { address });
      throw invalid('body.currentPassword', 'is not your current password');
    }
    await this.throttle.succeeded(attempt);
    this.users.setPassword(user.id, await hashPassword(input.newPassword), hashSecret(token));
    this.audit.record(actor, 'auth.password_change', { type: 'user', id: user.id }, { address });
  }

  /** The actor behind a bearer token, or null when it is unknown or expired. */
  authenticate(token: string): Actor | null {
    if (!token.startsWith(TOKEN_PREFIX)) return null;
    const found = this.repo.findByToken(hashSecret(token), this.clock.now());
    if (!found) return null;
    const { user, areaPath } = found;
    return {
      id: user.id,
      username: user.username,
      role: user.role,
      areaId: user.areaId,
      // A non-admin always has an area (the schema requires it); should one not, it sees nothing.
      areaPath: user.role === 'admin' ? null : (areaPath ?? NOWHERE),
    };
  }

  logout(actor: Actor, token: string): void {
    this.repo.deleteToken(hashSecret(token));
    this.audit.record(actor, 'auth.logout', { type: 'user', id: actor.id });
  }
}
