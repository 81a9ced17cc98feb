/**
 * `npm run demo` reads PORT, MQTT_PORT, DATA_DIR and ADMIN_PASSWORD as `npm start` does, so it runs beside
 * something else on port 3000. The option parsing is checked as a function; one real run proves the demo
 * starts its server, creates its commune and connects its devices on the ports it was given.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseDemoOptions, UsageError } from '../firmware-sim/src/demo-options.js';
import { freePort, root, withTsx } from './support/processes.js';

describe('demo options', () => {
  it('start the server on 3000/1883 with data/demo when nothing is set', () => {
    expect(parseDemoOptions([], {}, '/srv/loa')).toEqual({
      api: 'http://localhost:3000',
      mqttUrl: 'mqtt://localhost:1883',
      server: { port: 3000, mqttPort: 1883, dataDir: '/srv/loa/data/demo' },
      speed: 1,
    });
  });

  it('honour PORT, MQTT_PORT, DATA_DIR and ADMIN_PASSWORD like npm start', () => {
    const env = { PORT: '3100', MQTT_PORT: '1884', DATA_DIR: 'data/mine', ADMIN_PASSWORD: 'Mật-khẩu-demo' };
    expect(parseDemoOptions(['--speed', '10'], env, '/srv/loa')).toEqual({
      api: 'http://localhost:3100',
      mqttUrl: 'mqtt://localhost:1884',
      server: { port: 3100, mqttPort: 1884, dataDir: '/srv/loa/data/mine' },
      password: 'Mật-khẩu-demo',
      speed: 10,
    });
    expect(parseDemoOptions(['--password', 'from-the-flag'], env, '/srv/loa')).toMatchObject({
      password: 'from-the-flag',
    });
    expect(parseDemoOptions([], { LOA_ADMIN_PASSWORD: 'the-old-name' }, '/')).toMatchObject({
      password: 'the-old-name',
    });
  });

  it('use MQTT_PORT on the API host for a server that already runs', () => {
    expect(
      parseDemoOptions(['--api', 'http://loa.lan:8080/'], { MQTT_PORT: '8883', PORT: '9' }, '/'),
    ).toEqual({ api: 'http://loa.lan:8080', mqttUrl: 'mqtt://loa.lan:8883', speed: 1 });
  });

  it('refuse ports it could not reach and passwords the server would refuse, naming the variable', () => {
    for (const [env, message] of [
      [{ PORT: '0' }, /PORT must be a port number/],
      [{ MQTT_PORT: 'abc' }, /MQTT_PORT must be a port number/],
      [{ PORT: '70000' }, /PORT must be a port number/],
      [{ ADMIN_PASSWORD: 'short' }, /at least 10 characters/],
    ] as const) {
      expect(() => parseDemoOptions([], env, '/')).toThrow(message);
      expect(() => parseDemoOptions([], env, '/')).toThrow(UsageError);
    }
  });
});

describe('npm run demo', () => {
  it('runs on the ports and data directory it is given, and stops cleanly', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-demo-'));
    const [port, mqttPort] = [await freePort(), await freePort()];
    const demo = spawn(...withTsx('firmware-sim/src/demo.ts'), {
      cwd: root,
      env: {
        ...process.env,
        PORT: String(port),
        MQTT_PORT: String(mqttPort),
        DATA_DIR: dataDir,
        ADMIN_PASSWORD: 'Mật-khẩu-demo-1',
        LOA_ADMIN_PASSWORD: '',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    demo.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    demo.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => demo.once('exit', (code) => resolve(code)));
    try {
      await new Promise<void>((resolve, reject) => {
        demo.stdout.on('data', () => {
          if (output.includes('Loa demo is running')) resolve();
        });
        void exited.then((code) => reject(new Error(`the demo exited (${code}):\n${output}`)));
      });
      expect(output).toContain(`API docs      http://localhost:${port}/docs`);
      expect(output).toContain('admin / Mật-khẩu-demo-1');
      expect(output).not.toMatch(/did not connect/);
      expect(fs.existsSync(path.join(dataDir, 'loa.sqlite'))).toBe(true);
      expect(fs.existsSync(path.join(dataDir, 'firmware-sim-demo.json'))).toBe(true);
      demo.kill('SIGTERM');
      const code = await exited;
      expect(code, output).toBe(0);
    } finally {
      demo.kill('SIGKILL');
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});
