import { AREA_LEVELS, type AreaLevel, type AreaRow } from '../../db/schema/index.js';
import { AppError, forbidden, invalid, notFound } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { newId } from '../../lib/ids.js';
import { compareNames } from '../../lib/text.js';
import { inScope, type Actor } from '../../lib/scope.js';
import type { AuditService } from '../audit/audit.service.js';
import { DuplicateAreaCode, type AreasRepository } from './areas.repository.js';
import type { AreaView, CreateAreaInput, ListAreasQuery, UpdateAreaInput } from './areas.schemas.js';

const rank = (level: AreaLevel) => AREA_LEVELS.indexOf(level);

/**
 * Writes that set a code, with the UNIQUE index as the judge: a check before the write would race another
 * request giving the same code. Which area holds it is not said: it may be outside the caller's area.
 */
function withCode<T>(code: string | null | undefined, write: () => T): T {
  try {
    return write();
  } catch (err) {
    if (err instanceof DuplicateAreaCode) {
      throw new AppError('conflict', `code: "${code}" is already the code of another area`, {
        errors: [{ field: 'body.code', message: 'is already the code of another area' }],
      });
    }
    throw err;
  }
}

export function toAreaView(row: AreaRow): AreaView {
  return {
    id: row.id,
    name: row.name,
    level: row.level,
    parentId: row.parentId,
    code: row.code,
    depth: row.path.split('/').filter(Boolean).length - 1,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

/** Depth-first order, siblings by name (Vietnamese order), so a client can render the tree as is. */
function depthFirst(rows: AreaRow[]): AreaRow[] {
  const ids = new Set(rows.map((r) => r.id));
  const children = new Map<string | null, AreaRow[]>();
  for (const row of rows) {
    // The roots of what the caller sees are the areas whose parent is not visible to them.
    const key = row.parentId !== null && ids.has(row.parentId) ? row.parentId : null;
    const list = children.get(key) ?? [];
    list.push(row);
    children.set(key, list);
  }
  const out: AreaRow[] = [];
  const visit = (parent: string | null) => {
    const list = (children.get(parent) ?? []).sort((a, b) => compareNames(a.name, b.name));
    for (const row of list) {
      out.push(row);
      visit(row.id);
    }
  };
  visit(null);
  return out;
}

/**
 * Areas form a tree of any depth. Rules: a child's level is below its parent's (a commune may hang
 * directly under a province, as after the 2025 merger, but never the reverse); non-admins act only
 * strictly inside their own area, which is managed from above.
 */
export class AreasService {
  constructor(
    private readonly repo: AreasRepository,
    private readonly audit: AuditService,
    private readonly clock: Clock,
  ) {}

  /** The area if the actor may see it; 404 otherwise, so that nothing outside the scope is revealed. */
  getVisible(actor: Actor, id: string): AreaRow {
    const row = this.repo.findById(id);
    if (!row || !inScope(actor, row.path)) throw notFound('Area');
    return row;
  }

  /**
   * The area an actor refers to in order to act on it or place something in it. It must exist (404) and
   * lie within the actor's subtree (403).
   */
  requireActionable(actor: Actor, id: string, field: string): AreaRow {
    const row = this.repo.findById(id);
    if (!row) throw new AppError('not_found', `${field}: area ${id} not found`);
    if (!inScope(actor, row.path)) throw forbidden(`${field}: area ${id} is outside your area`);
    return row;
  }

  /** The areas with these ids that exist, with no scope check: for the server's own work (schedules). */
  byIds(ids: readonly string[]): AreaRow[] {
    return ids.length === 0 ? [] : this.repo.findMany([...new Set(ids)]);
  }

  /** Direct sub-areas, for callers that already checked the parent is visible. */
  childrenOf(id: string): AreaRow[] {
    return this.repo.children(id);
  }

  /** With `code`: the one area holding it, if the actor may see it (a list of zero or one). */
  list(actor: Actor, query: ListAreasQuery = {}): AreaView[] {
    if (query.code !== undefined) {
      const row = this.repo.findByCode(query.code);
      return row && inScope(actor, row.path) ? [toAreaView(row)] : [];
    }
    return depthFirst(this.repo.listSubtree(actor.areaPath)).map(toAreaView);
  }

  /** The area holding this administrative code, with no scope check: for the server's own work (alerts). */
  byCode(code: string): AreaRow | undefined {
    return this.repo.findByCode(code);
  }

  create(actor: Actor, input: CreateAreaInput): AreaView {
    let path: string;
    const id = newId('ar');
    if (input.parentId === undefined) {
      if (actor.role !== 'admin') throw forbidden('Only an administrator can create a top-level area');
      path = `/${id}/`;
    } else {
      const parent = this.requireActionable(actor, input.parentId, 'parentId');
      if (rank(input.level) <= rank(parent.level)) {
        throw invalid('level', `a ${input.level} cannot be placed under a ${parent.level}`);
      }
      path = `${parent.path}${id}/`;
    }
    const now = this.clock.now();
    const row: AreaRow = {
      id,
      name: input.name,
      level: input.level,
      parentId: input.parentId ?? null,
      path,
      code: input.code ?? null,
      createdAt: now,
      updatedAt: now,
    };
    withCode(row.code, () => this.repo.insert(row));
    this.audit.record(
      actor,
      'area.create',
      { type: 'area', id },
      { name: row.name, level: row.level, parentId: row.parentId, code: row.code },
    );
    return toAreaView(row);
  }

  update(actor: Actor, id: string, input: UpdateAreaInput): AreaView {
    const area = this.requireOwnedBelow(actor, id);
    const now = this.clock.now();
    const level = input.level ?? area.level;

    let parent: AreaRow | null = area.parentId ? (this.repo.findById(area.parentId) ?? null) : null;
    if (input.parentId !== undefined && input.parentId !== area.parentId) {
      if (input.parentId === null) {
        if (actor.role !== 'admin') throw forbidden('Only an administrator can make an area top-level');
        parent = null;
      } else {
        parent = this.requireActionable(actor, input.parentId, 'parentId');
        if (parent.path.startsWith(area.path)) {
          throw invalid('parentId', 'an area cannot be moved under itself or one of its sub-areas');
        }
      }
    }
    if (parent && rank(level) <= rank(parent.level)) {
      throw invalid(
        input.level ? 'level' : 'parentId',
        `a ${level} cannot be placed under a ${parent.level}`,
      );
    }
    if (input.level) {
      const children = this.repo.listSubtree(area.path).filter((r) => r.parentId === area.id);
      const clash = children.find((c) => rank(c.level) <= rank(level));
      if (clash)
        throw invalid(
          'level',
          `sub-area "${clash.name}" is a ${clash.level}, which cannot sit under a ${level}`,
        );
    }

    if (input.name !== undefined || input.level !== undefined || input.code !== undefined) {
      withCode(input.code, () =>
        this.repo.update(id, {
          name: input.name ?? area.name,
          level,
          ...(input.code !== undefined ? { code: input.code } : {}),
          updatedAt: now,
        }),
      );
    }
    const newParentId = parent?.id ?? null;
    if (newParentId !== area.parentId) {
      this.repo.reparent(id, newParentId, area.path, `${parent?.path ?? '/'}${id}/`, now);
    }
    this.audit.record(actor, 'area.update', { type: 'area', id }, { ...input });
    return toAreaView(this.repo.findById(id)!);
  }

  delete(actor: Actor, id: string): void {
    const area = this.requireOwnedBelow(actor, id);
    const deps = this.repo.dependents(id);
    if (deps.children + deps.devices + deps.users + deps.programmes + deps.media + deps.warningSources > 0) {
      throw new AppError(
        'area_not_empty',
        `"${area.name}" still has ${deps.children} sub-area(s), ${deps.devices} device(s), ${deps.users} user(s), ` +
          `${deps.programmes} programme(s), ${deps.media} media item(s) and ${deps.warningSources} warning ` +
          `source(s)`,
      );
    }
    this.repo.delete(id);
    this.audit.record(actor, 'area.delete', { type: 'area', id }, { name: area.name });
  }

  /** An area the actor may change: visible, and not the actor's own area (managed from above). */
  private requireOwnedBelow(actor: Actor, id: string): AreaRow {
    const area = this.getVisible(actor, id);
    if (actor.role !== 'admin' && area.id === actor.areaId) {
      throw forbidden('Your own area is managed by the level above you');
    }
    return area;
  }
}
