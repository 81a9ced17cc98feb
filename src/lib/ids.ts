import { createHash, randomBytes } from 'node:crypto';

// Crockford-style base32 without look-alike letters: ids get read aloud over the phone by technicians.
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

/**
 * A prefixed random id such as `dev_5k2m…` (prefix + 20 chars, 100 bits). The prefix tells a technician
 * what kind of thing an id names. Device ids are 24 characters, longer than MQTT 3.1.1's 23-character
 * guarantee, so the broker is configured to accept them (maxClientsIdLength).
 */
export type IdPrefix = 'ar' | 'usr' | 'dev' | 'cmd' | 'ses' | 'med' | 'prg' | 'rev' | 'sch' | 'emg' | 'wsrc';

export function newId(prefix: IdPrefix): string {
  return encode(prefix, randomBytes(20));
}

/**
 * An id of the same shape as newId's, but always the same for the same parts: the play command of a
 * schedule's occurrence is named by (schedule, slot), so if a crash makes the server send it again, devices
 * recognise the command they already have and ignore it (protocol rule: de-duplicate by id).
 */
export function derivedId(prefix: IdPrefix, ...parts: string[]): string {
  return encode(prefix, createHash('sha256').update(parts.join('\u0000')).digest().subarray(0, 20));
}

function encode(prefix: IdPrefix, bytes: Uint8Array): string {
  let out = `${prefix}_`;
  for (const b of bytes) out += ALPHABET[b & 31];
  return out;
}

/** A secret for devices and API tokens: 32 random bytes, base64url. */
export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}
