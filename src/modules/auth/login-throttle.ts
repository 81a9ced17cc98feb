import { isIPv6 } from 'node:net';
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { AppError } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';

export interface LoginLimits {
  /** Wrong guesses for one username from one address: the strict limit. */
  perUsernameAndAddress: number;
  /** Attempts from one address, whatever the username. */
  perAddress: number;
  /**
   * Attempts on one username from every address together. Loose on purpose: a flood from one address
   * is stopped by the two limits above and must not lock the real user (who may need to send a flood
   * warning) out from their own address; this one only slows a guesser spread over many addresses.
   */
  perUsername: number;
  windowMs: number;
}

export const DEFAULT_LOGIN_LIMITS: LoginLimits = {
  perUsernameAndAddress: 5,
  perAddress: 20,
  perUsername: 100,
  windowMs: 15 * 60_000,
};

/** What a successful check hands back, so that a correct password can give the attempt back. */
export interface LoginAttempt {
  readonly keys: { pair: string; address: string; username: string };
}

/**
 * Counts login attempts BEFORE the password is checked: the count is taken synchronously in the library's
 * memory store, so of 50 guesses sent in parallel only the first five are ever verified (counting failures
 * after verifying let them all through while the slow hash ran). A correct password gives its attempt back,
 * so only wrong guesses use up the limits.
 *
 * rate-limiter-flexible reads Date.now() and has no clock option, so the windows are fixed slices of the
 * injected clock carried in the key; the library counts atomically and forgets a key one window after
 * its first use. A fixed window lets through at most twice the limit around a boundary, like the window
 * opened by a first failure it replaces. In memory: one process owns the API.
 */
export class LoginThrottle {
  private readonly pair: RateLimiterMemory;
  private readonly address: RateLimiterMemory;
  private readonly username: RateLimiterMemory;

  constructor(
    private readonly clock: Clock,
    private readonly limits: LoginLimits = DEFAULT_LOGIN_LIMITS,
  ) {
    const duration = Math.ceil(limits.windowMs / 1000);
    this.pair = new RateLimiterMemory({ points: limits.perUsernameAndAddress, duration, keyPrefix: 'p' });
    this.address = new RateLimiterMemory({ points: limits.perAddress, duration, keyPrefix: 'a' });
    this.username = new RateLimiterMemory({ points: limits.perUsername, duration, keyPrefix: 'u' });
  }

  /**
   * Charges one attempt, or throws `too_many_requests` (with Retry-After) when a limit is reached. The
   * address is charged first and the username last, so attempts refused by a stricter limit never count
   * against the username across addresses.
   */
  async attempt(username: string, address: string): Promise<LoginAttempt> {
    const now = this.clock.now().getTime();
    const slice = Math.floor(now / this.limits.windowMs);
    const who = addressKey(address);
    const keys = {
      address: `${slice}:${who}`,
      pair: `${slice}:${who}:${username}`,
      username: `${slice}:${username}`,
    };
    const retryAfterS = Math.max(1, Math.ceil(((slice + 1) * this.limits.windowMs - now) / 1000));
    for (const [limiter, key] of [
      [this.address, keys.address],
      [this.pair, keys.pair],
      [this.username, keys.username],
    ] as const) {
      try {
        await limiter.consume(key);
      } catch (err) {
        if (!(err instanceof RateLimiterRes)) throw err;
        throw new AppError('too_many_requests', `Too many login attempts; try again in ${retryAfterS} s`, {
          retryAfterS,
        });
      }
    }
    return { keys };
  }

  /** The password was right: the attempt does not count, and earlier wrong guesses of this pair are forgiven. */
  async succeeded(attempt: LoginAttempt): Promise<void> {
    await Promise.all([
      this.pair.delete(attempt.keys.pair),
      this.address.reward(attempt.keys.address),
      this.username.reward(attempt.keys.username),
    ]);
  }
}

/**
 * One key per IPv4 address, and per /64 for IPv6: a single subscriber usually holds a whole /64 and
 * could otherwise take a fresh address for every guess.
 */
function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1]) return mapped[1];
  if (!isIPv6(address)) return address;
  const [head = '', tail = ''] = address.toLowerCase().split('%')[0]!.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  // An embedded IPv4 tail (::ffff:a.b.c.d, 64:ff9b::a.b.c.d) fills two groups.
  const width = (gs: string[]) => gs.reduce((n, g) => n + (g.includes('.') ? 2 : 1), 0);
  const groups = address.includes('::')
    ? [...left, ...Array<string>(Math.max(0, 8 - width(left) - width(right))).fill('0'), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}
