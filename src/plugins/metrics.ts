/**
 * Prometheus metrics at GET /metrics: devices online/offline per top-level area, commands and acks, ack
 * latency, MQTT connections and traffic, HTTP request durations, and the process itself (CPU, memory,
 * event-loop lag). The endpoint exists only when METRICS_TOKEN is set and answers only to that token.
 *
 * Label values come from closed sets (command types, priorities, ack statuses, protocol channels, route
 * patterns, top-level areas): a label per device, command or raw URL would make one time series per value
 * and exhaust Prometheus' memory at province scale.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import fp from 'fastify-plugin';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { AppError } from '../errors.js';
import {
  ACK_STATUSES,
  COMMAND_TYPES,
  DEVICE_PUBLISH_CHANNELS,
  PRIORITIES,
  type AckStatus,
} from '../protocol/index.js';
import { bearerToken } from './auth.js';
import { REFUSAL_REASONS, type RefusalReason } from './broker.js';

// The `channel` label: a device → server channel of the protocol, or `other` for anything else.
const PROTOCOL_CHANNELS = new Set<string>(DEVICE_PUBLISH_CHANNELS);
const MQTT_CHANNELS = [...DEVICE_PUBLISH_CHANNELS, 'other'];
const channelLabel = (channel: string) => (PROTOCOL_CHANNELS.has(channel) ? channel : 'other');
// Device events are the protocol channels plus what the broker itself reports about a device.
const DEVICE_EVENT_CHANNELS = [...DEVICE_PUBLISH_CHANNELS, 'ready', 'online', 'offline', 'other'];
const DEVICE_EVENT_SET = new Set<string>(DEVICE_EVENT_CHANNELS);
const eventLabel = (channel: string) => (DEVICE_EVENT_SET.has(channel) ? channel : 'other');
// The `writer` label: the database writers that queue what devices say and retry what fails: command
// acks, the playback log, presence transitions, telemetry samples (src/db/batch-writer.ts), and the live
// device status the health service rewrites from memory (retried, never dropped).
const BATCH_WRITERS = ['acks', 'playback', 'presence', 'telemetry', 'device_status', 'other'];
const writerLabel = (writer: string) => (BATCH_WRITERS.includes(writer) ? writer : 'other');
/** The `table` label: the tables src/modules/system/retention.ts prunes. */
export const RETENTION_TABLES = [
  'command_deliveries',
  'presence_transitions',
  'alerts',
  'audit_log',
] as const;
export type RetentionTable = (typeof RETENTION_TABLES)[number];

export interface TopAreaDevices {
  areaId: string;
  areaName: string;
  online: number;
  offline: number;
}

/** Read at scrape time, so the gauges are exact when Prometheus looks and cost nothing in between. */
export interface MetricsSources {
  mqttConnections: () => number;
  devicesByTopArea: () => readonly TopAreaDevices[];
  /** When the TLS certificate in use expires; absent without TLS (no series then). */
  tlsCertificateExpiry?: () => Date;
  /** Alert webhook events in the outbox (src/modules/alerts/webhook.ts). */
  alertWebhookEvents?: () => { pending: number; givenUp: number };
}

// A command and its ack cross a 4G link, often with a weak signal at the edge of a commune: from tens of
// milliseconds when all is well to tens of seconds (a `done` waits for the device to act), so 50 ms to 60 s.
const ACK_LATENCY_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60];

// The process metrics (CPU, memory, GC, event-loop lag) describe the process, not an app, and prom-client
// cannot switch their collectors off: each collectDefaultMetrics call leaves an event-loop-delay monitor
// and a GC observer running for good. Tests build many apps in one process, so they are collected once,
// lazily (no work at import time), in a registry of their own that every Metrics adds to its output.
// Their names keep prom-client's standard `process_`/`nodejs_` prefixes, which ready-made dashboards expect.
let processRegistry: Registry | undefined;
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/**
 * The app's metrics, in a registry of its own rather than prom-client's global one: several apps run in
 * one test process and must not count into each other. The recording methods run per MQTT message and
 * per command, so they only increment in memory.
 */
