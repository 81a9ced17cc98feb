import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { alertConditions } from '../src/modules/alerts/alerts.service.js';
import { compareVersions, evaluateHealth, type HealthFacts } from '../src/modules/health/health.rules.js';

const thresholds = { ...loadConfig({}).health.thresholds, minFirmware: '1.4.0' };
const healthy: HealthFacts = {
  online: true,
  firmware: '1.4.2',
  playbackFailures: 0,
  telemetry: {
    at: '2026-06-01T00:00:00Z',
    uptimeS: 100,
    rssiDbm: -70,
    supplyVoltage: 12.8,
    onBattery: false,
    ampTempC: 40,
    speakerFault: false,
  },
};

describe('health rules', () => {
  it('is ok when everything is within thresholds', () => {
    expect(evaluateHealth(healthy, thresholds)).toEqual({ health: 'ok', reasons: [] });
  });

  it('explains each degraded condition', () => {
    const result = evaluateHealth(
      {
        ...healthy,
        firmware: '1.3.9',
        telemetry: {
          ...healthy.telemetry!,
          rssiDbm: -110,
          onBattery: true,
          supplyVoltage: 10.9,
          ampTempC: 85,
        },
      },
      thresholds,
    );
    expect(result).toEqual({
      health: 'degraded',
      reasons: ['weak_signal', 'on_battery', 'supply_voltage_low', 'amplifier_hot', 'firmware_outdated'],
    });
    expect(
      evaluateHealth({ ...healthy, telemetry: { ...healthy.telemetry!, supplyVoltage: 16 } }, thresholds)
        .reasons,
    ).toEqual(['supply_voltage_high']);
  });

  it('puts faults first and keeps the degraded reasons', () => {
    const result = evaluateHealth(
      {
        ...healthy,
        online: false,
        playbackFailures: 3,
        telemetry: { ...healthy.telemetry!, speakerFault: true, onBattery: true },
      },
      thresholds,
    );
    expect(result).toEqual({
      health: 'fault',
      reasons: ['offline', 'speaker_fault', 'playback_failures', 'on_battery'],
    });
  });

  it('does not judge what a device did not report', () => {
    expect(
      evaluateHealth({ online: true, firmware: null, playbackFailures: 0, telemetry: null }, thresholds),
    ).toEqual({
      health: 'ok',
      reasons: [],
    });
  });

  it('compares firmware versions numerically', () => {
    expect(compareVersions('1.10.0', '1.9.3')).toBe(1);
    expect(compareVersions('1.4', '1.4.0')).toBe(0);
    expect(compareVersions('2.0.1-beta', '2.0.2')).toBe(-1);
  });
});

describe('alert conditions', () => {
  const t0 = Date.parse('2026-06-01T00:00:00Z');
  const limits = { offlineAfterMs: 600_000, degradedAfterMs: 1_800_000 };
  const base = {
    online: true,
    onlineSince: new Date(t0),
    health: 'ok' as const,
    healthReasons: [],
    healthSince: new Date(t0),
  };

  it('opens offline only after the threshold, and never for a device never seen', () => {
    const offline = { ...base, online: false, health: 'fault' as const, healthReasons: ['offline'] };
    expect(alertConditions(offline, t0 + 599_000, limits).has('offline')).toBe(false);
    expect([...alertConditions(offline, t0 + 600_000, limits)]).toEqual([['offline', ['offline']]]);
    expect(alertConditions({ ...offline, onlineSince: null }, t0 + 86_400_000, limits).size).toBe(0);
  });

  it('opens fault at once for a fault other than offline, degraded only after it lasted', () => {
    const fault = { ...base, health: 'fault' as const, healthReasons: ['speaker_fault', 'on_battery'] };
    expect([...alertConditions(fault, t0, limits)]).toEqual([['fault', ['speaker_fault']]]);
    const degraded = { ...base, health: 'degraded' as const, healthReasons: ['weak_signal'] };
    expect(alertConditions(degraded, t0 + 1_799_000, limits).size).toBe(0);
    expect([...alertConditions(degraded, t0 + 1_800_000, limits)]).toEqual([['degraded', ['weak_signal']]]);
  });
});
