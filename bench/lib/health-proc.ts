/**
 * CPU time of another process as the kernel accounts it, for bench/health.ts: the server's CPU per
 * telemetry message is the delta of this over a window divided by the messages it received meanwhile.
 *
 * /proc/<pid>/stat counts every thread of the process (the main thread, libuv's thread pool, V8's GC and
 * compiler threads), which is what the machine pays for a message, not only what the event loop sees.
 * Linux only: the bench says so and stops elsewhere rather than report a figure measured differently.
 */
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';

/**
 * Clock ticks per second (USER_HZ), the unit of utime and stime in /proc/<pid>/stat. It is 100 on every
 * mainstream Linux build, but it is a build option, so ask rather than assume; 100 if getconf is missing.
 */
export function clockTicksPerSecond(): number {
  try {
    const ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isInteger(ticks) && ticks > 0 ? ticks : 100;
  } catch {
    return 100;
  }
}

export interface CpuTime {
  /** User-mode CPU time, µs. */
  userUs: number;
  /** Kernel-mode CPU time (socket reads and writes, fsync, page faults), µs. */
  systemUs: number;
}

/**
 * CPU time a process has used so far. The resolution is one clock tick (10 ms at 100 Hz), so a window
 * must be long enough that this is noise: over 30 s of a busy server it is well below 0.1 %.
 */
export async function cpuTime(pid: number, ticksPerSecond: number): Promise<CpuTime> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Field 2, the command name, is in parentheses and may itself contain spaces or parentheses: count
  // fields from the last ')' on. After it come field 3 (state), 4, … so utime (14) and stime (15) are
  // the 12th and 13th there.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error(`cannot parse /proc/${pid}/stat`);
  const us = 1_000_000 / ticksPerSecond;
  return { userUs: utime * us, systemUs: stime * us };
}

export const totalUs = (t: CpuTime): number => t.userUs + t.systemUs;

export interface MachineCpu {
  /** Ticks all CPUs spent doing anything but idling or waiting for I/O, since boot. */
  busyTicks: number;
  /** All ticks of all CPUs since boot. */
  totalTicks: number;
}

/**
 * The whole machine's CPU counters (/proc/stat), so the bench can tell how busy the cores were during a
 * window: a server measured on a saturated machine shows queueing, not its own cost.
 */
export async function machineCpu(): Promise<MachineCpu> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n', 1)[0] ?? '';
  // cpu  user nice system idle iowait irq softirq steal guest guest_nice; guest time is already counted
  // in user and nice, so only the first eight fields are summed.
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
  const total = ticks.reduce((sum, t) => sum + t, 0);
  return { busyTicks: total - idle, totalTicks: total };
}