export class Metrics {
  private readonly registry = new Registry();
  private readonly commandsSent: Counter<'type' | 'priority'>;
  private readonly commandTargets: Counter<'type'>;
  private readonly acks: Counter<'status'>;
  private readonly ackLatency: Histogram<'status'>;
  private readonly messagesIn: Counter<'channel'>;
  private readonly messagesOut: Counter;
  private readonly malformed: Counter<'channel'>;
  private readonly deviceEventFailures: Counter<'channel'>;
  private readonly connectionsRefused: Counter<'reason'>;
  private readonly subscriptionsRefused: Counter;
  private readonly batchRetries: Counter<'writer'>;
  private readonly batchDropped: Counter<'writer'>;
  private readonly httpDuration: Histogram<'method' | 'route' | 'status_code'>;
  private readonly dispatchLag: Histogram;
  private readonly backupLastSuccess: Gauge;
  private readonly backupFailures: Counter;
  private readonly webhookRequests: Counter<'outcome'>;
  private readonly webhookGivenUp: Counter;
  private readonly retentionDeleted: Counter<'table'>;

  constructor(sources: MetricsSources) {
    const registers = [this.registry];

    this.commandsSent = new Counter({
      name: 'loa_commands_sent_total',
      help: 'Commands issued, by type and priority.',
      labelNames: ['type', 'priority'],
      registers,
    });
    this.commandTargets = new Counter({
      name: 'loa_command_targets_total',
      help: 'Devices targeted by the commands issued, by command type.',
      labelNames: ['type'],
      registers,
    });
    this.acks = new Counter({
      name: 'loa_command_acks_total',
      help: 'Command acknowledgements received from devices, by status.',
      labelNames: ['status'],
      registers,
    });
    this.ackLatency = new Histogram({
      name: 'loa_command_ack_latency_seconds',
      help: 'Time from sending a command to a device to receiving its acknowledgement, by status.',
      labelNames: ['status'],
      buckets: ACK_LATENCY_BUCKETS_S,
      registers,
    });
    this.messagesIn = new Counter({
      name: 'loa_mqtt_messages_in_total',
      help: 'MQTT messages received from devices, by protocol channel.',
      labelNames: ['channel'],
      registers,
    });
    this.messagesOut = new Counter({
      name: 'loa_mqtt_messages_out_total',
      help: 'MQTT messages published to devices.',
      registers,
    });
    this.malformed = new Counter({
      name: 'loa_mqtt_malformed_payloads_total',
      help: 'Device payloads dropped because they did not match the protocol, by channel.',
      labelNames: ['channel'],
      registers,
    });
    this.deviceEventFailures = new Counter({
      name: 'loa_device_event_failures_total',
      help: 'Device messages whose handling failed (database busy or full, a bug), by protocol channel.',
      labelNames: ['channel'],
      registers,
    });
    this.connectionsRefused = new Counter({
      name: 'loa_mqtt_connections_refused_total',
      help: 'MQTT connections turned away by the broker limits (docs/broker.md), by reason; connections_per_address includes any socket of the HTTP port.',
      labelNames: ['reason'],
      registers,
    });
    this.subscriptionsRefused = new Counter({
      name: 'loa_mqtt_subscriptions_refused_total',
      help: 'MQTT subscriptions refused to devices (any topic but their own cmd topic).',
      registers,
    });
    this.batchRetries = new Counter({
      name: 'loa_db_batch_retries_total',
      help: 'Queued database writes that failed and were scheduled to be tried again, by writer.',
      labelNames: ['writer'],
      registers,
    });
    this.batchDropped = new Counter({
      name: 'loa_db_batch_dropped_items_total',
      help: 'Items of queued database writes dropped, after their last attempt failed or because the queue was full, by writer.',
      labelNames: ['writer'],
      registers,
    });
    // prom-client's default buckets (5 ms to 10 s) suit an API whose requests are short database work.
    this.httpDuration = new Histogram({
      name: 'loa_http_request_duration_seconds',
      help: 'HTTP request durations, by method, route pattern and status code.',
      labelNames: ['method', 'route', 'status_code'],
      registers,
    });

    // Late joins after a restart land in the top buckets; on-time dispatch in the first ones.
    this.dispatchLag = new Histogram({
      name: 'loa_schedule_dispatch_lag_seconds',
      help: 'Time from a scheduled occurrence falling due to its play command being published.',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300],
      registers,
    });

