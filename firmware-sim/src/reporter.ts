/**
 * Console lines for a running fleet, shared by the CLI and the demo. It must stay readable at 10,000
 * devices: a command sent to a whole province is one line with counts, not 10,000 lines, and links that
 * drop and return are counted per second.
 */
import type { AckStatus } from '../../src/protocol/index.js';
import type { Fleet, FleetStats } from './fleet.js';

/** One console line, timestamped (UTC ISO, so lines from several machines sort together). */
export function logLine(message: string): void {
  console.log(`${new Date().toISOString()} ${message}`);
}

interface CommandTally {
  type: string;
  priority: string;
  received: number;
  outcomes: Map<string, number>;
  timer: NodeJS.Timeout;
}

// How long the outcomes of one command are gathered before its line is printed.
const COMMAND_WINDOW_MS = 1_000;

export class Reporter {
  private readonly commands = new Map<string, CommandTally>();
  private drops = 0;
  private connects = 0;
  private readonly intervals: NodeJS.Timeout[] = [];

  constructor(
    private readonly fleet: Fleet,
    private readonly prefix = '',
  ) {}

  /** Starts the per-command and link lines, and a summary every `summaryEveryMs` (0: none). */
  start(summaryEveryMs: number): void {
    this.fleet.on('command', (_device, { command }) => {
      let tally = this.commands.get(command.id);
      if (!tally) {
        const id = command.id;
        tally = {
          type: command.type,
          priority: typeof command.priority === 'string' ? command.priority : '?',
          received: 0,
          outcomes: new Map(),
          timer: setTimeout(() => this.flushCommand(id), COMMAND_WINDOW_MS),
        };
        this.commands.set(id, tally);
      }
      tally.received += 1;
    });
    this.fleet.on('ack', (_device, ack) => {
      const tally = this.commands.get(ack.id);
      if (!tally || ack.status === 'received') return;
      const key = ack.reason ? `${ack.status} (${ack.reason})` : ack.status;
      tally.outcomes.set(key, (tally.outcomes.get(key) ?? 0) + 1);
    });
    this.fleet.on('disconnect', () => (this.drops += 1));
    this.fleet.on('connect', () => (this.connects += 1));
    // Also the progress report while the fleet first connects.
    this.intervals.push(setInterval(() => this.flushLinks(), 1_000));
    if (summaryEveryMs > 0) {
      this.intervals.push(setInterval(() => this.line(formatSummary(this.fleet.stats())), summaryEveryMs));
    }
  }

  stop(): void {
    for (const timer of this.intervals) clearInterval(timer);
    this.intervals.length = 0;
    for (const id of [...this.commands.keys()]) this.flushCommand(id);
  }

  line(message: string): void {
    logLine(`${this.prefix}${message}`);
  }

  private flushCommand(id: string): void {
    const tally = this.commands.get(id);
    if (!tally) return;
    clearTimeout(tally.timer);
    this.commands.delete(id);
    const outcomes = [...tally.outcomes].map(([key, n]) => `${n} ${key}`).join(', ');
    this.line(
      `cmd ${id} ${tally.type}/${tally.priority}: received by ${tally.received} device(s)${outcomes ? `; ${outcomes}` : ''}`,
    );
  }

  private flushLinks(): void {
    if (this.drops === 0 && this.connects === 0) return;
    const online = this.fleet.devices.filter((d) => d.connected).length;
    this.line(
      `links: ${this.connects} connected, ${this.drops} dropped; ${online}/${this.fleet.devices.length} online`,
    );
    this.drops = 0;
    this.connects = 0;
  }
}

const ACK_ORDER: AckStatus[] = ['done', 'failed', 'rejected'];

export function formatSummary(stats: FleetStats): string {
  const acks = ACK_ORDER.map((s) => `${s} ${stats.acks[s]}`).join(', ');
  const logs = Object.entries(stats.logs)
    .map(([event, n]) => `${event} ${n}`)
    .join(', ');
  return (
    `summary: online ${stats.connected}/${stats.devices}, playing ${stats.playing}, ` +
    `commands ${stats.commands} (duplicates ${stats.duplicates}, malformed ${stats.malformed}), ` +
    `acks ${acks}, dropped ${stats.droppedAcks}; logs ${logs}; downloads ${stats.downloads.fetched} ` +
    `(cached ${stats.downloads.cached}, failed ${stats.downloads.failed})`
  );
}

/** Adds up the stats of several fleets (one per worker process). */
export function sumStats(all: FleetStats[]): FleetStats {
  const total: FleetStats = {
    devices: 0,
    connected: 0,
    playing: 0,
    commands: 0,
    duplicates: 0,
    malformed: 0,
    droppedAcks: 0,
    downloads: { fetched: 0, cached: 0, failed: 0 },
    acks: { received: 0, done: 0, failed: 0, rejected: 0 },
    logs: { started: 0, finished: 0, interrupted: 0, failed: 0 },
  };
  for (const s of all) {
    total.devices += s.devices;
    total.connected += s.connected;
    total.playing += s.playing;
    total.commands += s.commands;
    total.duplicates += s.duplicates;
    total.malformed += s.malformed;
    total.droppedAcks += s.droppedAcks;
    total.downloads.fetched += s.downloads.fetched;
    total.downloads.cached += s.downloads.cached;
    total.downloads.failed += s.downloads.failed;
    for (const k of Object.keys(total.acks) as AckStatus[]) total.acks[k] += s.acks[k];
    for (const k of Object.keys(total.logs) as (keyof FleetStats['logs'])[]) total.logs[k] += s.logs[k];
  }
  return total;
}
