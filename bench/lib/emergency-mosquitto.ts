/**
 * Mosquitto, the C broker bench:emergency measures Loa against when it is installed (`apt-get install
 * mosquitto` on Debian): found on the PATH or in /usr/sbin, started on a free loopback port with a config
 * of the bench's own (no persistence, anonymous clients, errors and warnings only), stopped at the end.
 *
 * It is not a Node script, so it cannot end itself when the bench's IPC channel closes as the other
 * children do. Instead it runs under util-linux's `setpriv --pdeathsig KILL` when that exists (the kernel
 * kills it when the bench process dies, even by SIGKILL), and the bench kills it on exit anyway.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { LOOPBACK, freePorts } from './processes.js';

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The first executable named `name` on the PATH, then in the sbin directories packages install to. */
function which(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  return dirs
    .filter((d) => d !== '')
    .map((d) => path.join(d, name))
    .find(executable);
}

/** Mosquitto's path and version, or why it cannot be used. */
export function findMosquitto(): { path: string; version: string } | { missing: string } {
  const binary = which('mosquitto');
  if (!binary)
    return { missing: 'no mosquitto binary on the PATH or in /usr/sbin (apt-get install mosquitto)' };
  // `mosquitto -h` prints its version first and exits non-zero; that is the documented way to ask.
  const help = spawnSync(binary, ['-h'], { encoding: 'utf8', timeout: 5_000 });
  const version = /mosquitto version (\S+)/.exec(`${help.stdout}${help.stderr}`)?.[1];
  return { path: binary, version: version ?? 'unknown' };
}

export interface Mosquitto {
  pid: number;
  /** Resolves when the process has exited, for whatever reason. */
  exited: Promise<void>;
  port: number;
  mqttUrl: string;
  stop(): Promise<void>;
}

/**
 * Starts Mosquitto with a config written into `workDir` and waits until its port accepts connections.
 * Settings: no persistence (nothing written to disk), anonymous clients (the devices' credentials are
 * Loa's; Mosquitto accepts and ignores them without a password file), and otherwise Mosquitto's defaults:
 * its per-client in-flight and queue limits do not matter here, each device receiving one message a round.
 */
export async function startMosquitto(binary: string, workDir: string): Promise<Mosquitto> {
  const [port] = await freePorts(1);
  if (port === undefined) throw new Error('no free port for mosquitto');
  const config = path.join(workDir, 'mosquitto.conf');
  await writeFile(
    config,
    [
      `listener ${port} ${LOOPBACK}`,
      'allow_anonymous true',
      'persistence false',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      '',
    ].join('\n'),
  );
  const setpriv = which('setpriv');
  const [command, args] = setpriv
    ? [setpriv, ['--pdeathsig', 'KILL', '--', binary, '-c', config]]
    : [binary, ['-c', config]];
  // setpriv execs mosquitto: the pid is mosquitto's own (its CPU and memory are what the bench reads).
  const child: ChildProcess = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.on('exit', kill);
  for (const stream of [child.stdout, child.stderr]) {
    if (stream) {
      createInterface({ input: stream }).on('line', (line) => process.stderr.write(`[mosquitto] ${line}\n`));
    }
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('error', (err) => process.stderr.write(`[mosquitto] ${err.message}\n`));

  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const outcome = await Promise.race([
        exited.then(() => 'exited'),
        sleep(5_000, 'timeout', { ref: false }),
      ]);
      if (outcome === 'timeout') kill();
      await exited;
    }
    process.off('exit', kill);
  };

  const deadline = performance.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error('mosquitto exited during start-up (see its output above)');
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, LOOPBACK);
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) break;
    if (performance.now() > deadline) {
      await stop();
      throw new Error('mosquitto did not listen within 15 s');
    }
    await sleep(50);
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error('mosquitto has no pid');
  return { pid, exited, port, mqttUrl: `mqtt://${LOOPBACK}:${port}`, stop };
}