    // Set when a scheduled backup succeeds (or one is found on disk at start); 0 until then, so an alert on
    // `time() - loa_backup_last_success_timestamp_seconds > …` also fires when there has never been one.
    this.backupLastSuccess = new Gauge({
      name: 'loa_backup_last_success_timestamp_seconds',
      help: 'Unix time of the newest good scheduled database backup in DATA_DIR/backups.',
      registers,
    });
    this.backupFailures = new Counter({
      name: 'loa_backup_failures_total',
      help: 'Scheduled database backups that failed (nothing was kept under a backup name).',
      registers,
    });
    this.retentionDeleted = new Counter({
      name: 'loa_retention_rows_deleted_total',
      help: 'Rows deleted by the retention job because they outlived their retention period, by table.',
      labelNames: ['table'],
      registers,
    });
    for (const table of RETENTION_TABLES) this.retentionDeleted.inc({ table }, 0);

    this.webhookRequests = new Counter({
      name: 'loa_alert_webhook_requests_total',
      help: 'Alert webhook requests (each carrying a batch of events), by outcome.',
      labelNames: ['outcome'],
      registers,
    });
    this.webhookGivenUp = new Counter({
      name: 'loa_alert_webhook_events_given_up_total',
      help: 'Alert webhook events given up after ALERT_WEBHOOK_ATTEMPTS failed requests.',
      registers,
    });

    // The gauges live in the registry and fill themselves at scrape time: nothing here keeps a reference.
    new Gauge({
      name: 'loa_mqtt_connections',
      help: 'Open MQTT connections.',
      registers,
      collect() {
        this.set(sources.mqttConnections());
      },
    });
    new Gauge({
      name: 'loa_devices',
      help: 'Devices per top-level area (province), by connection state.',
      labelNames: ['top_area_id', 'top_area', 'state'],
      registers,
      collect() {
        // Reset first, or a deleted or renamed area would keep reporting its last counts for ever.
        this.reset();
        for (const area of sources.devicesByTopArea()) {
          const labels = { top_area_id: area.areaId, top_area: area.areaName };
          this.set({ ...labels, state: 'online' }, area.online);
          this.set({ ...labels, state: 'offline' }, area.offline);
        }
      },
    });

    new Gauge({
      name: 'loa_alert_webhook_events',
      help: 'Alert webhook events in the outbox: pending (waiting or being retried) and given_up (kept 30 days).',
      labelNames: ['state'],
      registers,
      collect() {
        const events = sources.alertWebhookEvents?.() ?? { pending: 0, givenUp: 0 };
        this.set({ state: 'pending' }, events.pending);
        this.set({ state: 'given_up' }, events.givenUp);
      },
    });

    const tlsExpiry = sources.tlsCertificateExpiry;
    if (tlsExpiry) {
      // Follows reloads: `loa_tls_certificate_expiry_timestamp_seconds - time() < 14 * 86400` alerts on a
      // renewal that did not happen (or was not picked up).
      new Gauge({
        name: 'loa_tls_certificate_expiry_timestamp_seconds',
        help: 'Unix time at which the TLS certificate in use (TLS_CERT_FILE) expires.',
        registers,
        collect() {
          this.set(tlsExpiry().getTime() / 1000);
        },
      });
    }

