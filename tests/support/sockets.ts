/**
 * Raw TCP sockets for the limit tests: connections from another loopback address (Linux routes all of
 * 127/8 to lo, so the server sees 127.0.0.2 as another host) that send nothing, or bytes of our choosing.
 */
import net from 'node:net';

/**
 * A raw TCP connection from `localAddress`, open once the handshake is done (rejects if the server closes
 * it first). It is read continuously, so whatever the server answers before closing (a 408, a CONNACK)
 * does not keep its 'close' from being seen. `track` collects it for the test's clean-up.
 */
export async function rawSocket(
  port: number,
  localAddress = '127.0.0.1',
  track?: net.Socket[],
): Promise<net.Socket> {
  const socket = net.connect({ host: '127.0.0.1', port, localAddress });
  track?.push(socket);
  socket.on('error', () => undefined);
  socket.resume();
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('close', () => reject(new Error('closed before connecting')));
  });
  return socket;
}

/** Resolves when the socket has closed (at once if it already has). */
export const socketClosed = (socket: net.Socket) =>
  new Promise<void>((resolve) => {
    if (socket.destroyed) resolve();
    else socket.once('close', () => resolve());
  });
