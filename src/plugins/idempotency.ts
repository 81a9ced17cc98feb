/**
 * The `Idempotency-Key` request header (draft-ietf-httpapi-idempotency-key-header) for POSTs that act on
 * the world: a route declared with `config: { idempotent: true }` answers a key it has already answered,
 * for the same user within 24 h, with that first answer, without running again. A double-clicked
 * broadcast goes out once. docs/commands.md#idempotency-key describes it for API users.
 *
 * Only successful (2xx) answers are kept: a refused request changed nothing, so running it again is safe
 * and tells the current truth. The key is claimed in the database before the handler runs, so a second
 * request with the same key waits for the first one's answer instead of acting a second time.
 */
import { createHash } from 'node:crypto';
import { and, eq, lt } from 'drizzle-orm';
import type { FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { z } from 'zod';
import type { Db } from '../db/index.js';
import { idempotencyKeys } from '../db/schema/index.js';
import { AppError } from '../errors.js';
import { PeriodicJobs, type Clock } from '../lib/clock.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Honour the Idempotency-Key header (authenticated routes only: keys are per user). */
    idempotent?: boolean;
  }
}

export const IDEMPOTENCY_HEADER = 'idempotency-key';
const FIELD = `header.${IDEMPOTENCY_HEADER}`;
/** Visible ASCII (0x21–0x7E), so a key survives every proxy and log unchanged. */
const KEY_PATTERN = /^[\x21-\x7e]{1,255}$/;
const KEY_MESSAGE = 'must be 1 to 255 visible ASCII characters (a UUID is a good choice)';

/** Documents the header in OpenAPI; added by the plugin to every idempotent route that has no headers schema. */
export const idempotencyHeadersSchema = z.looseObject({
  [IDEMPOTENCY_HEADER]: z
    .string()
    .regex(KEY_PATTERN, KEY_MESSAGE)
    .optional()
    .describe(
      'Any unique string per intended action (e.g. a UUID). The same key again within 24 h returns the first ' +
        'answer and does nothing; with another body it is refused (422).',
    ),
});

/** statusCode of a key whose first request is still running. */
const IN_PROGRESS = 0;

type Entry = typeof idempotencyKeys.$inferSelect;

export class IdempotencyRepository {
  constructor(private readonly db: Db) {}

  /**
   * Claims the key for a new request and returns null, unless a live entry holds it: then returns that
   * entry. An entry older than `expiredBefore`, or still in progress since before `abandonedBefore` (its
   * process died), no longer holds the key. IMMEDIATE, so that two processes cannot both claim it.
   */
  claim(
    claim: { userId: string; key: string; fingerprint: string; at: Date },
    expiredBefore: Date,
    abandonedBefore: Date,
  ): Entry | null {
    return this.db.transaction(
      (tx) => {
        const held = tx
          .select()
          .from(idempotencyKeys)
          .where(and(eq(idempotencyKeys.userId, claim.userId), eq(idempotencyKeys.key, claim.key)))
          .get();
        const live =
          held !== undefined &&
          held.createdAt >= expiredBefore &&
          !(held.statusCode === IN_PROGRESS && held.createdAt < abandonedBefore);
        if (live) return held;
        const row = {
          fingerprint: claim.fingerprint,
          statusCode: IN_PROGRESS,
          response: {},
          createdAt: claim.at,
        };
        tx.insert(idempotencyKeys)
          .values({ userId: claim.userId, key: claim.key, ...row })
          .onConflictDoUpdate({ target: [idempotencyKeys.userId, idempotencyKeys.key], set: row })
          .run();
        return null;
      },
      { behavior: 'immediate' },
    );
  }

  complete(userId: string, key: string, statusCode: number, response: unknown): void {
    this.db
      .update(idempotencyKeys)
      .set({ statusCode, response })
      .where(and(eq(idempotencyKeys.userId, userId), eq(idempotencyKeys.key, key)))
      .run();
  }

  /** Frees a claimed key whose request did not succeed, so that it can be tried again. */
  release(userId: string, key: string): void {
    this.db
      .delete(idempotencyKeys)
      .where(
        and(
          eq(idempotencyKeys.userId, userId),
          eq(idempotencyKeys.key, key),
          eq(idempotencyKeys.statusCode, IN_PROGRESS),
        ),
      )
      .run();
  }

  prune(before: Date): number {
    return this.db.delete(idempotencyKeys).where(lt(idempotencyKeys.createdAt, before)).run().changes;
  }
}

/** JSON with keys sorted at every level, so that the same body in another key order has the same hash. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** Method, URL and the validated body: the same key with any other request is refused. */
function fingerprintOf(request: FastifyRequest): string {
  return createHash('sha256')
    .update(`${request.method} ${request.url}\n${canonicalJson(request.body ?? null)}`, 'utf8')
    .digest('hex');
}

