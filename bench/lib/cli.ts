/**
 * Command-line flags of the benches, parsed one way: an unknown flag or a bad value prints the problem and the
 * usage and exits 64 (EX_USAGE); `--help` prints the usage and exits 0.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

type Flags = NonNullable<ParseArgsConfig['options']>;
const HELP = { help: { type: 'boolean', short: 'h', default: false } } as const;
type Values<T extends Flags> = ReturnType<
  typeof parseArgs<{ options: T & typeof HELP; strict: true; allowPositionals: false }>
>['values'];

export function parseBenchArgs<const T extends Flags>(flags: T, usage: string) {
  const fail = (message: string): never => {
    console.error(`${message}\n\n${usage}`);
    process.exit(64);
  };
  let values: Values<T>;
  try {
    values = parseArgs({ options: { ...flags, ...HELP }, strict: true, allowPositionals: false }).values;
  } catch (err) {
    return fail(err instanceof Error ? err.message : String(err));
  }
  if ((values as { help?: boolean }).help) {
    console.log(usage);
    process.exit(0);
  }
  /** A flag's value as a number ≥ min (an integer unless said otherwise). */
  const number = (name: string, raw: string, min: number, integer = true): number => {
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) {
      fail(`--${name} must be ${integer ? 'an integer' : 'a number'} ≥ ${min}, got "${raw}"`);
    }
    return n;
  };
  return { values, number, fail };
}
