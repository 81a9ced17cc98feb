/**
 * Configuration: parsed once from the environment by one zod schema. A bad variable stops start-up with a
 * single message that names every offending variable, instead of failing later somewhere deep.
 */
import { isIP } from 'node:net';
import path from 'node:path';
import { z } from 'zod';

const MP3_BITRATES = [32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320];
const port = z.coerce.number().int().min(0).max(65_535);
// Never z.coerce.boolean(): it turns the string "false" into true.
const flag = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

/**
 * `true`/`false`, or the proxies whose X-Forwarded-For is believed: a comma-separated list of addresses and
 * CIDRs (IPv4 or IPv6), or proxy-addr's names `loopback`, `linklocal`, `uniquelocal`. Anyone else's header
 * is ignored, so a client cannot pick the address the login limits charge.
 */
const PROXY_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal']);
function proxyEntryProblem(entry: string): string | null {
  if (PROXY_NAMES.has(entry)) return null;
  const [address = '', prefix, ...rest] = entry.split('/');
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return `"${entry}" is not an IP address or CIDR`;
  if (prefix === undefined) return null;
  const max = family === 4 ? 32 : 128;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= max
    ? null
    : `"${entry}" has a bad prefix length (0–${max})`;
}
const trustProxy = z.string().transform((value, ctx): boolean | string[] => {
  if (['true', '1'].includes(value)) return true;
  if (['false', '0'].includes(value)) return false;
  const entries = value.split(',').map((e) => e.trim());
  for (const entry of entries) {
    const problem = entry ? proxyEntryProblem(entry) : 'has an empty entry';
    if (problem)
      ctx.addIssue({
        code: 'custom',
        message: `${problem}; expected true, false or a list of addresses/CIDRs`,
      });
  }
  return entries;
});

