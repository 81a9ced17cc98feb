/**
 * Whether Debian's mosquitto-clients (mosquitto_pub, mosquitto_sub) can be run. npm does not install them,
 * so on a fresh machine `npm ci && npm test` skips the tests that need them, saying how to install them;
 * .ci/run installs them and sets LOA_REQUIRE_MOSQUITTO=1, which turns a missing client into a failure so
 * that CI never silently stops testing the protocol with a third-party client.
 */
import fs from 'node:fs';
import path from 'node:path';

export const MOSQUITTO_CLIENTS = ['mosquitto_pub', 'mosquitto_sub'] as const;
export const INSTALL_HINT = 'apt-get install mosquitto-clients';

function onPath(command: string, searchPath: string): boolean {
  return searchPath
    .split(path.delimiter)
    .filter(Boolean)
    .some((dir) => {
      try {
        fs.accessSync(path.join(dir, command), fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
}

export interface MosquittoClients {
  /** The clients that cannot be found on PATH. */
  missing: string[];
  /** LOA_REQUIRE_MOSQUITTO=1: a missing client fails the tests instead of skipping them. */
  required: boolean;
  /** Skip: clients missing and not required. */
  skip: boolean;
  /** Why the tests are skipped or fail; empty when every client is there. */
  message: string;
}

export function mosquittoClients(env: NodeJS.ProcessEnv = process.env): MosquittoClients {
  const missing = MOSQUITTO_CLIENTS.filter((command) => !onPath(command, env.PATH ?? ''));
  const required = env.LOA_REQUIRE_MOSQUITTO === '1';
  const message =
    missing.length === 0
      ? ''
      : `${missing.join(' and ')} not found on PATH: install them with \`${INSTALL_HINT}\`` +
        (required
          ? ' (LOA_REQUIRE_MOSQUITTO=1: these tests must run)'
          : '; skipping the tests that use them (set LOA_REQUIRE_MOSQUITTO=1 to make this a failure)');
  return { missing, required, skip: missing.length > 0 && !required, message };
}
