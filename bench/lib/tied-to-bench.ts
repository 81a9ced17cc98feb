/**
 * Runs a script in this very process, tied to the bench that started it over IPC:
 *
 *   node --import tsx bench/lib/tied-to-bench.ts src/server.ts
 *
 * The script runs unchanged (imported, so the measured pid and memory are the script's own process), but
 * when the bench goes away without stopping it (killed, or SIGKILLed by the tsx CLI when a Ctrl-C found it
 * busy), the IPC channel closes and this sends the process SIGTERM, which the Loa server answers with its
 * normal graceful shutdown. BENCH_REMOVE_ON_EXIT names a directory (the temporary DATA_DIR) to delete once
 * the process exits, however it exits short of SIGKILL.
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const script = process.argv[2];
if (!script) {
  console.error('usage: node --import tsx bench/lib/tied-to-bench.ts <script>');
  process.exit(64);
}

if (process.send) {
  // The channel must not be what keeps the process alive: the script decides that, as it would alone.
  process.channel?.unref();
  process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
}

const removeOnExit = process.env.BENCH_REMOVE_ON_EXIT;
if (removeOnExit) {
  process.on('exit', () => rmSync(removeOnExit, { recursive: true, force: true }));
}

// The script sees the command line it would have had if started directly.
process.argv.splice(1, 2, path.resolve(script));
await import(pathToFileURL(path.resolve(script)).href);
