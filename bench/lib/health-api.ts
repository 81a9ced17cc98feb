/**
 * What bench/health.ts asks of the Loa API before it measures: a realistic area tree with devices in it
 * (provisioned through the real API, as an operator would), a technician to query it as, and the
 * server's own counters from GET /metrics.
 */
import { createArea, createDevice, type DeviceCredentials } from '../../firmware-sim/src/index.js';
import { progress } from './processes.js';

export interface TreeShape {
  districts: number;
  communesPerDistrict: number;
  hamletsPerCommune: number;
}

export interface ProvisionedTree {
  provinceId: string;
  districtIds: string[];
  communes: number;
  hamlets: number;
  /** Credentials of every device, stations first, in provisioning order. */
  credentials: DeviceCredentials[];
  stations: number;
  clusters: number;
}

/**
 * One province → districts → communes → hamlets, as Vietnamese provinces were organised before the 2025
 * merger (and still are in the data of many). Each commune gets one station (its head-end, placed in the
 * commune itself) while devices last; the clusters are spread evenly over the hamlets. With 10,000
 * devices and the default 10 × 10 × 5 shape that is 100 communes of 1 station + 99 clusters, about 20
 * clusters a hamlet: a large but real province. The tree is created sequentially (611 small POSTs),
 * the devices with `concurrency` POSTs in flight.
 */
export async function provisionTree(
  api: string,
  token: string,
  devices: number,
  shape: TreeShape,
  concurrency: number,
): Promise<ProvisionedTree> {
  const provinceId = await createArea(api, token, { name: 'Tỉnh Bench', level: 'province' });
  const districtIds: string[] = [];
  const communeIds: string[] = [];
  const hamletIds: string[] = [];
  for (let d = 1; d <= shape.districts; d += 1) {
    const districtId = await createArea(api, token, {
      name: `Huyện ${d}`,
      level: 'district',
      parentId: provinceId,
    });
    districtIds.push(districtId);
    for (let c = 1; c <= shape.communesPerDistrict; c += 1) {
      const communeId = await createArea(api, token, {
        name: `Xã ${d}.${c}`,
        level: 'commune',
        parentId: districtId,
      });
      communeIds.push(communeId);
      for (let h = 1; h <= shape.hamletsPerCommune; h += 1) {
        hamletIds.push(
          await createArea(api, token, { name: `Thôn ${d}.${c}.${h}`, level: 'hamlet', parentId: communeId }),
        );
      }
    }
  }

  // What to create, decided up front so that names are deterministic whatever order the POSTs finish in.
  const stations = Math.min(devices, communeIds.length);
  const clusters = devices - stations;
  const plan: { name: string; kind: 'station' | 'cluster'; areaId: string }[] = [];
  communeIds
    .slice(0, stations)
    .forEach((areaId, i) => plan.push({ name: `Đài xã ${i + 1}`, kind: 'station', areaId }));
  for (let i = 0; i < clusters; i += 1) {
    // Round robin: hamlet sizes differ by at most one device.
    const hamlet = i % hamletIds.length;
    const areaId = hamletIds[hamlet];
    if (areaId === undefined) throw new Error('no hamlets to place clusters in');
    plan.push({
      name: `Cụm loa ${hamlet + 1}-${Math.floor(i / hamletIds.length) + 1}`,
      kind: 'cluster',
      areaId,
    });
  }

  const credentials: (DeviceCredentials | undefined)[] = new Array<DeviceCredentials | undefined>(
    plan.length,
  );
  let next = 0;
  let done = 0;
  let nextReport = 0.1;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < plan.length; i = next++) {
      const item = plan[i];
      if (!item) break;
      credentials[i] = await createDevice(api, token, item);
      done += 1;
      if (done / plan.length >= nextReport) {
        progress(`provisioned ${Math.round((done / plan.length) * 100)} %`);
        nextReport += 0.1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, plan.length) }, worker));
  return {
    provinceId,
    districtIds,
    communes: communeIds.length,
    hamlets: hamletIds.length,
    credentials: credentials.filter((c): c is DeviceCredentials => c !== undefined),
    stations,
    clusters,
  };
}

/**
 * A technician of the province: the role the health views are for (admins may read them too). Querying
 * as a scoped user rather than as the admin also exercises the area-scope checks every real request pays.
 */
export async function createTechnician(
  api: string,
  adminToken: string,
  areaId: string,
): Promise<{ username: string; password: string }> {
  const user = {
    username: 'bench-technician',
    password: 'bench-technician-password',
    role: 'technician',
    areaId,
  };
  const response = await fetch(`${api}/api/v1/users`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(user),
  });
  if (!response.ok)
    throw new Error(`POST /api/v1/users: HTTP ${response.status}: ${(await response.text()).slice(0, 300)}`);
  return { username: user.username, password: user.password };
}

/** Samples of the Prometheus text exposition, by metric name, each with its labels. */
export type MetricSamples = Map<string, { labels: Record<string, string>; value: number }[]>;

/**
 * GET /metrics, parsed. Returns undefined when the server has no metrics endpoint (404: a build without
 * the metrics plugin, or no METRICS_TOKEN), so the bench can fall back to counting on the device side.
 */
export async function scrapeMetrics(api: string, token: string): Promise<MetricSamples | undefined> {
  const response = await fetch(`${api}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  const text = await response.text();
  if (response.status === 404) return undefined;
  if (!response.ok) throw new Error(`GET /metrics: HTTP ${response.status}: ${text.slice(0, 300)}`);
  return parsePrometheus(text);
}

/** Enough of the text format (version 0.0.4) for prom-client's output: comments, names, labels, values. */
export function parsePrometheus(text: string): MetricSamples {
  const samples: MetricSamples = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match?.[1] || match[3] === undefined) continue;
    const labels: Record<string, string> = {};
    for (const label of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      if (label[1] !== undefined && label[2] !== undefined) labels[label[1]] = label[2];
    }
    const list = samples.get(match[1]) ?? [];
    list.push({ labels, value: Number(match[3]) });
    samples.set(match[1], list);
  }
  return samples;
}

/** The value of the first sample of `name` whose labels include `labels`, or undefined. */
export function metricValue(
  samples: MetricSamples,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  return samples.get(name)?.find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}
