/**
 * The server's TLS certificate (TLS_CERT_FILE, TLS_KEY_FILE): read and checked at start, and read again when
 * the files change or on SIGHUP, so that a renewal (Let's Encrypt every 60–90 days) needs no restart and drops
 * no device. Node's `tls.Server#setSecureContext` swaps the certificate for new connections only; a connection
 * keeps the certificate it was opened with, so the loudspeakers already online never notice a renewal.
 *
 * A new pair that cannot be used (garbage, half written, a key that is not the certificate's) is logged and
 * the certificate in use is kept: a bad renewal must not take every listener down at the next handshake.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';

export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

/** What `tls.createServer` and `setSecureContext` take: the chain (leaf first) and its key, both PEM. */
export interface CertificatePair {
  cert: Buffer;
  key: Buffer;
}

interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

const SILENT: Logger = { info: () => {}, warn: () => {}, error: () => {} };

/**
 * Certificate and key are usually written one after the other (certbot, our own `npm run tls:dev`); between
 * the two writes the pair does not match. Events closer together than this make one reload.
 */
export const WATCH_DEBOUNCE_MS = 200;
/** A watch that failed (its directory removed and made again) is set up again after this long. */
const REWATCH_MS = 5_000;
/** An operator is warned when the certificate in use expires sooner than this. */
export const EXPIRY_WARNING_MS = 14 * 86_400_000;

/**
 * What every TLS listener is created with. `setSecureContext` replaces a server's context options wholesale
 * (an option it is not given falls back to Node's default, which `--tls-min-v1.0` lowers), so a reload passes
 * them again: a renewal must not reopen older protocol versions.
 */
export const TLS_SERVER_OPTIONS = { minVersion: 'TLSv1.2' } as const;

/**
 * Follows the sockets of a TLS server that have not finished their handshake, and returns what ends them at
 * shutdown. Until its handshake completes a socket is neither an HTTP connection (which Node's `server.close()`
 * ends when idle) nor an MQTT client (which Aedes closes), so `server.close()` waits for it until its
 * handshake timeout: one half-open connection from a scanner held a restart past SHUTDOWN_TIMEOUT_S. The
 * encrypted socket and the TCP one under it are matched by the peer's address and port, public on both.
 */
export function trackHandshakes(server: tls.Server): () => void {
  const pending = new Map<string, net.Socket>();
  const key = (socket: net.Socket) => `${socket.remoteAddress}|${socket.remotePort}`;
  server.on('connection', (socket: net.Socket) => {
    if (socket.destroyed) return; // refused at once (a per-address cap)
    const k = key(socket);
    pending.set(k, socket);
    socket.once('close', () => {
      if (pending.get(k) === socket) pending.delete(k);
    });
  });
  server.on('secureConnection', (socket: tls.TLSSocket) => {
    pending.delete(key(socket));
  });
  return () => {
    for (const socket of pending.values()) socket.destroy();
    pending.clear();
  };
}

export class CertificateError extends Error {
  override name = 'CertificateError';
}

/** Reads a PEM pair and checks that it can serve TLS; throws a CertificateError saying what is wrong. */
function readPair(files: TlsFiles): { pair: CertificatePair; leaf: crypto.X509Certificate } {
  let cert: Buffer;
  let key: Buffer;
  try {
    cert = fs.readFileSync(files.certFile);
    key = fs.readFileSync(files.keyFile);
  } catch (err) {
    throw new CertificateError(`cannot read: ${(err as Error).message}`);
  }
  const text = cert.toString('latin1');
  const begins = text.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0;
  const ends = text.match(/-----END CERTIFICATE-----/g)?.length ?? 0;
  // A file caught half written ends inside a certificate: the leaf may parse while the chain is cut short.
  if (begins === 0 || begins !== ends) {
    throw new CertificateError(
      `${files.certFile}: not a complete PEM certificate chain (${begins} BEGIN, ${ends} END lines)`,
    );
  }
  let leaf: crypto.X509Certificate;
  try {
    leaf = new crypto.X509Certificate(cert);
  } catch (err) {
    throw new CertificateError(`${files.certFile}: not a certificate: ${(err as Error).message}`);
  }
  let privateKey: crypto.KeyObject;
  try {
    privateKey = crypto.createPrivateKey(key);
  } catch (err) {
    throw new CertificateError(`${files.keyFile}: not a private key: ${(err as Error).message}`);
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new CertificateError(`${files.keyFile} is not the private key of ${files.certFile}`);
  }
  try {
    // What the listeners will do with the pair, so that anything else OpenSSL objects to shows here.
    tls.createSecureContext({ cert, key });
  } catch (err) {
    throw new CertificateError(`${files.certFile}: unusable: ${(err as Error).message}`);
  }
  return { pair: { cert, key }, leaf };
}

/** One certificate's identity, for log lines and /readyz: never the key. */
export interface CertificateInfo {
  subject: string;
  /** SHA-256 of the leaf certificate, as `openssl x509 -fingerprint -sha256` prints it. */
  fingerprint: string;
  expiresAt: Date;
}

