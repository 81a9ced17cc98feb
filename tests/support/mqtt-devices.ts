/**
 * Loudspeakers played by plain MQTT.js clients, for tests that decide exactly what each device answers:
 * registered through the API, brought online and offline on demand, every command they get kept in order.
 */
import type { MqttClient } from 'mqtt';
import type { Clock } from '../../src/lib/clock.js';
import { topics, type AckStatus, type Command } from '../../src/protocol/index.js';
import type { TestApp } from './app.js';
import { connectDevice, end } from './mqtt.js';
import { waitFor } from './wait.js';

export interface MqttDevice {
  id: string;
  name: string;
  credentials: { clientId: string; username: string; password: string };
  client: MqttClient | null;
  /** Every command published to it while online, in order. */
  received: Command[];
}

export class MqttDevices {
  readonly all: MqttDevice[] = [];

  /** `clock` stamps the acks (the app's clock, manual in most tests). */
  constructor(
    private readonly t: TestApp,
    private readonly clock: Clock,
  ) {}

  private get url(): string {
    return `mqtt://127.0.0.1:${this.t.app.broker.port}`;
  }

  async add(areaId: string, name: string): Promise<MqttDevice> {
    const created = await this.t.createDevice(areaId, name);
    const d: MqttDevice = {
      id: created.id,
      name,
      credentials: created.credentials,
      client: null,
      received: [],
    };
    this.all.push(d);
    return d;
  }

  /** Connects and subscribes, and returns once the broker counts it ready for commands. */
  async online(d: MqttDevice): Promise<void> {
    const client = await connectDevice(this.url, d.credentials);
    client.on('message', (_topic, payload) => d.received.push(JSON.parse(payload.toString()) as Command));
    await client.subscribeAsync(topics.cmd(d.id), { qos: 1 });
    d.client = client;
    await waitFor(() => this.t.app.broker.isReady(d.id), `${d.name} ready`);
  }

  async offline(d: MqttDevice): Promise<void> {
    if (d.client) await end(d.client);
    d.client = null;
    await waitFor(() => !this.t.app.broker.isReady(d.id), `${d.name} gone`);
  }

  ack(d: MqttDevice, id: string, status: AckStatus, reason?: string): void {
    d.client?.publish(
      topics.ack(d.id),
      JSON.stringify({ id, status, at: this.clock.now().toISOString(), ...(reason ? { reason } : {}) }),
      { qos: 1 },
    );
  }

  async closeAll(): Promise<void> {
    await end(...this.all.flatMap((d) => (d.client ? [d.client] : [])));
  }
}
