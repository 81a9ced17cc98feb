import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';

/**
 * Connects a plain MQTT.js client as a device and resolves once CONNACK arrives, or rejects with the
 * broker's refusal. No automatic reconnect: tests decide when a device comes back.
 */
export function connectRaw(url: string, options: IClientOptions): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, {
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 5_000,
      ...options,
    });
    client.once('connect', () => resolve(client));
    client.once('error', (err) => {
      client.end(true);
      reject(err);
    });
  });
}

export function connectDevice(
  url: string,
  credentials: { clientId: string; username: string; password: string },
  extra: IClientOptions = {},
) {
  return connectRaw(url, { ...credentials, ...extra });
}

/** Resolves when the client's connection closes (the broker closed it). */
export function closed(client: MqttClient): Promise<void> {
  return new Promise((resolve) => client.once('close', () => resolve()));
}

export async function end(...clients: MqttClient[]): Promise<void> {
  await Promise.all(clients.map((c) => c.endAsync(true)));
}
