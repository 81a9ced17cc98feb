/**
 * The only file that owns the process: reads the configuration, starts the app, and shuts it down
 * gracefully on SIGTERM/SIGINT (stop accepting, close MQTT clients, flush and close the database).
 */
import { buildApp } from './app.js';
import { ConfigError, loadConfig } from './config.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(1);
    }
    throw err;
  }

  const logger = config.log.pretty
    ? { level: config.log.level, transport: { target: 'pino-pretty' } }
    : { level: config.log.level };
  const app = await buildApp({
    config,
    logger,
  });

  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    const timeoutS = config.shutdownTimeoutMs / 1000;
    app.log.info({ signal, timeoutS }, 'shutting down');
    // Fastify closes the HTTP server first and waits for requests in flight, so one slow or stalled client
    // would hold back closing the broker and flushing the database. They get half the time, then are cut.
    const cut = setTimeout(() => {
      app.log.warn('cutting HTTP requests still in flight');
      app.server.closeAllConnections();
    }, config.shutdownTimeoutMs / 2);
    cut.unref();
    // A hung close must still end the process, and on our terms: `docker stop` sends SIGKILL after its grace
    // period (10 s by default), which would cut a database write short. SHUTDOWN_TIMEOUT_S (8 s) stays below.
    const timer = setTimeout(() => {
      app.log.error({ timeoutS }, 'shutdown took too long; exiting');
      process.exit(1);
    }, config.shutdownTimeoutMs);
    timer.unref();
    app.close().then(
      () => process.exit(0),
      (err: unknown) => {
        app.log.error({ err }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  // Reads TLS_CERT_FILE/TLS_KEY_FILE again (they are also watched); without TLS, SIGHUP is ignored rather
  // than ending the process, which is what Node does by default.
  process.on('SIGHUP', () => {
    const tls = app.tls;
    if (!tls) {
      app.log.info({ signal: 'SIGHUP' }, 'nothing to reload: TLS is off');
      return;
    }
    const reloaded = tls.reload();
    app.log.info(
      {
        signal: 'SIGHUP',
        reloaded,
        fingerprint: tls.info.fingerprint,
        expiresAt: tls.expiresAt.toISOString(),
      },
      reloaded
        ? 'SIGHUP: new TLS certificate in use'
        : 'SIGHUP: TLS certificate unchanged (same files, or new ones that cannot be used: see the error above)',
    );
  });

  await app.listen({ host: config.http.host, port: config.http.port });
  const secure = config.tls !== null;
  app.log.info(
    {
      api: `${secure ? 'https' : 'http'}://${config.http.host}:${config.http.port}`,
      docs: '/docs',
      mqtt: config.mqtt.port === null ? 'off' : `mqtt://${config.mqtt.host}:${app.broker.port}`,
      ...(secure && { mqtts: `mqtts://${config.mqtt.host}:${app.broker.tlsPort}` }),
      dataDir: config.dataDir,
    },
    'Loa is running',
  );
  if (config.http.trustProxy === true) {
    // Often meant as "one proxy" (a hop count elsewhere); here it believes X-Forwarded-For from anyone, so
    // any client can choose the address that login and connection limits count.
    app.log.warn(
      'TRUST_PROXY=true trusts X-Forwarded-For from every client; name your proxies instead (TRUST_PROXY=10.0.0.5)',
    );
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
