import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    // Wall-clock times are Asia/Ho_Chi_Minh whatever the machine's TZ; run tests under a different TZ
    // so that any accidental use of local time shows up as a failure.
    env: { TZ: 'America/New_York' },
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
  },
});
