import { describe, expect, it } from 'vitest';
import {
  LIMITS,
  ackSchema,
  commandEnvelopeSchema,
  commandSchema,
  decodePayload,
  logSchema,
  parseDeviceTopic,
  playSourceSchema,
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

  describe('limits', () => {
    const at = '2026-06-01T01:00:00Z';
    const id = (n: number) => 'x'.repeat(n);
    const media = (url: string) => ({ kind: 'media', url, sha256: 'a'.repeat(64), durationMs: 1_000 });

    it('accepts media and stream URLs over http and https only', () => {
      for (const url of ['https://loa.example/a.mp3', 'http://10.0.0.5:8000/live', 'HTTPS://loa.example/b']) {
        expect(playSourceSchema.safeParse(media(url)).success, url).toBe(true);
        expect(playSourceSchema.safeParse({ kind: 'stream', url }).success, url).toBe(true);
      }
      for (const url of [
        'file:///etc/passwd',
        'javascript:alert(1)',
        'gopher://loa.example/1',
        'ftp://loa.example/a.mp3',
        'data:audio/mpeg;base64,AAAA',
        'rtsp://camera/stream',
      ]) {
        const result = playSourceSchema.safeParse({ kind: 'stream', url });
        expect(result.success, url).toBe(false);
        expect(result.error?.issues[0]?.message).toBe('must be an http or https URL');
        expect(playSourceSchema.safeParse(media(url)).success, url).toBe(false);
      }
    });

    it('refuses URLs with whitespace at either end or a control character anywhere', () => {
      const message = 'must not start or end with whitespace or contain control characters';
      for (const url of [
        ' https://loa.example/a.mp3',
        'https://loa.example/a.mp3 ',
        '\thttps://loa.example/a.mp3',
        'https://loa.example/a.mp3\n',
        '\u00a0https://loa.example/a.mp3',
        '\ufeffhttps://loa.example/a.mp3',
        'https://loa.example/a.mp3\u3000',
        'https://loa.exa\nmple/a.mp3',
        'https://loa.example/a\u0000.mp3',
        'https://loa.example/a.mp3\u007f',
        'https://loa.example/a\u0085.mp3',
        '\u0001https://loa.example/a.mp3',
      ]) {
        const stream = playSourceSchema.safeParse({ kind: 'stream', url });
        expect(stream.success, JSON.stringify(url)).toBe(false);
        expect(stream.error?.issues).toMatchObject([{ path: ['url'], message }]);
        expect(playSourceSchema.safeParse(media(url)).success, JSON.stringify(url)).toBe(false);
      }
      // What is accepted goes to devices exactly as written, Vietnamese and inner spaces included.
      for (const url of ['https://loa.example/bản tin sáng.mp3', 'http://10.0.0.5:8000/Đài xã/live']) {
        expect(playSourceSchema.parse({ kind: 'stream', url })).toEqual({ kind: 'stream', url });
      }
      expect(playSourceSchema.safeParse({ kind: 'stream', url: '' }).error?.issues[0]?.message).toBe(
        'must be an http or https URL',
      );
    });

    it('bounds URLs at 2,048 characters', () => {
      const url = (length: number) =>
        `https://loa.example/${'a'.repeat(length - 'https://loa.example/'.length)}`;
      expect(playSourceSchema.safeParse({ kind: 'stream', url: url(LIMITS.url) }).success).toBe(true);
      expect(playSourceSchema.safeParse({ kind: 'stream', url: url(LIMITS.url + 1) }).success).toBe(false);
    });

    it('bounds ids at 64 characters in commands, acks, state and log entries', () => {
      const play = (commandId: string, sessionId: string) => ({
        id: commandId,
        type: 'play',
        issuedAt: at,
        priority: 'normal',
        params: { sessionId, source: media('https://loa.example/a.mp3') },
      });
      expect(commandSchema.safeParse(play(id(64), id(64))).success).toBe(true);
      expect(commandSchema.safeParse(play(id(65), 's')).success).toBe(false);
      expect(commandSchema.safeParse(play('c', id(65))).success).toBe(false);
      const stop = { id: 'c', type: 'stop', issuedAt: at, priority: 'emergency' };
      expect(commandSchema.safeParse({ ...stop, params: { sessionId: id(64) } }).success).toBe(true);
      expect(commandSchema.safeParse({ ...stop, params: { sessionId: id(65) } }).success).toBe(false);
      expect(commandEnvelopeSchema.safeParse({ id: id(65), type: 'play' }).success).toBe(false);
      expect(commandEnvelopeSchema.safeParse({ id: 'c', type: id(65) }).success).toBe(false);

      expect(ackSchema.safeParse({ id: id(64), status: 'done', at }).success).toBe(true);
      expect(ackSchema.safeParse({ id: id(65), status: 'done', at }).success).toBe(false);

      const playing = { sessionId: 's', commandId: 'c', priority: 'normal', startedAt: at, positionMs: 0 };
      const state = (p: object) => ({ firmware: '1.4.2', volume: 50, playing: p });
      expect(stateSchema.safeParse(state(playing)).success).toBe(true);
      expect(stateSchema.safeParse(state({ ...playing, sessionId: id(65) })).success).toBe(false);
      expect(stateSchema.safeParse(state({ ...playing, commandId: id(65) })).success).toBe(false);
      expect(stateSchema.safeParse(state({ ...playing, sessionId: '' })).success).toBe(false);

      const entry = { seq: 1, sessionId: 's', commandId: 'c', event: 'started', at };
      expect(logSchema.safeParse({ ...entry, sessionId: id(64), commandId: id(64) }).success).toBe(true);
      expect(logSchema.safeParse({ ...entry, sessionId: id(65) }).success).toBe(false);
      expect(logSchema.safeParse({ ...entry, commandId: id(65) }).success).toBe(false);
    });

    it('bounds reasons at 500 characters and the firmware version at 64, Vietnamese counted as characters', () => {
      const reason = 'lỗi tải tệp '.repeat(50).slice(0, LIMITS.reason);
      expect(reason).toHaveLength(500);
      const entry = { seq: 1, sessionId: 's', commandId: 'c', event: 'failed', at };
      expect(logSchema.safeParse({ ...entry, reason }).success).toBe(true);
      expect(logSchema.safeParse({ ...entry, reason: `${reason}x` }).success).toBe(false);
      // The 10 MB log entry a probe sent is refused, not logged or stored.
      expect(decodePayload(logSchema, JSON.stringify({ ...entry, reason: 'x'.repeat(10_000_000) })).ok).toBe(
        false,
      );
      expect(ackSchema.safeParse({ id: 'c', status: 'failed', reason: `${reason}x`, at }).success).toBe(
        false,
      );
      expect(stateSchema.safeParse({ firmware: 'v'.repeat(64), volume: 1, playing: null }).success).toBe(
        true,
      );
      expect(stateSchema.safeParse({ firmware: 'v'.repeat(65), volume: 1, playing: null }).success).toBe(
        false,
      );
    });

    it('keeps priority on stop and volume commands', () => {
      const volume = { id: 'c', type: 'volume', issuedAt: at, params: { level: 10 } };
      expect(commandSchema.safeParse({ ...volume, priority: 'emergency' }).success).toBe(true);
      expect(commandSchema.safeParse(volume).success).toBe(false);
    });
  });
});
