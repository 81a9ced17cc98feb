/**
 * An approved programme for tests whose subject is what happens after approval (sending, playing): a relay,
 * which needs no rendering. Its URL points at a closed local port, so the probe on save fails at once and
 * the programme is saved with a warning, as a stream that is not on air yet would be.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestApp } from './app.js';

/** A relay URL on this machine that nothing listens on: connection refused at once. */
export async function closedPortUrl(pathname = '/vov1'): Promise<string> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}${pathname}`;
}

export async function approvedRelay(
  t: TestApp,
  editorToken: string,
  areaId: string,
  options: { title?: string; approverToken?: string } = {},
): Promise<{ id: string; url: string }> {
  const url = 'http://127.0.0.1:9/truc-tiep.mp3';
  const created = await t.request('POST', '/api/v1/programmes', {
    token: editorToken,
    body: {
      title: options.title ?? 'Tiếp sóng Đài Tiếng nói Việt Nam',
      areaId,
      category: 'news',
      content: { relay: { url, name: 'VOV1' } },
    },
  });
  if (created.statusCode !== 201) throw new Error(`programme not created: ${created.body}`);
  const { id } = created.json<{ id: string }>();
  for (const [step, token] of [
    ['submit', editorToken],
    ['approve', options.approverToken ?? t.adminToken],
  ] as const) {
    const res = await t.request('POST', `/api/v1/programmes/${id}/${step}`, { token, body: {} });
    if (res.statusCode !== 200) throw new Error(`programme ${step} failed: ${res.body}`);
  }
  return { id, url };
}
