/**
 * The Loa API calls bench/emergency.ts makes: provision a district of N loudspeaker clusters, send an
 * emergency, read its delivery counts (GET /api/v1/emergencies/:id) and follow its progress stream
 * (GET /api/v1/emergencies/:id/events), plus the cap on the bench's HTTP connections.
 */
import { performance } from 'node:perf_hooks';
import { z } from 'zod';
import { createArea, provisionDevices, type DeviceCredentials } from '../../firmware-sim/src/index.js';
import { progress } from './processes.js';

/** Devices per commune: a real commune has a few hundred loudspeaker clusters at most. */
export const DEVICES_PER_COMMUNE = 500;

/**
 * One province, one district, communes of at most DEVICES_PER_COMMUNE devices each (even sizes), all
 * provisioned through the real API with 20 requests in flight. The emergency targets the district.
 */
export async function provisionDistrict(
  api: string,
  token: string,
  devices: number,
): Promise<{ districtId: string; communeIds: string[]; credentials: DeviceCredentials[] }> {
  const provinceId = await createArea(api, token, { name: 'Tỉnh Quảng Trị (bench)', level: 'province' });
  const districtId = await createArea(api, token, {
    name: 'Huyện Hải Lăng (bench)',
    level: 'district',
    parentId: provinceId,
  });
  const communes = Math.ceil(devices / DEVICES_PER_COMMUNE);
  const credentials: DeviceCredentials[] = [];
  const communeIds: string[] = [];
  let provisioned = 0;
  let nextReport = 0.1;
  for (let c = 0; c < communes; c += 1) {
    const count = Math.floor(devices / communes) + (c < devices % communes ? 1 : 0);
    const name = `Xã Hải ${String(c + 1).padStart(3, '0')}`;
    const areaId = await createArea(api, token, { name, level: 'commune', parentId: districtId });
    communeIds.push(areaId);
    const created = await provisionDevices({
      api,
      token,
      areaId,
      count,
      namePrefix: `${name} cụm loa`,
      kind: 'cluster',
      concurrency: 20,
      onDevice: () => {
        provisioned += 1;
        if (provisioned / devices >= nextReport) {
          progress(`provisioned ${Math.round((provisioned / devices) * 100)} %`);
          nextReport += 0.1;
        }
      },
    });
    credentials.push(...created);
  }
  return { districtId, communeIds, credentials };
}

/** Delivery counts as the API reports them; every status the contract names, others kept as they come. */
const countsSchema = z.record(z.string(), z.number());
export type EmergencyCounts = Record<string, number>;

const viewSchema = z.object({
  id: z.string(),
  commandId: z.string().nullish(),
  createdAt: z.string(),
  targetCount: z.number(),
  status: z.string(),
  counts: countsSchema,
});
export type EmergencyView = z.infer<typeof viewSchema>;

/** Statuses that mean the device's `done` (or a final failure) is not recorded yet. */
const UNANSWERED = ['queued', 'sent', 'received'] as const;

/** Devices whose final ack the server has not recorded yet (queued, sent, or acked only `received`). */
export const unanswered = (counts: EmergencyCounts): number =>
  UNANSWERED.reduce((sum, status) => sum + (counts[status] ?? 0), 0);

/** Devices the server has not heard from at all yet (queued or sent, not even `received`). */
export const unreceived = (counts: EmergencyCounts): number => (counts.queued ?? 0) + (counts.sent ?? 0);

export class ApiCallError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

const GLOBAL_DISPATCHER = Symbol.for('undici.globalDispatcher.1');
type AgentClass = new (options: { connections: number }) => { close(): Promise<void> };

/** undici's Agent class, taken from the dispatcher Node created for the first fetch (Node does not export it). */
function agentClass(): AgentClass | undefined {
  const current = (globalThis as unknown as Record<symbol, unknown>)[GLOBAL_DISPATCHER];
  const ctor = (current as { constructor?: unknown } | undefined)?.constructor;
  return typeof ctor === 'function' ? (ctor as AgentClass) : undefined;
}

/**
 * The bench's own API calls go through a pool of their own: with thousands of device downloads in flight
 * on the global pool, a poll would otherwise wait for one of them to finish before it could even be sent.
 */
let apiAgent: RequestInit['dispatcher'] | undefined;
const apiInit = (): Pick<RequestInit, 'dispatcher'> => {
  const Agent = agentClass();
  if (apiAgent === undefined && Agent) apiAgent = new Agent({ connections: 8 }) as RequestInit['dispatcher'];
  return apiAgent === undefined ? {} : { dispatcher: apiAgent };
};

