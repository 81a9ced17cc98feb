import { sql, type AnyColumn, type SQL } from 'drizzle-orm';
import type { Role } from '../db/schema/index.js';

/** The authenticated user a request acts as. */
export interface Actor {
  id: string;
  username: string;
  role: Role;
  areaId: string | null;
  /** Materialised path of the user's area; null for admins, who act everywhere. */
  areaPath: string | null;
}

/** True when something in the area with this path lies within the actor's subtree. */
export function inScope(actor: Actor, areaPath: string): boolean {
  return actor.areaPath === null || areaPath.startsWith(actor.areaPath);
}

/**
 * True when the area with this path is in the actor's subtree or above it: what is shared along the tree
 * (media, programmes) is seen below its area, where it airs, as well as inside it, where it is managed.
 */
export function inScopeOrAbove(actor: Actor, areaPath: string): boolean {
  return inScope(actor, areaPath) || (actor.areaPath?.startsWith(areaPath) ?? false);
}

/**
 * SQL for "this path column lies in the subtree whose path is `path`" (every path ends with '/'). A range
 * on the path index rather than LIKE, which SQLite cannot serve from an index with an ESCAPE clause:
 * every string starting with '/a/b/' sorts at or after it and before '/a/b0' ('0' follows '/').
 */
export function inSubtree(column: AnyColumn | SQL, path: string): SQL {
  return sql`(${column} >= ${path} AND ${column} < ${`${path.slice(0, -1)}0`})`;
}
