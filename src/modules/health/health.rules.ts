/**
 * How a device's health is derived from what it reports: a pure function of the facts and the configured
 * thresholds, so it can be tested exhaustively and explained to a technician reason by reason.
 */
import type { HealthThresholds } from '../../config.js';
import type { HealthLevel } from '../../db/schema/index.js';
import type { Telemetry } from '../../protocol/index.js';

/** Reasons, each a word a technician can act on (docs/health.md lists them). */
export const FAULT_REASONS = ['offline', 'speaker_fault', 'playback_failures'] as const;
export const DEGRADED_REASONS = [
  'weak_signal',
  'on_battery',
  'supply_voltage_low',
  'supply_voltage_high',
  'amplifier_hot',
  'firmware_outdated',
] as const;
export type HealthReason = (typeof FAULT_REASONS)[number] | (typeof DEGRADED_REASONS)[number];

export interface HealthFacts {
  online: boolean;
  telemetry: Telemetry | null;
  firmware: string | null;
  playbackFailures: number;
}

export interface Health {
  health: HealthLevel;
  reasons: HealthReason[];
}

/** Compares dotted versions numerically ("1.10.0" > "1.9.3"); a missing part counts as 0. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.+-]/).map((x) => Number.parseInt(x, 10));
  const pb = b.split(/[.+-]/).map((x) => Number.parseInt(x, 10));
  for (let i = 0; i < 3; i++) {
    const x = Number.isFinite(pa[i]) ? pa[i]! : 0;
    const y = Number.isFinite(pb[i]) ? pb[i]! : 0;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

export function evaluateHealth(facts: HealthFacts, t: HealthThresholds): Health {
  const fault: HealthReason[] = [];
  const degraded: HealthReason[] = [];
  const tm = facts.telemetry;

  if (!facts.online) fault.push('offline');
  if (tm?.speakerFault) fault.push('speaker_fault');
  if (facts.playbackFailures >= t.playbackFailures) fault.push('playback_failures');

  if (tm?.rssiDbm !== undefined && tm.rssiDbm < t.minRssiDbm) degraded.push('weak_signal');
  if (tm?.onBattery) degraded.push('on_battery');
  if (tm?.supplyVoltage !== undefined && tm.supplyVoltage < t.minSupplyVoltage)
    degraded.push('supply_voltage_low');
  if (tm?.supplyVoltage !== undefined && tm.supplyVoltage > t.maxSupplyVoltage)
    degraded.push('supply_voltage_high');
  if (tm?.ampTempC !== undefined && tm.ampTempC > t.maxAmpTempC) degraded.push('amplifier_hot');
  if (t.minFirmware && facts.firmware && compareVersions(facts.firmware, t.minFirmware) < 0) {
    degraded.push('firmware_outdated');
  }

  // A fault lists its degraded reasons too: a technician driving out wants to know everything.
  if (fault.length > 0) return { health: 'fault', reasons: [...fault, ...degraded] };
  if (degraded.length > 0) return { health: 'degraded', reasons: degraded };
  return { health: 'ok', reasons: [] };
}
