import { asc, count, eq } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { areas, users, type UserRow } from '../../db/schema/index.js';
import { inSubtree } from '../../lib/scope.js';

export class UsersRepository {
  constructor(private readonly db: Db) {}

  insert(row: UserRow): void {
    this.db.insert(users).values(row).run();
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

  /** Users whose area lies in the subtree (every user when null, admins included). */
  list(pathPrefix: string | null): UserRow[] {
    const query = this.db.select({ user: users }).from(users).leftJoin(areas, eq(users.areaId, areas.id));
    const rows =
      pathPrefix === null
        ? query.orderBy(asc(users.username)).all()
        : query.where(inSubtree(areas.path, pathPrefix)).orderBy(asc(users.username)).all();
    return rows.map((r) => r.user);
  }
}
