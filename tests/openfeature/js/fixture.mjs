// The shared fixture of the JavaScript suite: a flagd (the binary in $FLAGD_BIN) on random
// loopback ports with a fresh SQLite database, the flag set of ../fixture/flags.json, an
// SDK key, and OFREP as the reference every provider answer is compared with.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const here = dirname(fileURLToPath(import.meta.url));
export const FIXTURE_DIR = join(here, '..', 'fixture');
export const FLAGS = JSON.parse(readFileSync(join(FIXTURE_DIR, 'flags.json'), 'utf8'));
export const CONTEXTS = JSON.parse(readFileSync(join(FIXTURE_DIR, 'contexts.json'), 'utf8'));
export const ENV = 'production';

// The OpenFeature flagd providers read FLAGD_HOST, FLAGD_PORT, FLAGD_CACHE, …; flagd reads
// FLAGD_LISTEN, FLAGD_DATABASE_URL, …: none of the caller's may leak into a test.
for (const name of Object.keys(process.env)) {
  if (name.startsWith('FLAGD_') && name !== 'FLAGD_BIN') delete process.env[name];
}

/** Waits for `check()` to return a truthy value, polling every `every` ms until `ms`. */
export async function waitFor(what, check, { ms = 20000, every = 20 } = {}) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message ?? last}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

/** A free loopback port (bound to port 0 and released: the caller retries on a clash). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// Every flagd started is killed when this process ends, however it ends (short of SIGKILL).
const live = new Set();
const dirs = new Set();
function killAll() {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
  if (!process.env.KEEP_FLAGD_DIR) for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
process.on('exit', killAll);
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.once(sig, () => {
    killAll();
    process.exit(128 + { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 }[sig]);
  });
}

/** Prints a line the runner collects into its timing table. */
export function timing(client, mode, what, ms) {
  console.log(`TIMING ${client} ${mode} ${what} ${ms.toFixed(1)}`);
}

/**
 * A flagd process: `start()`, `kill()` (SIGKILL), `restart()` (same ports, same
 * database), `stop()`; `api()` for the REST API as the admin; `ofrep()` for the reference.
 */
export class Flagd {
  constructor() {
    this.bin = process.env.FLAGD_BIN;
    if (!this.bin) throw new Error('FLAGD_BIN must name the flagd binary (e.g. target/debug/flagd)');
    this.dir = mkdtempSync(join(tmpdir(), 'flagd-of-js-'));
    dirs.add(this.dir);
    this.adminToken = 'fd_' + randomBytes(32).toString('base64url');
    this.logFile = join(this.dir, 'flagd.log');
    this.child = null;
  }

