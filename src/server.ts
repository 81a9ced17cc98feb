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
    logger: { ...logger, redact: ['req.headers.authorization', '*.password', 'body.password'] },
  });

  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    app.log.info({ signal }, 'shutting down');
    // A second signal or a hung close must still end the process.
    const timer = setTimeout(() => {
      app.log.error('shutdown took too long; exiting');
      process.exit(1);
    }, 10_000);
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

  await app.listen({ host: config.http.host, port: config.http.port });
  app.log.info(
    {
      api: `http://${config.http.host}:${config.http.port}`,
      docs: '/docs',
      mqtt: `${config.mqtt.host}:${app.broker.port}`,
      dataDir: config.dataDir,
    },
    'Loa is running',
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
