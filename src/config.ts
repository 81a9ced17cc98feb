/**
 * Configuration: parsed once from the environment by one zod schema. A bad variable stops start-up with a
 * single message that names every offending variable, instead of failing later somewhere deep.
 */
import path from 'node:path';
import { z } from 'zod';

const port = z.coerce.number().int().min(0).max(65_535);
// Never z.coerce.boolean(): it turns the string "false" into true.
const flag = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

const envSchema = z.object({
  PORT: port.default(3000),
  HOST: z.string().min(1).default('0.0.0.0'),
  MQTT_PORT: port.default(1883),
  MQTT_HOST: z.string().min(1).optional(),
  DATA_DIR: z.string().min(1).default('./data'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  LOG_PRETTY: flag.default(false),
  ADMIN_PASSWORD: z.string().min(8, 'must be at least 8 characters').optional(),
  PUBLIC_URL: z.url().optional(),
  TRUST_PROXY: flag.default(false),
  TOKEN_TTL_HOURS: z.coerce
    .number()
    .int()
    .min(1)
    .max(24 * 90)
    .default(12),
  MQTT_MAX_CONNECTS_PER_S: z.coerce.number().int().min(1).default(500),
  METRICS_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  // Device health (docs/health.md)
  HEARTBEAT_S: z.coerce.number().int().min(1).default(30),
  SILENT_AFTER_HEARTBEATS: z.coerce.number().int().min(1).default(3),
  TELEMETRY_RETENTION_DAYS: z.coerce.number().int().min(1).default(30),
  HEALTH_MIN_RSSI_DBM: z.coerce.number().default(-100),
  HEALTH_MIN_SUPPLY_V: z.coerce.number().default(11.5),
  HEALTH_MAX_SUPPLY_V: z.coerce.number().default(14.8),
  HEALTH_MAX_AMP_TEMP_C: z.coerce.number().default(70),
  HEALTH_MIN_FIRMWARE: z
    .string()
    .regex(/^\d+(\.\d+){0,2}$/, 'must be a version such as 1.4.0')
    .optional(),
  HEALTH_PLAYBACK_FAILURES: z.coerce.number().int().min(1).default(3),
  ALERT_OFFLINE_AFTER_S: z.coerce.number().int().min(0).default(600),
  ALERT_DEGRADED_AFTER_S: z.coerce.number().int().min(0).default(1800),
  ALERT_WEBHOOK_URL: z.url().optional(),
  ALERT_WEBHOOK_ATTEMPTS: z.coerce.number().int().min(1).max(20).default(6),
});

export type Env = z.input<typeof envSchema>;

export interface Config {
  http: { host: string; port: number; publicUrl: string | undefined; trustProxy: boolean };
  mqtt: { host: string; port: number; maxConnectsPerSecond: number };
  dataDir: string;
  databaseFile: string;
  log: { level: string; pretty: boolean };
  auth: { adminPassword: string | undefined; tokenTtlMs: number };
  metricsToken: string | undefined;
  health: HealthConfig;
  alerts: {
    offlineAfterMs: number;
    degradedAfterMs: number;
    webhookUrl: string | undefined;
    webhookAttempts: number;
  };
}

export interface HealthConfig {
  heartbeatMs: number;
  /** A connected device that sends no telemetry for this long is considered offline (`silent`). */
  silentAfterMs: number;
  telemetryRetentionMs: number;
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
  const dataDir = path.resolve(e.DATA_DIR);
  return {
    http: { host: e.HOST, port: e.PORT, publicUrl: e.PUBLIC_URL, trustProxy: e.TRUST_PROXY },
    mqtt: { host: e.MQTT_HOST ?? e.HOST, port: e.MQTT_PORT, maxConnectsPerSecond: e.MQTT_MAX_CONNECTS_PER_S },
    dataDir,
    databaseFile: path.join(dataDir, 'loa.sqlite'),
    log: { level: e.LOG_LEVEL, pretty: e.LOG_PRETTY },
    auth: { adminPassword: e.ADMIN_PASSWORD, tokenTtlMs: e.TOKEN_TTL_HOURS * 3_600_000 },
    metricsToken: e.METRICS_TOKEN,
    health: {
      heartbeatMs: e.HEARTBEAT_S * 1000,
      silentAfterMs: e.HEARTBEAT_S * e.SILENT_AFTER_HEARTBEATS * 1000,
      telemetryRetentionMs: e.TELEMETRY_RETENTION_DAYS * 86_400_000,
      thresholds: {
        minRssiDbm: e.HEALTH_MIN_RSSI_DBM,
        minSupplyVoltage: e.HEALTH_MIN_SUPPLY_V,
        maxSupplyVoltage: e.HEALTH_MAX_SUPPLY_V,
        maxAmpTempC: e.HEALTH_MAX_AMP_TEMP_C,
        minFirmware: e.HEALTH_MIN_FIRMWARE,
        playbackFailures: e.HEALTH_PLAYBACK_FAILURES,
      },
    },
    alerts: {
      offlineAfterMs: e.ALERT_OFFLINE_AFTER_S * 1000,
      degradedAfterMs: e.ALERT_DEGRADED_AFTER_S * 1000,
      webhookUrl: e.ALERT_WEBHOOK_URL,
      webhookAttempts: e.ALERT_WEBHOOK_ATTEMPTS,
    },
  };
}
