/**
 * Makes the simulator send telemetry as a smooth stream instead of bursts.
 *
 * firmware-sim drives the telemetry of every device in a process from one shared timer whose tick is a
 * quarter of the shortest heartbeat registered, capped to 5 ms…1 s (HeartbeatScheduler in
 * firmware-sim/src/device.ts); each tick sends the telemetry of every device that has become due. With
 * 10,000 devices on a 3-second real interval the tick is 750 ms, so the server would get about 2,500
 * messages at once four times a second. Real devices, each on its own clock with a random phase, arrive
 * as a steady stream; bursts would measure the simulator (every API request that lands behind a burst
 * waits for it) rather than the server.
 *
 * The scheduler takes its tick from the shortest interval registered, so one extra SimDevice with a
 * heartbeat of 4 × `tickMs` sets the tick to `tickMs`. That device never connects (it points at a port
 * nobody listens on and retries once an hour), and a device that is not connected sends nothing, so it
 * adds no traffic: only a cheaper loop (10,000 comparisons per tick). firmware-sim has no option for the
 * tick; if it gets one, this file can go.
 */
import { SimDevice } from '../../firmware-sim/src/index.js';
import { LOOPBACK, freePorts } from './processes.js';

export interface Pacer {
  stop(): Promise<void>;
}

export async function paceTelemetry(tickMs: number): Promise<Pacer> {
  // A port that was free a moment ago: a connection attempt is refused at once, never accepted.
  const [port] = await freePorts(1);
  if (port === undefined) throw new Error('no free port for the pacer');
  const pacer = new SimDevice({
    id: 'bench-telemetry-pacer',
    password: 'unused',
    mqttUrl: `mqtt://${LOOPBACK}:${port}`,
    speed: 1,
    heartbeatS: (4 * tickMs) / 1_000,
    reconnectPeriodMs: 3_600_000,
  });
  // connect() registers the heartbeat at once and then waits for a connection that will never come;
  // close() settles that wait (with an error nobody needs).
  pacer.connect(86_400_000).catch(() => undefined);
  return { stop: () => pacer.close() };
}
