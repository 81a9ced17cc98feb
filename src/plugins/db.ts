import fp from 'fastify-plugin';
import { openDatabase, type Db } from '../db/index.js';

declare module 'fastify' {
  interface FastifyInstance {
    db: Db;
  }
}

/** Opens the SQLite file and applies pending migrations; closes it last, after everything that writes. */
export default fp<{ file: string }>(
  (app, options, done) => {
    const { db, sqlite } = openDatabase(options.file);
    app.decorate('db', db);
    app.addHook('onClose', (_instance, next) => {
      // close() checkpoints the WAL into the main file, so a copied data/ folder is self-contained.
      sqlite.close();
      next();
    });
    done();
  },
  { name: 'db', fastify: '5.x' },
);
