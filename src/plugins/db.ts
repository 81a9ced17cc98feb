import fp from 'fastify-plugin';
import { openDatabase, type Db } from '../db/index.js';

declare module 'fastify' {
  interface FastifyInstance {
    db: Db;
  }
}

/**
 * Opens the SQLite file, backs it up into `backups/` beside it if migrations are pending, and applies them;
 * closes it last, after everything that writes.
 */
export default fp<{ file: string }>(
  async (app, options) => {
    const { db, sqlite } = await openDatabase(options.file, { log: app.log });
    app.decorate('db', db);
    app.addHook('onClose', (_instance, next) => {
      // close() checkpoints the WAL into the main file, so a copied data/ folder is self-contained.
      sqlite.close();
      next();
    });
  },
  { name: 'db', fastify: '5.x' },
);
