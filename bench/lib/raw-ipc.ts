/** Messages between the bench process and the raw-broker child (bench/lib/raw-broker.ts), over Node IPC. */

/** bench → raw broker */
export type RawRequest =
  /** The device ids whose cmd topics a broadcast goes to; sent once, before any round. */
  | { type: 'targets'; deviceIds: string[] }
  /** Publish this JSON payload once to every target's cmd topic at QoS 1, now. */
  | { type: 'broadcast'; payload: string };

/** raw broker → bench */
export type RawReply =
  | { type: 'listening'; port: number }
  | { type: 'targets'; count: number }
  /**
   * The publish loop has handed every message to Aedes (delivery goes on asynchronously); `errors` counts
   * publish callbacks that failed since the broker started.
   */
  | { type: 'broadcast'; loopMs: number; errors: number };