/** Only JSON answers are kept; an idempotent route answering anything else simply acts again. */
function jsonOrUndefined(payload: unknown): unknown {
  if (typeof payload !== 'string') return undefined;
  try {
    return JSON.parse(payload) as unknown;
  } catch {
    return undefined;
  }
}

function parseKey(value: string | string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  // Node joins a repeated header with ", ", which the pattern refuses: one request, one key.
  if (typeof value !== 'string' || !KEY_PATTERN.test(value)) {
    throw new AppError('validation_failed', `${FIELD}: ${KEY_MESSAGE}`, {
      errors: [{ field: FIELD, message: KEY_MESSAGE }],
    });
  }
  return value;
}

export interface IdempotencyOptions {
  db: Db;
  clock: Clock;
  /** How long an answer is kept (24 h). */
  ttlMs?: number;
  /** After this long, a key whose request never finished (the process died) is free again. */
  abandonAfterMs?: number;
  /** How often expired keys are deleted. */
  pruneEveryMs?: number;
}

export default fp<IdempotencyOptions>(
  (app, options, done) => {
    const repo = new IdempotencyRepository(options.db);
    const { clock } = options;
    const ttlMs = options.ttlMs ?? 24 * 3_600_000;
    const abandonAfterMs = options.abandonAfterMs ?? 60_000;
    /** Requests of this process that hold a claimed key, and a promise settled when they have answered. */
    const running = new Map<string, { done: Promise<void>; settle: () => void }>();
    const claims = new WeakMap<FastifyRequest, { userId: string; key: string }>();
    const slot = (userId: string, key: string) => `${userId}\n${key}`;

    app.addHook('onRoute', (route) => {
      if (!route.config?.idempotent) return;
      // Keys are kept per user: without one, two callers' keys would collide.
      if (route.config.public) throw new Error(`${route.url}: an idempotent route must be authenticated`);
      if (route.schema && route.schema.headers === undefined) route.schema.headers = idempotencyHeadersSchema;
    });

    app.addHook('preHandler', async (request, reply) => {
      if (!request.routeOptions.config.idempotent) return;
      const key = parseKey(request.headers[IDEMPOTENCY_HEADER]);
      if (key === undefined) return;
      const userId = request.actor.id;
      const fingerprint = fingerprintOf(request);
      // Twice at most: once more after waiting for a request of this process that held the key.
      for (let attempt = 0; ; attempt += 1) {
        const now = clock.now();
        const held = repo.claim(
          { userId, key, fingerprint, at: now },
          new Date(now.getTime() - ttlMs),
          new Date(now.getTime() - abandonAfterMs),
        );
        if (held === null) {
          let settle = () => {};
          const finished = new Promise<void>((resolve) => {
            settle = resolve;
          });
          running.set(slot(userId, key), { done: finished, settle });
          claims.set(request, { userId, key });
          return;
        }
        if (held.fingerprint !== fingerprint) {
          throw new AppError(
            'idempotency_key_reused',
            `${FIELD}: this key was already used for a different request; use a new key for a new action`,
            { errors: [{ field: FIELD, message: 'already used for a different request' }] },
          );
        }
        if (held.statusCode !== IN_PROGRESS) {
          reply.header('idempotent-replayed', 'true').status(held.statusCode);
          return reply.send(held.response);
        }
        const other = running.get(slot(userId, key));
        if (other === undefined || attempt > 0) {
          throw new AppError(
            'idempotency_key_in_use',
            `${FIELD}: a request with this key is still in progress; retry to get its answer`,
            { errors: [{ field: FIELD, message: 'a request with this key is in progress' }], retryAfterS: 1 },
          );
        }
        await other.done;
      }
    });

    /** Keeps a successful answer for the key, or frees the key; then wakes requests waiting for it. */
    const finish = (request: FastifyRequest, statusCode: number, payload: unknown) => {
      const claim = claims.get(request);
      if (claim === undefined) return;
      claims.delete(request);
      const id = slot(claim.userId, claim.key);
      try {
        const body = statusCode >= 200 && statusCode < 300 ? jsonOrUndefined(payload) : undefined;
        if (body !== undefined) {
          repo.complete(claim.userId, claim.key, statusCode, body);
        } else {
          repo.release(claim.userId, claim.key);
        }
      } finally {
        running.get(id)?.settle();
        running.delete(id);
      }
    };

    app.addHook('onSend', async (request, reply, payload) => {
      finish(request, reply.statusCode, payload);
      return payload;
    });
    // Reached without onSend only if sending failed: the key must not stay claimed.
    app.addHook('onResponse', async (request) => finish(request, 500, null));

    const jobs = new PeriodicJobs(clock, app.log);
    app.addHook('onReady', async () => {
      jobs.every('prune idempotency keys', options.pruneEveryMs ?? 3_600_000, () =>
        repo.prune(new Date(clock.now().getTime() - ttlMs)),
      );
    });
    app.addHook('onClose', async () => jobs.stop());
    done();
  },
  { name: 'idempotency', fastify: '5.x', dependencies: ['db'] },
);
