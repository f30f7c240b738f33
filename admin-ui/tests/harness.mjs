// Test harness: a real flagd (temporary SQLite file), the real SDK example, a real
// OpenID provider (oidc-provider, in-process), Chromium.
import { spawn } from 'node:child_process';
import { createServer as createHttpServer } from 'node:http';
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { randomBytes, generateKeyPairSync } from 'node:crypto';
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

/**
 * Starts flagd on a loopback port with a new SQLite database; `args` are more of its
 * options. `port` is for a caller that must name flagd's URL before it starts (an
 * identity provider's redirect URI); a random free one otherwise.
 */
export async function startFlagd({ args = [], port: wanted } = {}) {
  const bin = process.env.FLAGD_BIN || join(REPO, 'target/debug/flagd');
  if (!existsSync(bin)) throw new Error(`flagd binary not found at ${bin} (build it: cargo build -j1 -p flagd --bin flagd, or set FLAGD_BIN)`);
  const dir = await mkdtemp(join(tmpdir(), 'flagd-ui-test-'));
  const port = wanted || await freePort();
  const adminToken = `fd_${randomBytes(24).toString('base64url')}`;
  const child = spawnLogged(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--database-url', `sqlite://${dir}/flagd.db?mode=rwc`, ...args], {
    FLAGD_ADMIN_TOKEN: adminToken,
    FLAGD_LOG_FORMAT: 'text',
  });
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`flagd exited (${child.exitCode}):\n${child.log()}`);
      const r = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(5000) });
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

/**
 * An OpenID Connect provider (npm's oidc-provider) in this process, on a random loopback
 * port, with its development sign-in pages (any password is accepted for a known login,
 * then a consent page with "Continue"). `accounts` maps a login (the subject) to its
 * claims; `client` is the one registered client. `groups` rides in the `profile` scope
 * and `conformIdTokenClaims` is off, so every claim of the scopes granted, groups
 * included, is in the ID token itself and not only at the userinfo endpoint.
 */
export async function startIdp({ client, accounts }) {
  const { default: Provider } = await import('oidc-provider');
  const http = createHttpServer();
  await new Promise((resolve, reject) => {
    http.once('error', reject);
    http.listen(0, '127.0.0.1', resolve);
  });
  const issuer = `http://127.0.0.1:${http.address().port}`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const provider = new Provider(issuer, {
    clients: [client],
    jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'test-key', use: 'sig', alg: 'RS256' }] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'groups'],
      groups: ['groups'],
    },
    conformIdTokenClaims: false,
    // Lifetimes named, so the provider does not remind of its defaults on every sign-in.
    ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: 600, AuthorizationCode: 60 },
    async findAccount(_ctx, sub) {
      const claims = accounts[sub];
      if (!claims) return undefined;
      return { accountId: sub, claims: async () => ({ sub, ...claims }) };
    },
  });
  const issued = [];
  provider.on('grant.success', (ctx) => {
    const idToken = ctx.body && ctx.body.id_token;
    if (idToken) issued.push(JSON.parse(Buffer.from(idToken.split('.')[1], 'base64url').toString()));
  });
  http.on('request', provider.callback());
  return {
    issuer,
    provider,
    /** The payloads of the ID tokens issued so far, decoded (their signature is flagd's to check). */
    idTokens: issued,
    stop: () => new Promise((r) => {
      http.closeAllConnections();
      http.close(() => r());
    }),
  };
}

/** Aborts every request a page makes beyond loopback (the provider's pages link a web font). */
export async function loopbackOnly(context) {
  await context.route((url) => !['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname), (r) => r.abort());
}

export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox'],
  });
}

// Network errors the scenarios provoke on purpose (401 before sign-in, 403 forged
// requests, 409 conflicts, 422 refusals) are logged by Chromium as "Failed to load
// resource"; everything else, including any CSP violation, is a failure.
const EXPECTED_NETWORK = /Failed to load resource: the server responded with a status of (401|403|409|422)/;

/**
 * Collects the page's console errors and uncaught exceptions into `errors`, and its CSP
 * violations for cspViolations(). With `origin`, only those of pages from there count
 * (not an identity provider's own pages).
 */
export function watchPage(p, label, errors, { origin } = {}) {
  const ours = (url) => !origin || !url || url.startsWith(origin);
  p.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    if (!ours(msg.location().url) || !ours(p.url())) return;
    const text = msg.text();
    if (EXPECTED_NETWORK.test(text)) return;
    errors.push(`[${label}] console: ${text}`);
  });
  p.on('pageerror', (err) => {
    if (ours(p.url())) errors.push(`[${label}] pageerror: ${err.message}`);
  });
  p.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
}

export async function cspViolations(p) {
  return p.evaluate(() => window.__csp || []);
}

/** Form controls without an accessible name (label, aria-label or text). */
export async function unlabeledControls(p) {
  return p.evaluate(() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter((el) => !el.closest('[hidden]') && el.type !== 'hidden')
    .filter((el) => !(el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
      || (el.labels && el.labels.length) || (el.tagName === 'BUTTON' && el.textContent.trim())))
    .map((el) => el.outerHTML.slice(0, 140)));
}

/** Waits until the locator is visible (auto-waiting, generous timeout). */
export async function visible(locator, timeout = 15000) {
  await locator.first().waitFor({ state: 'visible', timeout });
  return locator.first();
}

/** A screenshot without transient toasts; `tall` grows the viewport to the page's height. */
export async function screenshot(page, path, { tall = false } = {}) {
  await page.evaluate(() => {
    document.querySelectorAll('.toasts .toast').forEach((x) => x.remove());
    if (document.activeElement && document.activeElement.matches('input, textarea')) document.activeElement.blur();
  });
  if (!tall) {
    await page.screenshot({ path });
    return;
  }
  const vp = page.viewportSize();
  const height = await page.evaluate(() => document.documentElement.scrollHeight);
  await page.setViewportSize({ width: vp.width, height: Math.min(Math.max(height, vp.height), 2400) });
  await page.screenshot({ path });
  await page.setViewportSize(vp);
}

export async function screenshotDir() {
  await mkdir(SCREENSHOTS, { recursive: true });
  return SCREENSHOTS;
}
