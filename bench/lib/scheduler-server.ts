/**
 * The Loa server for bench:scheduler, started like the other benches' (bench/lib/tied-to-bench.ts running
 * src/server.ts, free loopback ports, a fresh DATA_DIR, connect caps lifted) but with LOG_LEVEL=info:
 * the dispatcher's `occurrence dispatched` lines are what the bench measures (`lagMs` = publish − due).
 *
 * Its own launcher rather than processes.ts's Child, because at info level the server writes a line per
 * HTTP request and per device coming online (tens of thousands in a run); Child echoes every line to the
 * bench's stderr. Here the JSON lines are parsed instead: warnings and errors are still echoed, dispatch
 * lines are collected, the rest is dropped.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { LOOPBACK, forgetTempDir, freePorts, progress, trackTempDir } from './processes.js';

/** One `occurrence dispatched` line of the server's log. */
export interface DispatchLine {
  occurrenceId: number;
  scheduleId: string;
  devices: number;
  /** Publish time − due time, as the server measured it. */
  lagMs: number;
  /** The log line's own timestamp (epoch ms). */
  time: number;
}

export interface TappedLoa {
  process: ChildProcess;
  pid: number;
  api: string;
  mqttUrl: string;
  databaseFile: string;
  adminPassword: string;
  /** Every dispatch line so far, in the order the server wrote them. */
  dispatches: DispatchLine[];
  /** Resolves when the process has exited. */
  exited: Promise<void>;
  readonly running: boolean;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
let hooked = false;

export async function startTappedLoa(options: {
  repoRoot: string;
  env: Record<string, string>;
  cpuProfDir?: string | undefined;
}): Promise<TappedLoa> {
  if (!hooked) {
    hooked = true;
    // Synchronous last resort; tied-to-bench.ts also stops the server when our IPC channel closes.
    process.on('exit', () => {
      for (const child of live) child.kill('SIGKILL');
    });
  }
  const dataDir = await mkdtemp(path.join(tmpdir(), 'loa-bench-scheduler-'));
  trackTempDir(dataDir);
  const [httpPort, mqttPort] = await freePorts(2);
  if (httpPort === undefined || mqttPort === undefined) throw new Error('no free ports');
  const adminPassword = 'bench-admin-password';
  const nodeFlags = options.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfDir}`] : [];
  const child = spawn(
    process.execPath,
    [...nodeFlags, '--import', 'tsx', 'bench/lib/tied-to-bench.ts', 'src/server.ts'],
    {
      cwd: options.repoRoot,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      env: {
        ...process.env,
        HOST: LOOPBACK,
        PORT: String(httpPort),
        MQTT_HOST: LOOPBACK,
        MQTT_PORT: String(mqttPort),
        DATA_DIR: dataDir,
        LOG_LEVEL: 'info',
        LOG_PRETTY: 'false',
        ADMIN_PASSWORD: adminPassword,
        MQTT_MAX_CONNECTS_PER_S: '100000',
        MQTT_MAX_CONNECTS_PER_ADDRESS_PER_S: '0',
        MQTT_MAX_CONNECTIONS_PER_ADDRESS: '0',
        ALERT_WEBHOOK_URL: '',
        ...options.env,
        BENCH_REMOVE_ON_EXIT: dataDir,
      },
    },
  );
  live.add(child);
  child.on('error', (err) => progress(`loa: ${err.message}`));
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      live.delete(child);
      if (code !== 0 && signal === null) progress(`loa exited with code ${code}`);
      resolve();
    }),
  );
  const { stdout, stderr } = child;
  if (!stdout || !stderr) throw new Error('the Loa server has no output pipes');
  const dispatches: DispatchLine[] = [];
  createInterface({ input: stdout }).on('line', (line) => {
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line) as Record<string, unknown>;
    } catch {
      process.stderr.write(`[loa] ${line}\n`);
      return;
    }
    if (entry.msg === 'occurrence dispatched') {
      dispatches.push({
        occurrenceId: Number(entry.occurrenceId),
        scheduleId: String(entry.scheduleId),
        devices: Array.isArray(entry.devices) ? entry.devices.length : Number(entry.devices),
        lagMs: Number(entry.lagMs),
        time: Number(entry.time),
      });
    } else if (typeof entry.level === 'number' && entry.level >= 40) {
      process.stderr.write(`[loa] ${line}\n`);
    }
  });
  createInterface({ input: stderr }).on('line', (line) => process.stderr.write(`[loa] ${line}\n`));

  const isRunning = () => child.exitCode === null && child.signalCode === null;
  const stop = async (): Promise<void> => {
    if (isRunning()) {
      child.kill('SIGTERM');
      const outcome = await Promise.race([exited.then(() => 'exited'), sleep(15_000, 'timeout')]);
      if (outcome === 'timeout') {
        child.kill('SIGKILL');
        await exited;
      }
    }
    await rm(dataDir, { recursive: true, force: true });
    forgetTempDir(dataDir);
  };

  const api = `http://${LOOPBACK}:${httpPort}`;
  const deadline = performance.now() + 60_000;
  for (;;) {
    if (!isRunning()) {
      await stop();
      throw new Error('the Loa server exited during start-up (see its output above)');
    }
    try {
      if ((await fetch(`${api}/healthz`)).ok) break;
    } catch {
      // Not listening yet.
    }
    if (performance.now() > deadline) {
      await stop();
      throw new Error('the Loa server did not answer /healthz within 60 s');
    }
    await sleep(100);
  }
  if (child.pid === undefined) throw new Error('the Loa server has no pid');
  return {
    process: child,
    pid: child.pid,
    api,
    mqttUrl: `mqtt://${LOOPBACK}:${mqttPort}`,
    databaseFile: path.join(dataDir, 'loa.sqlite'),
    adminPassword,
    dispatches,
    exited,
    get running() {
      return isRunning();
    },
    stop,
  };
}
