/**
 * The few Loa HTTP API calls the simulator needs: log in, create areas, create devices (whose secret the
 * API shows once, so it is returned here for the caller to keep).
 */
import { z } from 'zod';

export type DeviceKind = 'station' | 'cluster';
export type AreaLevel = 'province' | 'district' | 'commune' | 'hamlet';

/** What a simulated device needs to connect. `id` is the MQTT clientId and username. */
export interface DeviceCredentials {
  id: string;
  username: string;
  password: string;
  name?: string;
  kind?: DeviceKind;
  areaId?: string;
}

/** An API error, from the problem+json body the server answers with. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string | undefined,
    readonly code: string | undefined,
  ) {
    super(`HTTP ${status} ${title}${detail ? `: ${detail}` : ''}${code ? ` [${code}]` : ''}`);
  }
}

const problemSchema = z.object({
  title: z.string().optional(),
  detail: z.string().optional(),
  code: z.string().optional(),
});
const loginSchema = z.object({ token: z.string().min(1) });
const createdSchema = z.object({ id: z.string().min(1) });
const deviceCreatedSchema = z.object({
  id: z.string().min(1),
  name: z.string(),
  credentials: z.object({
    clientId: z.string().min(1),
    username: z.string().min(1),
    password: z.string().min(1),
  }),
});

/** Trims a trailing slash so `${api}/api/v1/...` never has two. */
function base(api: string): string {
  return api.replace(/\/+$/, '');
}

async function request<T>(
  api: string,
  path: string,
  init: { method: 'GET' | 'POST'; token?: string; body?: unknown },
  schema: z.ZodType<T>,
): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  if (init.body !== undefined) headers['content-type'] = 'application/json; charset=utf-8';
  const response = await fetch(`${base(api)}${path}`, {
    method: init.method,
    headers,
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
  const text = await response.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!response.ok) {
    const problem = problemSchema.safeParse(json);
    const p = problem.success ? problem.data : {};
    throw new ApiError(
      response.status,
      p.title ?? response.statusText,
      p.detail ?? (problem.success ? undefined : text.slice(0, 200)),
      p.code,
    );
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    throw new Error(
      `${init.method} ${path}: unexpected response: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  }
  return parsed.data;
}

/** Logs in and returns the bearer token. */
export async function login(api: string, username: string, password: string): Promise<string> {
  const { token } = await request(
    api,
    '/api/v1/auth/login',
    { method: 'POST', body: { username, password } },
    loginSchema,
  );
  return token;
}

/** Creates an area and returns its id. */
export async function createArea(
  api: string,
  token: string,
  area: { name: string; level: AreaLevel; parentId?: string },
): Promise<string> {
  const { id } = await request(api, '/api/v1/areas', { method: 'POST', token, body: area }, createdSchema);
  return id;
}

/** Creates one device and returns its credentials (the secret is shown only in this answer). */
export async function createDevice(
  api: string,
  token: string,
  device: { name: string; kind: DeviceKind; areaId: string },
): Promise<DeviceCredentials> {
  const created = await request(
    api,
    '/api/v1/devices',
    { method: 'POST', token, body: device },
    deviceCreatedSchema,
  );
  return {
    id: created.credentials.clientId,
    username: created.credentials.username,
    password: created.credentials.password,
    name: created.name,
    kind: device.kind,
    areaId: device.areaId,
  };
}

/** Whether a device exists (and is visible to the caller); false on 404. */
export async function deviceExists(api: string, token: string, id: string): Promise<boolean> {
  try {
    await request(api, `/api/v1/devices/${encodeURIComponent(id)}`, { method: 'GET', token }, createdSchema);
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return false;
    throw error;
  }
}

/** Provisioning stopped on an error; the devices created before it are in `created` (their secrets too). */
export class ProvisionError extends Error {
  override name = 'ProvisionError';
  constructor(
    cause: unknown,
    readonly created: DeviceCredentials[],
  ) {
    super(
      `provisioning stopped after ${created.length} device(s): ${cause instanceof Error ? cause.message : String(cause)}`,
      {
        cause,
      },
    );
  }
}

export interface ProvisionOptions {
  api: string;
  token: string;
  areaId: string;
  count: number;
  /** Device names are `${namePrefix} 001`, `${namePrefix} 002`, … */
  namePrefix: string;
  kind: DeviceKind;
  /** Requests in flight at once. Default 20. */
  concurrency?: number;
  /** Called after each device is created, for progress reports. */
  onDevice?: (device: DeviceCredentials, createdSoFar: number) => void;
}

/**
 * Creates `count` devices in an area. Stops at the first error and throws a ProvisionError that still
 * carries the credentials of the devices already created, since the API will never show those secrets again.
 */
export async function provisionDevices(options: ProvisionOptions): Promise<DeviceCredentials[]> {
  const { api, token, areaId, count, namePrefix, kind } = options;
  const width = String(count).length;
  const created: DeviceCredentials[] = [];
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (next < count && !failure) {
      const index = (next += 1);
      try {
        const device = await createDevice(api, token, {
          name: `${namePrefix} ${String(index).padStart(width, '0')}`,
          kind,
          areaId,
        });
        created.push(device);
        options.onDevice?.(device, created.length);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency ?? 20, count) }, worker));
  if (failure) throw new ProvisionError(failure.error, created);
  return created;
}
