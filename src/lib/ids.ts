import { randomBytes } from 'node:crypto';

// Crockford-style base32 without look-alike letters: ids get read aloud over the phone by technicians.
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

/**
 * A prefixed random id such as `dev_5k2m…` (prefix + 20 chars, 100 bits). The prefix tells a technician
 * what kind of thing an id names. Device ids are 24 characters, longer than MQTT 3.1.1's 23-character
 * guarantee, so the broker is configured to accept them (maxClientsIdLength).
 */
export function newId(prefix: 'ar' | 'usr' | 'dev' | 'cmd' | 'ses' | 'med' | 'prg' | 'rev'): string {
  const bytes = randomBytes(20);
  let out = `${prefix}_`;
  for (const b of bytes) out += ALPHABET[b & 31];
  return out;
}

/** A secret for devices and API tokens: 32 random bytes, base64url. */
export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}