const envSchema = z.object({
  PORT: port.default(3000),
  HOST: z.string().min(1).default('0.0.0.0'),
  // `off`: no plain MQTT listener (the production recommendation once MQTT over TLS is on).
  MQTT_PORT: z.union([z.literal('off'), port]).default(1883),
  // TLS (docs/operations.md): PEM files, the certificate with its full chain. Both or neither.
  TLS_CERT_FILE: z.string().min(1).optional(),
  TLS_KEY_FILE: z.string().min(1).optional(),
  MQTT_TLS_PORT: port.default(8883),
  MQTT_HOST: z.string().min(1).optional(),
  DATA_DIR: z.string().min(1).default('./data'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  LOG_PRETTY: flag.default(false),
  // The same minimum as every password set through the API (users.schemas.ts).
  ADMIN_PASSWORD: z.string().min(10, 'must be at least 10 characters').optional(),
  PUBLIC_URL: z.url().optional(),
  TRUST_PROXY: trustProxy.default(false),
  TOKEN_TTL_HOURS: z.coerce
    .number()
    .int()
    .min(1)
    .max(24 * 90)
    .default(12),
  MQTT_MAX_CONNECTS_PER_S: z.coerce.number().int().min(1).default(500),
  // Broker limits (docs/broker.md). 0 turns a per-address cap off.
  MQTT_MAX_CONNECTS_PER_ADDRESS_PER_S: z.coerce.number().int().min(0).default(20),
  // Both ports together (docs/broker.md); MQTT_MAX_CONNECTIONS_PER_ADDRESS is its former name, still read.
  MAX_CONNECTIONS_PER_ADDRESS: z.coerce.number().int().min(0).optional(),
  MQTT_MAX_CONNECTIONS_PER_ADDRESS: z.coerce.number().int().min(0).optional(),
  // MQTT's own ceiling is 256 MB (a 4-byte remaining length).
  MQTT_MAX_PACKET_KB: z.coerce.number().int().min(1).max(262_143).default(256),
  MQTT_CONNECT_TIMEOUT_S: z.coerce.number().int().min(1).max(120).default(5),
  // An HTTP connection that has not sent its request headers by then is closed (not WebSockets once open).
  HTTP_HEADERS_TIMEOUT_S: z.coerce.number().int().min(1).max(300).default(10),
  METRICS_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  // Below Docker's default stop grace period (10 s), after which the process is killed mid-write.
  SHUTDOWN_TIMEOUT_S: z.coerce.number().int().min(1).max(600).default(8),
  // Device health (docs/health.md)
  HEARTBEAT_S: z.coerce.number().int().min(1).default(30),
  SILENT_AFTER_HEARTBEATS: z.coerce.number().int().min(1).default(3),
  TELEMETRY_RETENTION_DAYS: z.coerce.number().int().min(1).default(30),
  // Raw telemetry messages are kept this long, then only their 5-minute roll-ups (docs/health.md).
  TELEMETRY_RAW_HOURS: z.coerce
    .number()
    .int()
    .min(1)
    .max(24 * 366)
    .default(48),
  // Retention of what else grows without bound (docs/operations.md).
  COMMAND_RETENTION_DAYS: z.coerce.number().int().min(1).default(90),
  PRESENCE_RETENTION_DAYS: z.coerce.number().int().min(1).default(90),
  ALERT_RETENTION_DAYS: z.coerce.number().int().min(1).default(365),
  AUDIT_RETENTION_DAYS: z.coerce.number().int().min(1).default(730),
  HEALTH_MIN_RSSI_DBM: z.coerce.number().default(-100),
  HEALTH_MIN_SUPPLY_V: z.coerce.number().default(11.5),
  HEALTH_MAX_SUPPLY_V: z.coerce.number().default(14.8),
  HEALTH_MAX_AMP_TEMP_C: z.coerce.number().default(70),
  HEALTH_MIN_FIRMWARE: z
    .string()
    .regex(/^\d+(\.\d+){0,2}$/, 'must be a version such as 1.4.0')
    .optional(),
  HEALTH_PLAYBACK_FAILURES: z.coerce.number().int().min(1).default(3),
  // Schedules and the playback log (docs/schedules.md)
  MEDIA_LEAD_S: z.coerce.number().int().min(0).max(600).default(60),
  PLAYBACK_LOG_RETENTION_DAYS: z.coerce.number().int().min(1).default(400),
  ALERT_OFFLINE_AFTER_S: z.coerce.number().int().min(0).default(600),
  ALERT_DEGRADED_AFTER_S: z.coerce.number().int().min(0).default(1800),
  ALERT_WEBHOOK_URL: z.url().optional(),
  ALERT_WEBHOOK_ATTEMPTS: z.coerce.number().int().min(1).max(20).default(10),
  // Alert events per webhook request: a province-wide outage makes a handful of calls, not thousands.
  ALERT_WEBHOOK_BATCH_MAX: z.coerce.number().int().min(1).max(10_000).default(1000),
  // HMAC key signing each webhook request (docs/health.md); long enough not to be guessed.
  ALERT_WEBHOOK_SECRET: z.string().min(16, 'must be at least 16 characters').optional(),
  // Media and programmes (docs/programmes.md)
  MEDIA_MAX_MB: z.coerce.number().int().min(1).max(4096).default(200),
  MEDIA_MAX_DURATION_S: z.coerce
    .number()
    .int()
    .min(1)
    .max(24 * 3600)
    .default(7200),
  // The constant bitrates an MP3 encoder offers at 44.1 kHz mono.
  MEDIA_BITRATE_KBPS: z.coerce
    .number()
    .int()
    .refine((v) => MP3_BITRATES.includes(v), `must be one of ${MP3_BITRATES.join(', ')}`)
    .default(64),
  // EBU R128 integrated loudness; loudnorm accepts -70 to -5.
  MEDIA_LOUDNESS_LUFS: z.coerce.number().min(-70).max(-5).default(-16),
  MEDIA_URL_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  FFMPEG_PATH: z.string().min(1).optional(),
  FFPROBE_PATH: z.string().min(1).optional(),
  ESPEAK_NG_PATH: z.string().min(1).optional(),
  TTS_COMMAND: z.string().min(1).optional(),
  // Emergencies (docs/emergency.md)
  EMERGENCY_ATTENTION_MEDIA_ID: z
    .string()
    .regex(/^med_[0-9a-z]{20}$/, 'must be a media id such as med_…')
    .optional(),
  // The relay probe never reaches loopback or private addresses unless this allows it (docs/programmes.md).
  RELAY_PROBE_PRIVATE_NETWORKS: flag.default(false),
  // Scheduled backups into DATA_DIR/backups (docs/operations.md). 0 minutes turns them off.
  BACKUP_EVERY_MIN: z.coerce.number().int().min(0).max(525_600).default(1440),
  BACKUP_KEEP: z.coerce.number().int().min(1).max(10_000).default(7),
});

export type Env = z.input<typeof envSchema>;

export interface Config {
  http: {
    host: string;
    port: number;
    publicUrl: string | undefined;
    trustProxy: boolean | string[];
    headersTimeoutMs: number;
  };
  mqtt: {
    host: string;
    /** The plain MQTT listener; null: off (MQTT_PORT=off). */
    port: number | null;
    /** MQTT over TLS; used only when `tls` is set. */
    tlsPort: number;
    maxConnectsPerSecond: number;
    maxConnectsPerAddressPerSecond: number;
    /** Counted by the broker over every port together, the HTTP one included. */
    maxConnectionsPerAddress: number;
    maxPacketBytes: number;
    connectTimeoutMs: number;
  };
  /** Certificate and key for HTTPS/WSS and MQTT over TLS; null: plain HTTP and MQTT (development). */
  tls: { certFile: string; keyFile: string } | null;
  dataDir: string;
  databaseFile: string;
  /** How long what grows is kept before it is pruned (src/modules/system/retention.ts). */
  retention: {
    commandDeliveriesMs: number;
    presenceTransitionsMs: number;
    resolvedAlertsMs: number;
    auditMs: number;
  };
  log: { level: string; pretty: boolean };
  auth: { adminPassword: string | undefined; tokenTtlMs: number };
  metricsToken: string | undefined;
  /** A graceful shutdown that takes longer than this is cut short (exit 1). */
  shutdownTimeoutMs: number;
  health: HealthConfig;
  schedules: {
    /** How early a play of a file is sent, with `startAt`, so devices download it before the slot. */
    mediaLeadMs: number;
    playbackLogRetentionMs: number;
  };
  media: MediaConfig;
  /** Whether saving a relay may probe an address on a loopback, private or other special network. */
  relayProbePrivateNetworks: boolean;
  tts: {
    /** An operator's own engine: a command template reading text on stdin and writing WAV (docs/programmes.md). */
    command: string | undefined;
    /** eSpeak NG binary to use instead of looking for Debian's; the bundled WebAssembly build otherwise. */
    espeakPath: string | undefined;
  };
  emergencies: {
    /** A media item played as the attention signal instead of the built-in 853/960 Hz tone. */
    attentionMediaId: string | undefined;
  };
  backups: {
    /** DATA_DIR/backups, shared with the automatic pre-migration backups (which are never pruned). */
    dir: string;
    /** 0: no scheduled backups. */
    everyMs: number;
    keep: number;
  };
  alerts: {
    offlineAfterMs: number;
    degradedAfterMs: number;
    webhookUrl: string | undefined;
    webhookAttempts: number;
    /** Most events in one webhook request. */
    webhookBatchMax: number;
    /** Signs each webhook request (X-Loa-Timestamp, X-Loa-Signature); unset: requests go unsigned. */
    webhookSecret: string | undefined;
  };
}

export interface MediaConfig {
  /** DATA_DIR/media: content-addressed files and the upload temporary folder. */
  dir: string;
  maxUploadBytes: number;
  maxDurationMs: number;
  /** The device format: MP3, mono, 44.1 kHz, this constant bitrate, normalised to loudnessLufs. */
  bitrateKbps: number;
  loudnessLufs: number;
  /** HMAC key of device download URLs; null: a random one kept in DATA_DIR/media-url.secret. */
  urlSecret: string | undefined;
  /** Explicit binaries; unset: the ones shipped by @ffmpeg-installer / @ffprobe-installer. */
  ffmpegPath: string | undefined;
  ffprobePath: string | undefined;
}

export interface HealthConfig {
  heartbeatMs: number;
  /** A connected device that sends no telemetry for this long is considered offline (`silent`). */
  silentAfterMs: number;
  /** Roll-ups (5-minute min/avg/max) are kept this long. */
  telemetryRetentionMs: number;
  /** Raw telemetry messages are kept this long. */
  telemetryRawMs: number;
  thresholds: HealthThresholds;
}

export interface HealthThresholds {
  minRssiDbm: number;
  minSupplyVoltage: number;
  maxSupplyVoltage: number;
  maxAmpTempC: number;
  minFirmware: string | undefined;
  playbackFailures: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // Empty strings (FOO= in a .env file or compose) mean "unset", not "invalid".
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = envSchema.safeParse(present);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  const problems: string[] = [];
  if ((e.TLS_CERT_FILE === undefined) !== (e.TLS_KEY_FILE === undefined)) {
    problems.push(`  ${e.TLS_CERT_FILE ? 'TLS_KEY_FILE' : 'TLS_CERT_FILE'}: must be set with the other one`);
  }
  if (e.TELEMETRY_RAW_HOURS > e.TELEMETRY_RETENTION_DAYS * 24) {
    problems.push('  TELEMETRY_RAW_HOURS: must not be longer than TELEMETRY_RETENTION_DAYS');
  }
  if (e.MQTT_PORT === 'off' && e.TLS_CERT_FILE === undefined) {
    problems.push(
      '  MQTT_PORT: may be off only with TLS_CERT_FILE and TLS_KEY_FILE (devices need a listener)',
    );
  }
  if (problems.length > 0) throw new ConfigError(`Invalid configuration:\n${problems.join('\n')}`);
  const dataDir = path.resolve(e.DATA_DIR);
  return {
    http: {
      host: e.HOST,
      port: e.PORT,
      publicUrl: e.PUBLIC_URL,
      trustProxy: e.TRUST_PROXY,
      headersTimeoutMs: e.HTTP_HEADERS_TIMEOUT_S * 1000,
    },
    mqtt: {
      host: e.MQTT_HOST ?? e.HOST,
      port: e.MQTT_PORT === 'off' ? null : e.MQTT_PORT,
      tlsPort: e.MQTT_TLS_PORT,
      maxConnectsPerSecond: e.MQTT_MAX_CONNECTS_PER_S,
      maxConnectsPerAddressPerSecond: e.MQTT_MAX_CONNECTS_PER_ADDRESS_PER_S,
      maxConnectionsPerAddress: e.MAX_CONNECTIONS_PER_ADDRESS ?? e.MQTT_MAX_CONNECTIONS_PER_ADDRESS ?? 200,
      maxPacketBytes: e.MQTT_MAX_PACKET_KB * 1024,
      connectTimeoutMs: e.MQTT_CONNECT_TIMEOUT_S * 1000,
    },
    tls:
      e.TLS_CERT_FILE && e.TLS_KEY_FILE
        ? { certFile: path.resolve(e.TLS_CERT_FILE), keyFile: path.resolve(e.TLS_KEY_FILE) }
        : null,
    dataDir,
    databaseFile: path.join(dataDir, 'loa.sqlite'),
    retention: {
      commandDeliveriesMs: e.COMMAND_RETENTION_DAYS * 86_400_000,
      presenceTransitionsMs: e.PRESENCE_RETENTION_DAYS * 86_400_000,
      resolvedAlertsMs: e.ALERT_RETENTION_DAYS * 86_400_000,
      auditMs: e.AUDIT_RETENTION_DAYS * 86_400_000,
    },
    log: { level: e.LOG_LEVEL, pretty: e.LOG_PRETTY },
    auth: { adminPassword: e.ADMIN_PASSWORD, tokenTtlMs: e.TOKEN_TTL_HOURS * 3_600_000 },
    metricsToken: e.METRICS_TOKEN,
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_S * 1000,
    schedules: {
      mediaLeadMs: e.MEDIA_LEAD_S * 1000,
      playbackLogRetentionMs: e.PLAYBACK_LOG_RETENTION_DAYS * 86_400_000,
    },
    health: {
      heartbeatMs: e.HEARTBEAT_S * 1000,
      silentAfterMs: e.HEARTBEAT_S * e.SILENT_AFTER_HEARTBEATS * 1000,
      telemetryRetentionMs: e.TELEMETRY_RETENTION_DAYS * 86_400_000,
      telemetryRawMs: e.TELEMETRY_RAW_HOURS * 3_600_000,
      thresholds: {
        minRssiDbm: e.HEALTH_MIN_RSSI_DBM,
        minSupplyVoltage: e.HEALTH_MIN_SUPPLY_V,
        maxSupplyVoltage: e.HEALTH_MAX_SUPPLY_V,
        maxAmpTempC: e.HEALTH_MAX_AMP_TEMP_C,
        minFirmware: e.HEALTH_MIN_FIRMWARE,
        playbackFailures: e.HEALTH_PLAYBACK_FAILURES,
      },
    },
    media: {
      dir: path.join(dataDir, 'media'),
      maxUploadBytes: e.MEDIA_MAX_MB * 1024 * 1024,
      maxDurationMs: e.MEDIA_MAX_DURATION_S * 1000,
      bitrateKbps: e.MEDIA_BITRATE_KBPS,
      loudnessLufs: e.MEDIA_LOUDNESS_LUFS,
      urlSecret: e.MEDIA_URL_SECRET,
      ffmpegPath: e.FFMPEG_PATH,
      ffprobePath: e.FFPROBE_PATH,
    },
    relayProbePrivateNetworks: e.RELAY_PROBE_PRIVATE_NETWORKS,
    tts: { command: e.TTS_COMMAND, espeakPath: e.ESPEAK_NG_PATH },
    emergencies: { attentionMediaId: e.EMERGENCY_ATTENTION_MEDIA_ID },
    backups: {
      dir: path.join(dataDir, 'backups'),
      everyMs: e.BACKUP_EVERY_MIN * 60_000,
      keep: e.BACKUP_KEEP,
    },
    alerts: {
      offlineAfterMs: e.ALERT_OFFLINE_AFTER_S * 1000,
      degradedAfterMs: e.ALERT_DEGRADED_AFTER_S * 1000,
      webhookUrl: e.ALERT_WEBHOOK_URL,
      webhookAttempts: e.ALERT_WEBHOOK_ATTEMPTS,
      webhookBatchMax: e.ALERT_WEBHOOK_BATCH_MAX,
      webhookSecret: e.ALERT_WEBHOOK_SECRET,
    },
  };
}
