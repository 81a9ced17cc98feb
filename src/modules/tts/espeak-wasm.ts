/**
 * Child process running the WebAssembly build of eSpeak NG (npm `espeak-ng`), used when no espeak-ng binary
 * is installed. It runs in its own process because a synthesis is one long synchronous WebAssembly call
 * that would otherwise stop the server's event loop (MQTT keepalives, HTTP) for its whole duration.
 *
 *   node espeak-wasm.js <out.wav> <voice> <rate> <pitch>    (UTF-8 text on stdin)
 *
 * The text goes through a file in the in-memory file system (`-f`), never through the command line.
 */
import fs from 'node:fs/promises';
import ESpeakNg from 'espeak-ng';

const [outFile, voice, rate, pitch] = process.argv.slice(2);
if (!outFile || !voice || !rate || !pitch) {
  process.stderr.write('usage: espeak-wasm <out.wav> <voice> <rate> <pitch> < text\n');
  process.exit(2);
}

const chunks: Buffer[] = [];
for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
const text = Buffer.concat(chunks);

const errors: string[] = [];
const instance = await ESpeakNg({
  // -b 1: the input is UTF-8 (Vietnamese tone marks), whatever the locale.
  arguments: ['-b', '1', '-v', voice, '-s', rate, '-p', pitch, '-w', '/out.wav', '-f', '/in.txt'],
  preRun: [(module) => module.FS.writeFile('/in.txt', text)],
  print: () => {},
  printErr: (line) => {
    // Emscripten's note about keepRuntimeAlive on exit is not an error.
    if (!line.startsWith('program exited')) errors.push(line);
  },
});

if (!instance.FS.analyzePath('/out.wav').exists) {
  process.stderr.write(`${errors.join('\n') || 'espeak-ng wrote no audio'}\n`);
  process.exit(1);
}
await fs.writeFile(outFile, instance.FS.readFile('/out.wav'));
process.exit(0);
