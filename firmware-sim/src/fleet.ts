/**
 * Many simulated devices in one process: connects them with bounded concurrency (a broker, like a real
 * province after a power cut, should see a storm it can cope with, not 10,000 SYNs in one tick), forwards
 * their events tagged with the device, and keeps the tallies a summary line needs.
 */
import { EventEmitter } from 'node:events';
import type { Ack, AckStatus, PlaybackLogEntry } from '../../src/protocol/index.js';
import type { DeviceCredentials } from './api.js';
import {
  SimDevice,
  type CommandEvent,
  type DownloadEvent,
  type Faults,
  type SimDeviceOptions,
} from './device.js';

export { login, provisionDevices, type DeviceCredentials } from './api.js';

export interface FleetOptions extends Omit<SimDeviceOptions, 'id' | 'password' | 'username' | 'faults'> {
  /** Connection attempts in flight at once. Default 200. */
  connectConcurrency?: number;
  /** How long `connectAll` waits for one device before counting it as failed. Default 60 s. */
  connectTimeoutMs?: number;
  /** Faults for each device at start, e.g. to make a share of the fleet misbehave. */
  faults?: (credentials: DeviceCredentials, index: number) => Partial<Faults> | undefined;
}

export interface ConnectReport {
  connected: number;
  /** Devices that did not connect in time or were refused; they go on retrying in the background. */
  failed: { deviceId: string; error: string }[];
  elapsedMs: number;
}

export interface FleetStats {
  devices: number;
  connected: number;
  playing: number;
  commands: number;
  duplicates: number;
  malformed: number;
  droppedAcks: number;
  /** Media plays: downloaded and verified, served from a device's hash cache, failed to download or verify. */
  downloads: { fetched: number; cached: number; failed: number };
  acks: Record<AckStatus, number>;
  logs: Record<PlaybackLogEntry['event'], number>;
}

export type FleetEvents = {
  connect: [device: SimDevice];
  disconnect: [device: SimDevice, reason: string];
  command: [device: SimDevice, event: CommandEvent];
  ack: [device: SimDevice, ack: Ack];
  log: [device: SimDevice, entry: PlaybackLogEntry];
  download: [device: SimDevice, event: DownloadEvent];
  error: [device: SimDevice, error: Error];
};

export class Fleet extends EventEmitter<FleetEvents> {
  readonly devices: SimDevice[];
  private readonly connectConcurrency: number;
  private readonly connectTimeoutMs: number;
  private readonly acks: Record<AckStatus, number> = { received: 0, done: 0, failed: 0, rejected: 0 };
  private readonly logs: Record<PlaybackLogEntry['event'], number> = {
    started: 0,
    finished: 0,
    interrupted: 0,
    failed: 0,
  };

  constructor(credentials: DeviceCredentials[], options: FleetOptions) {
    super();
    const { connectConcurrency = 200, connectTimeoutMs = 60_000, faults, ...deviceOptions } = options;
    this.connectConcurrency = connectConcurrency;
    this.connectTimeoutMs = connectTimeoutMs;
    this.devices = credentials.map((c, index) => {
      const device = new SimDevice({
        ...deviceOptions,
        id: c.id,
        username: c.username,
        password: c.password,
        faults: faults?.(c, index),
      });
      this.wire(device);
      return device;
    });
  }

  private wire(device: SimDevice): void {
    device.on('connect', () => this.emit('connect', device));
    device.on('disconnect', (reason) => this.emit('disconnect', device, reason));
    device.on('command', (event) => this.emit('command', device, event));
    device.on('ack', (ack) => {
      this.acks[ack.status] += 1;
      this.emit('ack', device, ack);
    });
    device.on('log', (entry) => {
      this.logs[entry.event] += 1;
      this.emit('log', device, entry);
    });
    device.on('download', (event) => this.emit('download', device, event));
    device.on('error', (error) => {
      // Same rule as a single device: nobody listening must not mean a crash.
      if (this.listenerCount('error') > 0) this.emit('error', device, error);
    });
  }

  /** Connects every device, at most `connectConcurrency` at a time; resolves when each has connected or failed. */
  async connectAll(): Promise<ConnectReport> {
    const started = performance.now();
    const failed: ConnectReport['failed'] = [];
    let connected = 0;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < this.devices.length) {
        const device = this.devices[next++];
        if (!device) break;
        try {
          await device.connect(this.connectTimeoutMs);
          connected += 1;
        } catch (error) {
          failed.push({ deviceId: device.id, error: error instanceof Error ? error.message : String(error) });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.connectConcurrency, this.devices.length) }, worker));
    return { connected, failed, elapsedMs: Math.round(performance.now() - started) };
  }

  /**
   * Takes the devices `which` picks (all by default) offline now and brings each back after `ms` on its
   * wall clock (SimDevice.goOffline). Returns how many went offline.
   */
  goOffline(ms: number, which: (device: SimDevice, index: number) => boolean = () => true): number {
    let count = 0;
    this.devices.forEach((device, index) => {
      if (!which(device, index)) return;
      device.goOffline(ms);
      count += 1;
    });
    return count;
  }

  async closeAll(): Promise<void> {
    await Promise.all(this.devices.map((device) => device.close()));
  }

  stats(): FleetStats {
    const stats: FleetStats = {
      devices: this.devices.length,
      connected: 0,
      playing: 0,
      commands: 0,
      duplicates: 0,
      malformed: 0,
      droppedAcks: 0,
      downloads: { fetched: 0, cached: 0, failed: 0 },
      acks: { ...this.acks },
      logs: { ...this.logs },
    };
    for (const device of this.devices) {
      if (device.connected) stats.connected += 1;
      if (device.state.playing) stats.playing += 1;
      const c = device.counters;
      stats.commands += c.handledCommands;
      stats.duplicates += c.duplicateCommands;
      stats.malformed += c.malformedCommands;
      stats.droppedAcks += c.droppedAcks;
      stats.downloads.fetched += c.downloads;
      stats.downloads.cached += c.cacheHits;
      stats.downloads.failed += c.downloadFailures;
    }
    return stats;
  }
}
