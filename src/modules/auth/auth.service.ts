import { AppError } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { dummyPasswordHash, hashSecret, verifyPassword } from '../../lib/crypto.js';
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
    const retryAfterS = this.throttle.retryAfterS(username, address);
    if (retryAfterS > 0) {
      throw new AppError('too_many_requests', `Too many failed logins; try again in ${retryAfterS} s`, {
        retryAfterS,
      });
    }
    const user = this.users.findByUsername(username);
    // Same work and same answer whether or not the user exists: nothing tells an attacker which.
    const ok = await verifyPassword(password, user?.passwordHash ?? (await dummyPasswordHash()));
    if (!user || !ok) {
      this.throttle.fail(username, address);
      this.audit.record(
        null,
        'auth.login_failed',
        { type: 'user', id: user?.id ?? null },
        { username, address },
      );
      throw new AppError('invalid_credentials');
    }
    this.throttle.succeed(username);

    const now = this.clock.now();
    this.repo.deleteExpired(now);
    const token = `${TOKEN_PREFIX}${newSecret()}`;
    const expiresAt = new Date(now.getTime() + this.tokenTtlMs);
    this.repo.insertToken({ tokenHash: hashSecret(token), userId: user.id, createdAt: now, expiresAt });
    this.audit.record(user, 'auth.login', { type: 'user', id: user.id }, { address });
    return { token, expiresAt: expiresAt.toISOString(), user: toUserView(user) };
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
