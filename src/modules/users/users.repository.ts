import { and, asc, count, eq, isNull, ne } from 'drizzle-orm';
import { isUniqueViolation, type Db } from '../../db/index.js';
import { apiTokens, areas, users, type UserRow } from '../../db/schema/index.js';
import { inSubtree } from '../../lib/scope.js';

export class UsersRepository {
  constructor(private readonly db: Db) {}

  /**
   * False when the username is taken. The UNIQUE index decides between two creates of the same username
   * that both passed the service's check while their passwords were being hashed.
   */
  insert(row: UserRow): boolean {
    try {
      this.db.insert(users).values(row).run();
      return true;
    } catch (err) {
      if (isUniqueViolation(err) && this.findByUsername(row.username)) return false;
      throw err;
    }
  }

  findByUsername(username: string): UserRow | undefined {
    return this.db.select().from(users).where(eq(users.username, username)).get();
  }

  findById(id: string): UserRow | undefined {
    return this.db.select().from(users).where(eq(users.id, id)).get();
  }

  count(): number {
    return this.db.select({ n: count() }).from(users).get()?.n ?? 0;
  }

  /** Enabled admins other than `exceptId`. */
  countOtherEnabledAdmins(exceptId: string): number {
    return (
      this.db
        .select({ n: count() })
        .from(users)
        .where(and(eq(users.role, 'admin'), isNull(users.disabledAt), ne(users.id, exceptId)))
        .get()?.n ?? 0
    );
  }

  /** Users whose area lies in the subtree (every user when null, admins included). */
  list(pathPrefix: string | null): UserRow[] {
    const query = this.db.select({ user: users }).from(users).leftJoin(areas, eq(users.areaId, areas.id));
    const rows =
      pathPrefix === null
        ? query.orderBy(asc(users.username)).all()
        : query.where(inSubtree(areas.path, pathPrefix)).orderBy(asc(users.username)).all();
    return rows.map((r) => r.user);
  }

  /** New password; every token of the user is revoked but `keepTokenHash` (the caller's own session). */
  setPassword(id: string, passwordHash: string, keepTokenHash: string | null): void {
    this.db.transaction((tx) => {
      tx.update(users).set({ passwordHash }).where(eq(users.id, id)).run();
      tx.delete(apiTokens)
        .where(
          keepTokenHash === null
            ? eq(apiTokens.userId, id)
            : and(eq(apiTokens.userId, id), ne(apiTokens.tokenHash, keepTokenHash)),
        )
        .run();
    });
  }

  /** Disables the account and revokes all its tokens, in one transaction. */
  disable(id: string, at: Date): void {
    this.db.transaction((tx) => {
      tx.update(users).set({ disabledAt: at }).where(eq(users.id, id)).run();
      tx.delete(apiTokens).where(eq(apiTokens.userId, id)).run();
    });
  }

  enable(id: string): void {
    this.db.update(users).set({ disabledAt: null }).where(eq(users.id, id)).run();
  }

  /** Tokens and idempotency keys cascade; commands keep existing with created_by set to null. */
  delete(id: string): void {
    this.db.delete(users).where(eq(users.id, id)).run();
  }
}
