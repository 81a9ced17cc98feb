/**
 * A Server-Sent Events client for tests, over real HTTP (node:http, as any EventSource would): it collects
 * every event of the stream, and `next(kind)` waits for the next one of that kind.
 */
import http from 'node:http';
import { waitFor } from './wait.js';

export interface StreamEvent<T = unknown> {
  event: string;
  id: string;
  data: T;
}

export interface EventStream<T> {
  /** The answer's status and content type, once its head has arrived. */
  head: Promise<{ status: number; contentType: string }>;
  /**
   * The next event of this kind not yet returned. `onWait` runs between looks (a test on a manual clock
   * moves it there, since the server's stream polls on that clock).
   */
  next(kind: string, options?: { timeoutMs?: number; onWait?: () => void }): Promise<StreamEvent<T>>;
  close(): void;
}

/** One event block ("field: value" lines); comments (": keepalive") and the retry hint are skipped. */
function parseBlock<T>(block: string): StreamEvent<T> | null {
  const fields = new Map<string, string>();
  for (const line of block.split('\n')) {
    const colon = line.indexOf(': ');
    if (line.startsWith(':') || colon < 0) continue;
    fields.set(line.slice(0, colon), line.slice(colon + 2));
  }
  const event = fields.get('event');
  if (!event) return null;
  return { event, id: fields.get('id') ?? '', data: JSON.parse(fields.get('data') ?? 'null') as T };
}

export function openEventStream<T = unknown>(url: string, headers: Record<string, string>): EventStream<T> {
  const events: StreamEvent<T>[] = [];
  let buffer = '';
  let read = 0;
  let resolveHead: (head: { status: number; contentType: string }) => void = () => {};
  const head = new Promise<{ status: number; contentType: string }>((resolve) => (resolveHead = resolve));
  const req = http.get(url, { headers: { accept: 'text/event-stream', ...headers } }, (res) => {
    resolveHead({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? '') });
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      buffer += chunk;
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = parseBlock<T>(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event) events.push(event);
      }
    });
  });
  // Ended by close(), or by the server at the end of a test.
  req.on('error', () => {});
  return {
    head,
    next: (kind, options = {}) =>
      waitFor(
        () => {
          for (; read < events.length; read++) if (events[read]!.event === kind) return events[read++]!;
          options.onWait?.();
          return undefined;
        },
        `event ${kind}`,
        options.timeoutMs,
      ),
    close: () => req.destroy(),
  };
}
