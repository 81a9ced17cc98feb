/**
 * Probes a relay's stream once when it is saved. The answer is a warning for the editor, never a refusal:
 * a station may only be on air at broadcast time, and the server's network is not the devices' network.
 *
 * Only the status line and headers are read; the body of a live stream never ends, so it is cancelled at
 * once. Redirects are followed (stations move their streams behind redirecting links), at most
 * MAX_REDIRECTS of them and only to http or https.
 *
 * The probe is made from the server, so its answer tells the editor whether an address the server can
 * reach answers (a form of server-side request forgery that only broadcasters and above can use). What is
 * reported is bounded accordingly: reachable or not, the status code, the content type (cut short) and a
 * reason in words; never the body, and never the server's own headers beyond the content type.
 */
import type { RelayProbe } from './programmes.schemas.js';

export type RelayProber = (url: string) => Promise<RelayProbe>;

export const PROBE_TIMEOUT_MS = 3_000;
/** Redirects followed before giving up: enough for a station's "latest stream" link and a CDN hop. */
export const MAX_REDIRECTS = 5;
/** A content type is a short token; a longer header is cut to this before it is stored and shown. */
const MAX_CONTENT_TYPE = 200;

/** Content types of what devices can relay: audio, Ogg, and HLS playlists. */
const STREAM_TYPES = [
  /^audio\//,
  /^application\/ogg\b/,
  /^application\/(vnd\.apple\.mpegurl|x-mpegurl)\b/,
  /^video\/mp2t\b/,
];

export function isStreamContentType(contentType: string | null): boolean {
  if (contentType === null) return false;
  const type = contentType.toLowerCase();
  return STREAM_TYPES.some((re) => re.test(type));
}

/** Why a request failed, in words for the editor: undici puts the system error in `cause`. */
function describe(err: unknown, timeoutMs: number): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return `no answer within ${timeoutMs / 1000} s`;
  const code = e.cause?.code;
  const known: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ENOTFOUND: 'host name not found',
    EAI_AGAIN: 'host name could not be resolved',
    ECONNRESET: 'connection reset',
    EHOSTUNREACH: 'host unreachable',
    ENETUNREACH: 'network unreachable',
  };
  if (code && known[code]) return known[code];
  // Old SHOUTcast servers answer "ICY 200 OK", which is not HTTP.
  if (code === 'HPE_INVALID_CONSTANT') return 'the answer is not HTTP (an old SHOUTcast server?)';
  return (e.cause?.message ?? e.message ?? 'request failed').slice(0, 200);
}

export function relayProber(options: { now: () => Date; timeoutMs?: number }): RelayProber {
  const timeoutMs = options.timeoutMs ?? PROBE_TIMEOUT_MS;
  return async (url) => {
    const checkedAt = options.now().toISOString();
    const failed = (error: string, status: number | null = null): RelayProbe => ({
      reachable: false,
      status,
      contentType: null,
      checkedAt,
      error,
    });
    // One deadline for the whole chain of redirects.
    const signal = AbortSignal.timeout(timeoutMs);
    let target = url;
    try {
      for (let redirects = 0; ; redirects++) {
        // Redirects by hand: fetch would follow twenty, and only this loop can say which hop went wrong.
        const res = await fetch(target, {
          method: 'GET',
          redirect: 'manual',
          signal,
          // No ICY metadata interleaved in the stream: only the headers matter here.
          headers: { 'icy-metadata': '0', 'user-agent': 'Loa relay probe' },
        });
        // Never read a live stream (or anything else the server sends) beyond what has already arrived.
        await res.body?.cancel().catch(() => undefined);
        const location = res.status >= 300 && res.status < 400 ? res.headers.get('location') : null;
        if (location !== null) {
          if (redirects >= MAX_REDIRECTS) return failed(`more than ${MAX_REDIRECTS} redirects`, res.status);
          let next: URL;
          try {
            next = new URL(location, target);
          } catch {
            return failed('the server redirected to an address that is not a URL', res.status);
          }
          if (next.protocol !== 'http:' && next.protocol !== 'https:') {
            return failed(
              `the server redirected to a ${next.protocol.slice(0, 20)} address; only http and https are followed`,
              res.status,
            );
          }
          target = next.href;
          continue;
        }
        const contentType = res.headers.get('content-type')?.slice(0, MAX_CONTENT_TYPE) ?? null;
        return {
          reachable: res.ok,
          status: res.status,
          contentType,
          checkedAt,
          ...(res.ok ? {} : { error: `the server answered HTTP ${res.status}` }),
        };
      }
    } catch (err) {
      return failed(describe(err, timeoutMs));
    }
  };
}

/** The probe as sentences for the editor; empty when the stream looked fine. */
export function probeWarnings(probe: RelayProbe | null): string[] {
  if (!probe) return [];
  if (!probe.reachable) {
    return [
      `The stream did not answer when it was saved (${probe.error ?? 'unreachable'}); check it before airing`,
    ];
  }
  if (!isStreamContentType(probe.contentType)) {
    return [`The stream answered with content type ${probe.contentType ?? '(none)'}, which is not audio`];
  }
  return [];
}
