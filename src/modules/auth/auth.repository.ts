import { and, eq, gt, isNull, lte } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { apiTokens, areas, users, type UserRow } from '../../db/schema/index.js';

export class AuthRepository {
  constructor(private readonly db: Db) {}

  insertToken(row: typeof apiTokens.$inferInsert): void {
    this.db.insert(apiTokens).values(row).run();
  }

  /**
   * The enabled user behind an unexpired token, with the path of their area (for scope checks). Disabling
   * deletes the user's tokens; the check here also covers a login that was in flight at that moment.
   */
  findByToken(tokenHash: string, now: Date): { user: UserRow; areaPath: string | null } | undefined {
    return this.db
      .select({ user: users, areaPath: areas.path })
      .from(apiTokens)
      .innerJoin(users, eq(apiTokens.userId, users.id))
      .leftJoin(areas, eq(users.areaId, areas.id))
      .where(and(eq(apiTokens.tokenHash, tokenHash), gt(apiTokens.expiresAt, now), isNull(users.disabledAt)))
      .get();
  }

  deleteToken(tokenHash: string): void {
    this.db.delete(apiTokens).where(eq(apiTokens.tokenHash, tokenHash)).run();
  }

  deleteExpired(now: Date): void {
    this.db.delete(apiTokens).where(lte(apiTokens.expiresAt, now)).run();
  }
}
