import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';

describe('config', () => {
  it('has embedded defaults for a fresh machine', () => {
    const config = loadConfig({});
    expect(config.http).toMatchObject({ port: 3000, host: '0.0.0.0' });
    expect(config.mqtt.port).toBe(1883);
    expect(config.databaseFile).toMatch(/data[/\\]loa\.sqlite$/);
    expect(config.log.level).toBe('info');
    expect(config.auth.adminPassword).toBeUndefined();
  });

  it('names every bad variable in one message', () => {
    const attempt = () =>
      loadConfig({ PORT: 'abc', MQTT_PORT: '70000', LOG_LEVEL: 'loud', PUBLIC_URL: 'not a url' });
    expect(attempt).toThrow(ConfigError);
    const message = (() => {
      try {
        attempt();
      } catch (err) {
        return (err as Error).message;
      }
      return '';
    })();
    for (const name of ['PORT', 'MQTT_PORT', 'LOG_LEVEL', 'PUBLIC_URL']) expect(message).toContain(name);
  });

  it('reads "false" as false, never as a truthy string', () => {
    expect(loadConfig({ LOG_PRETTY: 'false' }).log.pretty).toBe(false);
    expect(loadConfig({ LOG_PRETTY: 'true' }).log.pretty).toBe(true);
    expect(() => loadConfig({ LOG_PRETTY: 'yes please' })).toThrow(/LOG_PRETTY/);
  });

  it('treats empty variables as unset and refuses a short admin password', () => {
    expect(loadConfig({ PORT: '' }).http.port).toBe(3000);
    expect(() => loadConfig({ ADMIN_PASSWORD: 'short' })).toThrow(/ADMIN_PASSWORD/);
  });

  it('reads TRUST_PROXY as a flag or a list of proxy addresses and CIDRs, naming a bad entry', () => {
    expect(loadConfig({ TRUST_PROXY: 'true' }).http.trustProxy).toBe(true);
    expect(loadConfig({ TRUST_PROXY: 'false' }).http.trustProxy).toBe(false);
    expect(loadConfig({}).http.trustProxy).toBe(false);
    expect(
      loadConfig({ TRUST_PROXY: '10.0.0.1, 192.168.0.0/16,::1,fd00::/8,loopback' }).http.trustProxy,
    ).toEqual(['10.0.0.1', '192.168.0.0/16', '::1', 'fd00::/8', 'loopback']);
    const message = (() => {
      try {
        loadConfig({ TRUST_PROXY: '10.0.0.1,proxy.example,10.0.0.0/33,fd00::/129,' });
      } catch (err) {
        return (err as Error).message;
      }
      return '';
    })();
    expect(message).toMatch(/TRUST_PROXY/);
    for (const bad of ['"proxy.example"', '"10.0.0.0/33"', '"fd00::/129"', 'empty entry']) {
      expect(message).toContain(bad);
    }
    expect(message).not.toContain('"10.0.0.1"');
  });
});