  get base() {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  /** Starts on fresh random ports (a clash with another process: new ports, 5 tries). */
  async start() {
    let lastError;
    for (let attempt = 0; attempt < 5; attempt++) {
      this.httpPort = await freePort();
      this.grpcPort = await freePort();
      if (this.grpcPort === this.httpPort) continue;
      try {
        await this.#spawn();
        return this;
      } catch (e) {
        lastError = e;
        await this.kill();
      }
    }
    throw lastError ?? new Error('flagd did not start');
  }

  async #spawn() {
    const env = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('FLAGD_')) env[k] = v;
    env.FLAGD_ADMIN_TOKEN = this.adminToken;
    env.RUST_LOG = process.env.RUST_LOG ?? 'info';
    const out = openSync(this.logFile, 'a');
    const args = [
      '--database-url', `sqlite://${join(this.dir, 'flagd.db')}?mode=rwc`,
      '--listen', `127.0.0.1:${this.httpPort}`,
      '--grpc-listen', `127.0.0.1:${this.grpcPort}`,
      ...(this.extraArgs ?? []),
    ];
    const child = spawn(this.bin, args, { env, stdio: ['ignore', out, out] });
    closeSync(out);
    this.child = child;
    live.add(child);
    let exited = null;
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      live.delete(child);
    });
    await waitFor(
      `flagd to listen on 127.0.0.1:${this.grpcPort} and be ready on ${this.httpPort}`,
      async () => {
        if (exited) throw new Error(`flagd exited (${JSON.stringify(exited)}):\n${this.logTail()}`);
        const log = readFileSync(this.logFile, 'utf8');
        if (!log.includes(`gRPC (OpenFeature flagd providers): 127.0.0.1:${this.grpcPort}`)) return false;
        const r = await fetch(`${this.base}/readyz`).catch(() => null);
        return r?.status === 200;
      },
      { ms: 20000, every: 25 },
    );
  }

  logTail(lines = 40) {
    try {
      return readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** SIGKILL (or `signal`), and waits for the process to be gone. */
  async kill(signal = 'SIGKILL') {
    const child = this.child;
    if (!child) return;
    this.child = null;
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      const timer = signal === 'SIGKILL' ? null : setTimeout(() => child.kill('SIGKILL'), 15000);
      await gone;
      if (timer) clearTimeout(timer);
    }
    live.delete(child);
  }

  /**
   * kill -9 (or a graceful SIGTERM), then the same binary on the same ports and the same
   * database file.
   */
  async restart(signal = 'SIGKILL') {
    await this.kill(signal);
    const deadline = Date.now() + 20000;
    for (;;) {
      try {
        await this.#spawn();
        return this;
      } catch (e) {
        await this.kill();
        // The old sockets may linger a moment: the same ports again, until the deadline.
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async stop() {
    await this.kill();
    if (!process.env.KEEP_FLAGD_DIR) rmSync(this.dir, { recursive: true, force: true });
    dirs.delete(this.dir);
  }

  /** One REST call as the admin: `{status, body, headers}`; throws on an unexpected status. */
  async api(method, path, body, { expect } = {}) {
    const r = await fetch(`${this.base}/api/v1${path}`, {
      method,
      headers: { Authorization: `Bearer ${this.adminToken}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    const parsed = text ? JSON.parse(text) : null;
    const ok = expect ? [].concat(expect).includes(r.status) : r.status >= 200 && r.status < 300;
    if (!ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
    return { status: r.status, body: parsed, headers: r.headers };
  }

  /** OFREP's answer for one flag: the reference. */
  async ofrep(key, context, sdkKey) {
    const r = await fetch(`${this.base}/ofrep/v1/evaluate/flags/${encodeURIComponent(key)}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${sdkKey}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ context }),
    });
    return { status: r.status, ...(await r.json()) };
  }

  async createSdkKey(env = ENV) {
    const { body } = await this.api('POST', `/environments/${env}/sdk-keys`, undefined, { expect: 201 });
    return { id: body.sdkKey.id, secret: body.secret };
  }

  async revokeSdkKey(id) {
    await this.api('DELETE', `/tokens/${id}`, undefined, { expect: 204 });
  }

  async loadFlags(doc = FLAGS, env = ENV) {
    const { body } = await this.api('PUT', `/environments/${env}/flags`, doc);
    return body.version;
  }

  async fleet(env = ENV) {
    return (await this.api('GET', `/environments/${env}/fleet`)).body;
  }
}

/** flagd started, the fixture's flags loaded, an SDK key made. */
export async function startFixture({ extraArgs } = {}) {
  const flagd = new Flagd();
  flagd.extraArgs = extraArgs;
  try {
    await flagd.start();
    const version = await flagd.loadFlags();
    const key = await flagd.createSdkKey();
    return { flagd, key, version };
  } catch (e) {
    console.error(flagd.logTail());
    await flagd.stop();
    throw e;
  }
}

/** The provider's typed call for a flag's variants: boolean, string, number or object. */
export function flagType(key, doc = FLAGS) {
  const values = Object.values(doc.flags[key].variants);
  const t = typeof values[0];
  if (t === 'object') return 'object';
  return t; // boolean | string | number
}

/** A default the provider must give back when flagd names no value. */
export function codeDefault(type) {
  return { boolean: false, string: 'code-default', number: -999, object: { code: 'default' } }[type];
}

export const now = () => performance.now();
