import { describe, expect, it } from 'vitest';
import {
  ackSchema,
  commandSchema,
  decodePayload,
  parseDeviceTopic,
  priorityRank,
  stateSchema,
  telemetrySchema,
  topics,
} from '../src/protocol/index.js';

describe('device protocol v1', () => {
  it('builds and parses device topics', () => {
    expect(topics.cmd('dev_abc')).toBe('loa/v1/devices/dev_abc/cmd');
    expect(parseDeviceTopic('loa/v1/devices/dev_abc/ack')).toEqual({ deviceId: 'dev_abc', channel: 'ack' });
    expect(parseDeviceTopic('loa/v2/devices/dev_abc/ack')).toBeNull();
    expect(parseDeviceTopic('loa/v1/devices/dev_abc/ack/extra')).toBeNull();
    expect(parseDeviceTopic('loa/v1/devices//ack')).toBeNull();
    expect(parseDeviceTopic('$SYS/broker/clients')).toBeNull();
  });

  it('orders priorities normal < priority < emergency', () => {
    expect(priorityRank('normal')).toBeLessThan(priorityRank('priority'));
    expect(priorityRank('priority')).toBeLessThan(priorityRank('emergency'));
  });

  it('accepts a valid play command and ignores unknown fields', () => {
    const result = commandSchema.safeParse({
      id: 'cmd_1',
      type: 'play',
      issuedAt: '2026-06-01T08:00:00+07:00',
      priority: 'emergency',
      vendorExtension: true,
      params: {
        sessionId: 'ses_1',
        source: {
          kind: 'media',
          url: 'https://loa.example/a.mp3',
          sha256: 'a'.repeat(64),
          durationMs: 30_000,
        },
      },
    });
    expect(result.success).toBe(true);
  });

  it('rejects a volume out of range and a media source without checksum', () => {
    const base = { id: 'c', issuedAt: '2026-06-01T01:00:00Z', priority: 'normal' };
    expect(commandSchema.safeParse({ ...base, type: 'volume', params: { level: 101 } }).success).toBe(false);
    expect(
      commandSchema.safeParse({
        ...base,
        type: 'play',
        params: { sessionId: 's', source: { kind: 'media', url: 'https://x/a.mp3', durationMs: 1 } },
      }).success,
    ).toBe(false);
  });

  it('decodes payloads without ever throwing', () => {
    const ack = { id: 'cmd_1', status: 'done', at: '2026-06-01T01:00:00.000Z' };
    expect(decodePayload(ackSchema, Buffer.from(JSON.stringify(ack)))).toEqual({ ok: true, value: ack });
    for (const bad of ['', 'not json', '[]', 'null', '{"id":1}', '{"id":"x","status":"maybe","at":"now"}']) {
      const decoded = decodePayload(ackSchema, Buffer.from(bad));
      expect(decoded.ok).toBe(false);
    }
    expect(decodePayload(ackSchema, Buffer.from([0xff, 0xfe, 0x00])).ok).toBe(false);
  });

  it('keeps Vietnamese text intact through a payload', () => {
    const state = { firmware: '1.4.2-phiên-bản', volume: 70, playing: null };
    const decoded = decodePayload(stateSchema, Buffer.from(JSON.stringify(state), 'utf8'));
    expect(decoded).toEqual({ ok: true, value: state });
  });

  it('validates telemetry field types', () => {
    expect(telemetrySchema.safeParse({ at: '2026-06-01T01:00:00Z', uptimeS: 5, rssiDbm: -71 }).success).toBe(
      true,
    );
    expect(telemetrySchema.safeParse({ at: '2026-06-01T01:00:00Z', uptimeS: 'five' }).success).toBe(false);
  });
});
