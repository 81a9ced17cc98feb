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

/** Escapes a path for use as a LIKE prefix: ids contain `_`, which LIKE treats as a wildcard. */
export function likePrefix(path: string): string {
  return `${path.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}
