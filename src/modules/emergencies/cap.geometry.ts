/**
 * Which devices a CAP <area> reaches. Polygons and circles are tested with turf (point-in-polygon by ray
 * casting, great-circle distance by haversine). CAP writes points "lat,lon" (spec §3.2.4) while GeoJSON,
 * and so turf, wants [lon, lat] (RFC 7946 §3.1.1): the swap happens here and only here.
 */
import { booleanPointInPolygon } from '@turf/boolean-point-in-polygon';
import { distance } from '@turf/distance';
import { point, polygon } from '@turf/helpers';
import type { CapArea, CapCircle } from './cap.js';

/** The geocode `valueName` under which Vietnamese administrative codes (province/district/commune) come. */
export const VN_ADMIN = 'VN-ADMIN';

export interface PositionedDevice {
  id: string;
  lat: number | null;
  lon: number | null;
}

const hasPosition = (d: PositionedDevice): d is PositionedDevice & { lat: number; lon: number } =>
  d.lat !== null && d.lon !== null && Number.isFinite(d.lat) && Number.isFinite(d.lon);

/**
 * Ids of the devices inside any polygon or circle of any area. A point on a polygon's edge counts as inside
 * (a loudspeaker on the boundary road warns both sides). Devices without a position never match: they are
 * reached through geocodes (their area) or not at all.
 */
export function matchDevices(areas: readonly CapArea[], devices: readonly PositionedDevice[]): Set<string> {
  const polygons: ReturnType<typeof polygon>[] = areas.flatMap((a) =>
    a.polygons.map((ring) => polygon([ring.map(([lat, lon]) => [lon, lat])])),
  );
  const circles: { centre: ReturnType<typeof point>; radiusKm: number }[] = areas.flatMap((a) =>
    a.circles.map((c: CapCircle) => ({ centre: point([c.lon, c.lat]), radiusKm: c.radiusKm })),
  );
  const matched = new Set<string>();
  if (polygons.length === 0 && circles.length === 0) return matched;
  for (const device of devices) {
    if (!hasPosition(device)) continue;
    const at = point([device.lon, device.lat]);
    const inside =
      polygons.some((p) => booleanPointInPolygon(at, p)) ||
      circles.some((c) => distance(c.centre, at, { units: 'kilometers' }) <= c.radiusKm);
    if (inside) matched.add(device.id);
  }
  return matched;
}

/** The distinct `VN-ADMIN` geocode values of the areas, in order of appearance, to match areas by `code`. */
export function geocodeCodes(areas: readonly CapArea[]): string[] {
  const codes = new Set<string>();
  for (const area of areas) {
    for (const g of area.geocodes)
      if (g.valueName === VN_ADMIN && g.value.trim() !== '') codes.add(g.value.trim());
  }
  return [...codes];
}
