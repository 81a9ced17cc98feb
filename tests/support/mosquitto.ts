/**
 * Whether Debian's mosquitto-clients (mosquitto_pub, mosquitto_sub), and curl, can be run. npm does not install them,
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

export interface ExternalTools {
  /** The commands that cannot be found on PATH. */
  missing: string[];
  /** The LOA_REQUIRE_… variable is 1: a missing command fails the tests instead of skipping them. */
  required: boolean;
  /** Skip: commands missing and not required. */
  skip: boolean;
  /** Why the tests are skipped or fail; empty when every command is there. */
  message: string;
}

/** Debian commands some tests run (npm cannot install them): skipped when absent, unless `requireVar` is 1. */
export function externalTools(
  commands: readonly string[],
  requireVar: string,
  installHint: string,
  env: NodeJS.ProcessEnv = process.env,
): ExternalTools {
  const missing = commands.filter((command) => !onPath(command, env.PATH ?? ''));
  const required = env[requireVar] === '1';
  const message =
    missing.length === 0
      ? ''
      : `${missing.join(' and ')} not found on PATH: install with \`${installHint}\`` +
        (required
          ? ` (${requireVar}=1: these tests must run)`
          : `; skipping the tests that use them (set ${requireVar}=1 to make this a failure)`);
  return { missing, required, skip: missing.length > 0 && !required, message };
}

export type MosquittoClients = ExternalTools;

export function mosquittoClients(env: NodeJS.ProcessEnv = process.env): MosquittoClients {
  return externalTools(MOSQUITTO_CLIENTS, 'LOA_REQUIRE_MOSQUITTO', INSTALL_HINT, env);
}

/** curl, the HTTPS client of the TLS tests; .ci/run installs it and sets LOA_REQUIRE_CURL=1. */
export function curlClient(env: NodeJS.ProcessEnv = process.env): ExternalTools {
  return externalTools(['curl'], 'LOA_REQUIRE_CURL', 'apt-get install curl', env);
}