export class ServerCertificate {
  private current: CertificatePair;
  private leaf: crypto.X509Certificate;
  private readonly listeners: ((pair: CertificatePair) => void)[] = [];
  private readonly watchers: fs.FSWatcher[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Folders whose watch could not be set up, said once each rather than at every retry. */
  private readonly unwatchable = new Set<string>();
  private debounce: NodeJS.Timeout | undefined;
  /** The content last refused, so that a broken file is reported once, not at every event in its folder. */
  private refused: string | undefined;
  private log: Logger = SILENT;
  private closed = false;

  private constructor(
    readonly files: TlsFiles,
    loaded: ReturnType<typeof readPair>,
  ) {
    this.current = loaded.pair;
    this.leaf = loaded.leaf;
  }

  /** Reads the files at start; throws a CertificateError (the server does not start without its certificate). */
  static load(files: TlsFiles): ServerCertificate {
    return new ServerCertificate(files, readPair(files));
  }

  get pair(): CertificatePair {
    return this.current;
  }

  get info(): CertificateInfo {
    return {
      subject: this.leaf.subject.replace(/\n/g, ', '),
      fingerprint: this.leaf.fingerprint256,
      expiresAt: this.expiresAt,
    };
  }

  get expiresAt(): Date {
    return new Date(this.leaf.validTo);
  }

  /** Called with the new pair after each successful reload (never for the one loaded at start). */
  onReload(listener: (pair: CertificatePair) => void): void {
    this.listeners.push(listener);
  }

  /**
   * Reads the files again. True when a new certificate is now served to new connections; false when the
   * files hold the certificate already in use, or a pair that cannot be used (logged; the old one is kept).
   */
  reload(): boolean {
    let loaded: ReturnType<typeof readPair>;
    try {
      loaded = readPair(this.files);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      if (this.refused !== reason) {
        this.refused = reason;
        this.log.error(
          { reason, fingerprint: this.leaf.fingerprint256, expiresAt: this.expiresAt.toISOString() },
          'TLS certificate files cannot be used; keeping the certificate in use',
        );
      }
      return false;
    }
    this.refused = undefined;
    if (loaded.pair.cert.equals(this.current.cert) && loaded.pair.key.equals(this.current.key)) {
      return false;
    }
    this.current = loaded.pair;
    this.leaf = loaded.leaf;
    for (const listener of this.listeners) listener(loaded.pair);
    const { subject, fingerprint, expiresAt } = this.info;
    this.log.info(
      { subject, fingerprint, expiresAt: expiresAt.toISOString() },
      'TLS certificate reloaded; new connections use it, open ones keep theirs',
    );
    return true;
  }

  /** Logs a warning when the certificate in use expires within EXPIRY_WARNING_MS of `now` (or has expired). */
  warnIfExpiring(now: Date): void {
    const left = this.expiresAt.getTime() - now.getTime();
    if (left >= EXPIRY_WARNING_MS) return;
    this.log.warn(
      {
        expiresAt: this.expiresAt.toISOString(),
        daysLeft: Math.floor(left / 86_400_000),
        certFile: this.files.certFile,
      },
      left <= 0 ? 'TLS certificate has expired: clients refuse it' : 'TLS certificate expires soon; renew it',
    );
  }

  /**
   * Watches both files' folders and reloads when something in them changes. The folders, not the files: a
   * renewal replaces a file (a rename over it, or certbot's live/ symlinks pointing at new archive/ files, or
   * Kubernetes' ..data symlink swap), and a watch on the old file would see nothing after the first renewal.
   * Any change in a folder triggers a read; reload() compares the contents, so unrelated files cost one read.
   */
  watch(log: Logger): void {
    this.log = log;
    const dirs = new Set([path.dirname(this.files.certFile), path.dirname(this.files.keyFile)]);
    for (const dir of dirs) this.watchDir(dir);
  }

  private watchDir(dir: string): void {
    if (this.closed) return;
    let watcher: fs.FSWatcher;
    try {
      watcher = fs.watch(dir, { persistent: false }, () => this.changed());
    } catch (err) {
      if (!this.unwatchable.has(dir)) {
        this.unwatchable.add(dir);
        this.log.warn(
          { dir, err: (err as Error).message },
          'cannot watch the TLS certificate folder; retrying (hourly re-reads and SIGHUP still work)',
        );
      }
      this.rewatch(dir);
      return;
    }
    if (this.unwatchable.delete(dir)) this.log.info({ dir }, 'watching the TLS certificate folder again');
    this.watchers.push(watcher);
    watcher.on('error', (err) => {
      // The folder itself went away (removed, or unmounted and mounted again): watch it again once it is back.
      this.log.warn({ dir, err: err.message }, 'watch of the TLS certificate folder ended; watching again');
      watcher.close();
      this.watchers.splice(this.watchers.indexOf(watcher), 1);
      this.rewatch(dir);
      this.changed();
    });
  }

  private rewatch(dir: string): void {
    // Real time, not the app's clock: these follow the file system, which a test's ManualClock does not drive.
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this.watchDir(dir);
    }, REWATCH_MS);
    timer.unref();
    this.timers.add(timer);
  }

  private changed(): void {
    if (this.closed) return;
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      if (!this.closed) this.reload();
    }, WATCH_DEBOUNCE_MS);
    this.debounce.unref();
  }

  /** Stops watching (app close). */
  close(): void {
    this.closed = true;
    if (this.debounce) clearTimeout(this.debounce);
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    for (const watcher of this.watchers.splice(0)) watcher.close();
  }
}
