/**
 * What a schedule's targets mean in devices. A schedule names areas and devices; the devices it plays on
 * are read at the moment they are needed (saving, the conflicts check, dispatch), not frozen at save time:
 * a loudspeaker added to a hamlet next month hears that hamlet's bulletins, one moved away no longer does,
 * and one deleted simply drops out.
 */
import type { ScheduleTargets } from '../../db/schema/schedules.js';
import type { AreasService } from '../areas/areas.service.js';
import type { DevicesService } from '../devices/devices.service.js';

export type { ScheduleTargets } from '../../db/schema/schedules.js';

export interface TargetDeps {
  areas: AreasService;
  devices: DevicesService;
}

/**
 * Ids of the devices the targets reach now: the named devices that still exist, and every device under
 * the named areas (by the areas' current paths, so a moved area carries its devices along). No scope check:
 * the caller's scope was checked when the schedule was saved. Sorted, without repeats.
 */
export function resolveTargetDevices(deps: TargetDeps, targets: ScheduleTargets): string[] {
  const ids = new Set<string>();
  for (const device of deps.devices.withPaths(targets.deviceIds ?? [])) ids.add(device.id);
  const paths = deps.areas.byIds(targets.areaIds ?? []).map((a) => a.path);
  if (paths.length > 0) for (const id of deps.devices.idsInSubtrees(paths)) ids.add(id);
  return [...ids].sort();
}