    // Series of the closed label sets exist at 0 from the start, so that rate() and alerts see the first
    // event instead of a series appearing out of nowhere.
    for (const type of COMMAND_TYPES) {
      this.commandTargets.inc({ type }, 0);
      for (const priority of PRIORITIES) this.commandsSent.inc({ type, priority }, 0);
    }
    for (const status of ACK_STATUSES) {
      this.acks.inc({ status }, 0);
      this.ackLatency.zero({ status });
    }
    for (const channel of MQTT_CHANNELS) {
      this.messagesIn.inc({ channel }, 0);
      this.malformed.inc({ channel }, 0);
    }
    for (const channel of DEVICE_EVENT_CHANNELS) this.deviceEventFailures.inc({ channel }, 0);
    for (const reason of REFUSAL_REASONS) this.connectionsRefused.inc({ reason }, 0);
    for (const outcome of ['delivered', 'failed']) this.webhookRequests.inc({ outcome }, 0);
    for (const writer of BATCH_WRITERS) {
      this.batchRetries.inc({ writer }, 0);
      this.batchDropped.inc({ writer }, 0);
    }
  }

  /** `type` and `priority` come from the closed enums the API validates, which bounds their series. */
  commandSent(type: string, priority: string, targets: number): void {
    this.commandsSent.inc({ type, priority });
    this.commandTargets.inc({ type }, targets);
  }

  occurrenceDispatched(lagMs: number): void {
    this.dispatchLag.observe(Math.max(0, lagMs) / 1000);
  }

  backupSucceeded(at: Date): void {
    this.backupLastSuccess.set(at.getTime() / 1000);
  }

  backupFailed(): void {
    this.backupFailures.inc();
  }

  retentionRowsDeleted(table: RetentionTable, rows: number): void {
    if (rows > 0) this.retentionDeleted.inc({ table }, rows);
  }

  alertWebhookRequest(outcome: 'delivered' | 'failed'): void {
    this.webhookRequests.inc({ outcome });
  }

  alertWebhookEventsGivenUp(events: number): void {
    this.webhookGivenUp.inc(events);
  }

  /** `latencyMs` is null when the caller does not know when the command was sent: counted, not timed. */
  ackRecorded(status: AckStatus, latencyMs: number | null): void {
    this.acks.inc({ status });
    if (latencyMs !== null) this.ackLatency.observe({ status }, latencyMs / 1000);
  }

  /** Any channel outside the protocol counts as `other`, so a stray topic cannot add series. */
  mqttMessageIn(channel: string): void {
    this.messagesIn.inc({ channel: channelLabel(channel) });
  }

  mqttMessagesOut(count: number): void {
    this.messagesOut.inc(count);
  }

  malformedPayload(channel: string): void {
    this.malformed.inc({ channel: channelLabel(channel) });
  }

  /**
   * A device event handler threw; the event is lost but the process lives on. `channel` is a protocol
   * channel or `ready`/`online`/`offline`; anything else counts as `other`.
   */
  deviceEventFailed(channel: string): void {
    this.deviceEventFailures.inc({ channel: eventLabel(channel) });
  }

  mqttConnectionRefused(reason: RefusalReason): void {
    this.connectionsRefused.inc({ reason });
  }

  mqttSubscriptionRefused(): void {
    this.subscriptionsRefused.inc();
  }

  batchWriteRetried(writer: string): void {
    this.batchRetries.inc({ writer: writerLabel(writer) });
  }

  batchWriteDropped(writer: string, items: number): void {
    this.batchDropped.inc({ writer: writerLabel(writer) }, items);
  }

  /** `route` must be a route pattern (`/api/v1/devices/:id`), never a raw URL: one series per id otherwise. */
  httpRequest(method: string, route: string, statusCode: number, durationMs: number): void {
    this.httpDuration.observe({ method, route, status_code: String(statusCode) }, durationMs / 1000);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text exposition of the process metrics and this app's. */
  async render(): Promise<string> {
    return Registry.merge([processMetrics(), this.registry]).metrics();
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics;
  }
}

export interface MetricsOptions extends MetricsSources {
  /** METRICS_TOKEN; without one there is no /metrics route at all. */
  token: string | undefined;
}

// Both sides are hashed to a fixed length first: timingSafeEqual needs equal lengths, and comparing the
// raw lengths would tell an attacker how long the token is.
const digest = (value: string) => createHash('sha256').update(value, 'utf8').digest();

export default fp<MetricsOptions>(
  (app, options, done) => {
    const metrics = new Metrics(options);
    app.decorate('metrics', metrics);

    // fastify-plugin lifts this hook to the parent, so it times every route of the app. Requests that
    // matched no route share one label: scanners probing random URLs must not create series.
    app.addHook('onResponse', (request, reply, next) => {
      metrics.httpRequest(
        request.method,
        request.routeOptions.url ?? 'unmatched',
        reply.statusCode,
        reply.elapsedTime,
      );
      next();
    });

    // Without a token the route does not exist, so /metrics answers exactly like any unknown URL.
    const token = options.token;
    if (token) {
      const expected = digest(token);
      app.get(
        '/metrics',
        // Public for the API's bearer-token scheme: the metrics token is checked here instead.
        { config: { public: true }, schema: { hide: true } },
        async (request, reply) => {
          const given = bearerToken(request);
          if (given === null || !timingSafeEqual(digest(given), expected)) {
            throw new AppError('unauthenticated', 'Send "Authorization: Bearer <METRICS_TOKEN>"');
          }
          return reply.type(metrics.contentType).send(await metrics.render());
        },
      );
    }
    done();
  },
  { name: 'metrics', fastify: '5.x' },
);