async function call<T>(
  api: string,
  token: string,
  method: 'GET' | 'POST',
  urlPath: string,
  body: unknown,
  schema: z.ZodType<T>,
): Promise<T> {
  const response = await fetch(`${api}${urlPath}`, {
    ...apiInit(),
    method,
    headers: {
      authorization: `Bearer ${token}`,
      accept: 'application/json',
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) {
    throw new ApiCallError(
      `${method} ${urlPath}: HTTP ${response.status}: ${text.slice(0, 300)}`,
      response.status,
    );
  }
  return schema.parse(JSON.parse(text));
}

export interface EmergencyBody {
  title: string;
  text: string;
  areaIds: string[];
  hazard?: string;
  riskLevel?: number;
}

/** POST /api/v1/emergencies → 201 with the emergency. */
export function sendEmergency(api: string, token: string, body: EmergencyBody): Promise<EmergencyView> {
  return call(api, token, 'POST', '/api/v1/emergencies', body, viewSchema);
}

/** GET /api/v1/emergencies/:id → the emergency with its delivery counts (and, unread here, every device). */
export function getEmergency(api: string, token: string, id: string): Promise<EmergencyView> {
  return call(api, token, 'GET', `/api/v1/emergencies/${encodeURIComponent(id)}`, undefined, viewSchema);
}

const listSchema = z.object({ items: z.array(viewSchema) });

/**
 * The delivery counts of emergency `id`, read from the history's first page
 * (`GET /api/v1/emergencies?limit=1`: the newest emergency, the bench's latest). It carries the same
 * counts as GET /emergencies/:id without the per-commune figures and the list of devices not reached, so
 * polling it costs the server one grouped count and not N rows: the measurement must not slow the acks it
 * times. Falls back to GET /emergencies/:id if the newest emergency is another one.
 */
export async function emergencyCounts(api: string, token: string, id: string): Promise<EmergencyCounts> {
  const page = await call(api, token, 'GET', '/api/v1/emergencies?limit=1', undefined, listSchema);
  const newest = page.items[0];
  if (newest?.id === id) return newest.counts;
  return (await getEmergency(api, token, id)).counts;
}

/**
 * Whether the server has the emergencies API yet: a POST with an empty body is answered 400 (validation)
 * by a server that has the route, 404 by one that has not.
 */
export async function hasEmergencyRoute(api: string, token: string): Promise<boolean> {
  const response = await fetch(`${api}/api/v1/emergencies`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: '{}',
  });
  await response.arrayBuffer();
  return response.status !== 404;
}

const progressSchema = z.object({ counts: countsSchema, targetCount: z.number().optional() });

export interface EventWatch {
  /** Events received so far, by name (snapshot, progress, end, …). */
  readonly events: Record<string, number>;
  /** performance.now() of the first event whose counts show every device at least `received`. */
  allReceivedAt: number | undefined;
  /** performance.now() of the first event whose counts show no device unanswered; undefined until then. */
  allAckedAt: number | undefined;
  /** Why the stream could not be followed (not 200, cut off), if it could not. */
  error: string | undefined;
  close(): void;
}

/**
 * Follows GET /api/v1/emergencies/:id/events (Server-Sent Events) as an operator's screen would, noting
 * when an event first shows every device answered. A cross-check of the polled figure: the stream is
 * coalesced by the server, so it is late by up to its coalescing interval.
 */
export function watchEvents(api: string, token: string, id: string): EventWatch {
  const abort = new AbortController();
  const watch: EventWatch = {
    events: {},
    allReceivedAt: undefined,
    allAckedAt: undefined,
    error: undefined,
    close: () => abort.abort(),
  };
  const handle = (event: string, data: string): void => {
    watch.events[event] = (watch.events[event] ?? 0) + 1;
    if (watch.allAckedAt !== undefined || (event !== 'snapshot' && event !== 'progress')) return;
    let parsed: z.infer<typeof progressSchema>;
    try {
      parsed = progressSchema.parse(JSON.parse(data));
    } catch {
      watch.error ??= `an unreadable ${event} event: ${data.slice(0, 200)}`;
      return;
    }
    if (watch.allReceivedAt === undefined && unreceived(parsed.counts) === 0)
      watch.allReceivedAt = performance.now();
    if (unanswered(parsed.counts) === 0) watch.allAckedAt = performance.now();
  };
  void (async () => {
    try {
      const response = await fetch(`${api}/api/v1/emergencies/${encodeURIComponent(id)}/events`, {
        ...apiInit(),
        headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
        signal: abort.signal,
      });
      if (!response.ok || !response.body) {
        watch.error = `HTTP ${response.status}`;
        await response.body?.cancel();
        return;
      }
      const decoder = new TextDecoder();
      let buffered = '';
      for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
        buffered += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buffered.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end).replace(/^\r?\n\r?\n/, '');
          let event = 'message';
          const data: string[] = [];
          for (const line of block.split(/\r?\n/)) {
            if (line.startsWith('event:')) event = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          }
          if (data.length > 0 || event !== 'message') handle(event, data.join('\n'));
        }
      }
    } catch (err) {
      if (!abort.signal.aborted) watch.error = err instanceof Error ? err.message : String(err);
    }
  })();
  return watch;
}

/**
 * Caps the connections the global `fetch` opens per origin. Every simulated device downloads with fetch
 * (firmware-sim/src/download.ts), and with N devices connected over MQTT plus up to N downloads in flight
 * the bench process (and the server) would pass the open-file limit at 10,000 devices. Node's fetch uses
 * the dispatcher undici keeps under this symbol (undici's documented setGlobalDispatcher does exactly
 * this); Node does not export undici's Agent, so its class is taken from the dispatcher Node created on
 * the first fetch. Returns false when that is not possible (then nothing is changed).
 */
export function limitFetchConnections(connections: number): boolean {
  const holder = globalThis as unknown as Record<symbol, unknown>;
  const current = holder[GLOBAL_DISPATCHER] as { close?: () => Promise<void> } | undefined;
  const Agent = agentClass();
  if (!Agent) return false;
  holder[GLOBAL_DISPATCHER] = new Agent({ connections });
  // Idle keep-alive sockets of the old dispatcher are closed; it has nothing in flight between rounds.
  void current?.close?.().catch(() => undefined);
  return true;
}
