// Test harness: a real flagd (temporary SQLite file), the real SDK example, Chromium.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const UI_ROOT = join(HERE, '..');
export const REPO = join(UI_ROOT, '..');
export const SCREENSHOTS = join(UI_ROOT, 'screenshots');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls fn until it returns a truthy value; throws with the last error after `timeout`. */
export async function waitFor(fn, { timeout = 15000, interval = 100, message = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last = null;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = null;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) {
      throw new Error(`timed out waiting for ${message}${last ? `: ${last.message}` : ''}`);
    }
    await sleep(interval);
  }
}

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

function tail(buf) {
  return buf.join('').split('\n').slice(-30).join('\n');
}

function spawnLogged(bin, args, env) {
  const out = [];
  const child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (d) => out.push(d.toString()));
  child.stderr.on('data', (d) => out.push(d.toString()));
  child.log = () => tail(out);
  return child;
}

async function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

/** Starts flagd on a random loopback port with a new SQLite database; `args` are more of its options. */
export async function startFlagd({ args = [] } = {}) {
  const bin = process.env.FLAGD_BIN || join(REPO, 'target/debug/flagd');
  if (!existsSync(bin)) throw new Error(`flagd binary not found at ${bin} (build it: cargo build -j1 -p flagd --bin flagd, or set FLAGD_BIN)`);
  const dir = await mkdtemp(join(tmpdir(), 'flagd-ui-test-'));
  const port = await freePort();
  const adminToken = `fd_${randomBytes(24).toString('base64url')}`;
  const child = spawnLogged(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--database-url', `sqlite://${dir}/flagd.db?mode=rwc`, ...args], {
    FLAGD_ADMIN_TOKEN: adminToken,
    FLAGD_LOG_FORMAT: 'text',
  });
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`flagd exited (${child.exitCode}):\n${child.log()}`);
      const r = await fetch(`${base}/readyz`);
      return r.status === 200;
    }, { timeout: 30000, message: 'flagd /readyz' });
  } catch (err) {
    await stop(child);
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const server = {
    base,
    port,
    adminToken,
    child,
    log: () => child.log(),
    /** A REST call with a bearer token (the admin's by default). */
    async api(method, path, body, { token = adminToken, headers = {} } = {}) {
      const r = await fetch(`${base}/api/v1${path}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}), ...headers },
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
      const text = await r.text();
      let json = null;
      try {
        json = text ? JSON.parse(text) : null;
      } catch {
        json = text;
      }
      if (!r.ok) {
        const e = new Error(`${method} ${path} → ${r.status}: ${text}`);
        e.status = r.status;
        e.body = json;
        throw e;
      }
      return json;
    },
    async stop() {
      await stop(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
  return server;
}

/** Starts the checkout-service example (the real Rust SDK) against flagd. */
export async function startSdk(flagdBase, sdkKey) {
  const bin = process.env.SDK_BIN || join(REPO, 'target/debug/examples/checkout-service');
  if (!existsSync(bin)) throw new Error(`SDK example not found at ${bin} (cargo build -j1 -p flagd-examples --example checkout-service, or set SDK_BIN)`);
  const port = await freePort();
  const child = spawnLogged(bin, [], { FLAGD_URL: flagdBase, FLAGD_SDK_KEY: sdkKey, LISTEN: `127.0.0.1:${port}`, RUST_LOG: 'info' });
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`checkout-service exited (${child.exitCode}):\n${child.log()}`);
      const r = await fetch(`${base}/healthz`);
      return r.status === 200;
    }, { timeout: 30000, message: 'checkout-service /healthz' });
  } catch (err) {
    await stop(child);
    throw err;
  }
  return {
    base,
    child,
    log: () => child.log(),
    stop: () => stop(child),
    /** SIGSTOP: a hung host. Its socket stays open and nothing answers on it. */
    freeze: () => child.kill('SIGSTOP'),
    /** SIGKILL, which ends a stopped process too (SIGTERM would wait for a SIGCONT). */
    kill: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
  };
}

export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox'],
  });
}

export async function screenshotDir() {
  await mkdir(SCREENSHOTS, { recursive: true });
  return SCREENSHOTS;
}
