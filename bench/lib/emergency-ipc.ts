/**
 * Messages between bench/emergency.ts and its baseline process (bench/lib/emergency-raw-server.ts), over
 * Node IPC. The baseline process is a bare Aedes broker, a bare node:http file server and a hand-encoded
 * MQTT publisher for Mosquitto, in one process.
 */

/** bench → baseline */
export type EmergencyRawRequest =
  /** The device ids whose cmd topics a broadcast goes to; sent once, before any round. */
  | { type: 'targets'; deviceIds: string[] }
  /** Serve this file for GET …/<name> (any directory, any query string) from now on. */
  | { type: 'file'; name: string; path: string }
  /** Publish this JSON payload once to every target's cmd topic at QoS 1 through the bare Aedes broker. */
  | { type: 'broadcast'; payload: string }
  /** Connect the publisher to Mosquitto on this loopback port (MQTT 3.1.1, clean session). */
  | { type: 'mosquitto-connect'; port: number }
  /** Publish this JSON payload once to every target's cmd topic at QoS 1 through Mosquitto. */
  | { type: 'mosquitto-broadcast'; payload: string };

/** baseline → bench */
export type EmergencyRawReply =
  | { type: 'listening'; mqttPort: number; httpPort: number }
  | { type: 'targets'; count: number }
  | { type: 'file'; name: string; sizeBytes: number }
  /**
   * The publish loop has handed every message to Aedes (delivery goes on asynchronously); `errors` counts
   * publish callbacks that failed since the broker started.
   */
  | { type: 'broadcast'; loopMs: number; errors: number }
  | { type: 'mosquitto-connected' }
  /**
   * Every PUBLISH packet is encoded and handed to the socket (`loopMs`); `pubackMs` is when Mosquitto had
   * acknowledged all of them (its receipt, not the devices').
   */
  | { type: 'mosquitto-broadcast'; loopMs: number; pubackMs: number; bytes: number }
  | { type: 'failed'; message: string };
