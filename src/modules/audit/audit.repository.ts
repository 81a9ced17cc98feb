import { and, desc, eq, lt, type SQL } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { auditLog } from '../../db/schema/index.js';

export type AuditEntry = typeof auditLog.$inferInsert;

export class AuditRepository {
  constructor(private readonly db: Db) {}

  insert(entry: AuditEntry): void {
    this.db.insert(auditLog).values(entry).run();
  }

  list(filter: { beforeId?: number; targetType?: string; targetId?: string; limit: number }) {
    const where: SQL[] = [];
    if (filter.beforeId !== undefined) where.push(lt(auditLog.id, filter.beforeId));
    if (filter.targetType) where.push(eq(auditLog.targetType, filter.targetType));
    if (filter.targetId) where.push(eq(auditLog.targetId, filter.targetId));
    return this.db
      .select()
      .from(auditLog)
      .where(and(...where))
      .orderBy(desc(auditLog.id))
      .limit(filter.limit)
      .all();
  }
}
