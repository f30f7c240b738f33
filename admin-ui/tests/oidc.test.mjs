// End-to-end: single sign-on with a real OpenID provider (npm's oidc-provider, in this
// process) in front of a real flagd, driven in headless Chromium. An SRE signs in at the
// provider, lands in the UI as their e-mail address with the role their group maps to,
// and flips a kill switch recorded under their name; someone in no mapped group is
// refused and told why; a callback flagd did not start is refused. Run from the
// repository root:
//   node --test admin-ui/tests/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  startFlagd, startIdp, freePort, launchBrowser, loopbackOnly, screenshotDir, waitFor, watchPage, cspViolations, visible, screenshot,
} from './harness.mjs';

const P = '/environments/production';
const CLIENT_ID = 'flagd-admin-ui';
const CLIENT_SECRET = 'a-client-secret-for-tests-only';
// The provider's accounts, by login at its development sign-in page (any password).
const ACCOUNTS = {
  sam: { email: 'sam@example.com', email_verified: true, name: 'Sam Reliability', groups: ['sre', 'oncall'] },
  dev: { email: 'dev@example.com', email_verified: true, name: 'Dee Veloper', groups: ['devs'] },
  mo: { email: 'mo@example.com', email_verified: true, name: 'Mo Marketing', groups: ['marketing'] },
};

let idp;
let server;
let browser;
let shots;
const consoleErrors = [];

before(async () => {
  shots = await screenshotDir();
  // The provider must know flagd's redirect URI, and flagd the provider's issuer: pick
  // flagd's port first.
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  idp = await startIdp({
    client: {
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: [`${base}/api/v1/session/oidc/callback`],
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    accounts: ACCOUNTS,
  });
  server = await startFlagd({
    port,
    args: [
      '--oidc-issuer', idp.issuer,
      '--oidc-client-id', CLIENT_ID,
      '--oidc-client-secret', CLIENT_SECRET,
      '--oidc-name', 'Test IdP',
      '--oidc-role', 'sre=responder@production',
      '--oidc-role', 'devs=editor',
      '--public-url', base,
    ],
  });
  browser = await launchBrowser();
}, { timeout: 120000 });

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (server) await server.stop();
  if (idp) await idp.stop();
}, { timeout: 60000 });

/** A browser of its own (no cookie from another person's sign-in), kept on loopback. */
async function newPage(label) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  await loopbackOnly(context);
  const page = await context.newPage();
  watchPage(page, label, consoleErrors, { origin: server.base });
  return page;
}

/** Clicks the sign-in page's button and goes through the provider's login and consent pages. */
async function signInAtProvider(page, login) {
  await (await visible(page.getByRole('link', { name: 'Sign in with Test IdP' }))).click();
  await waitFor(() => page.url().startsWith(`${idp.issuer}/interaction/`), { message: 'the provider’s sign-in page' });
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill('any password will do');
  await page.getByRole('button', { name: 'Sign-in' }).click();
  await (await visible(page.getByRole('button', { name: 'Continue' }))).click();
  await waitFor(() => page.url().startsWith(`${server.base}/`), { message: 'back at flagd' });
}

test('single sign-on with a real OpenID provider', { timeout: 180000 }, async (t) => {
  let page;

  await t.test('flagd says what the sign-in page offers', async () => {
    const r = await fetch(`${server.base}/api/v1/session/methods`);
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { token: true, password: true, oidc: { name: 'Test IdP', url: '/api/v1/session/oidc' } });
  });

  await t.test('the sign-in page offers the provider, then a password, then an access token', async () => {
    page = await newPage('sre');
    await page.goto(`${server.base}/`);
    await visible(page.getByRole('heading', { name: 'Sign in' }));
    const order = await page.locator('.signin-methods > a, .signin-methods > form').evaluateAll((els) => els.map((e) => e.getAttribute('aria-label') || e.textContent.trim()));
    assert.deepEqual(order, ['Sign in with Test IdP', 'Sign in with a password', 'Sign in with an access token']);
    await visible(page.getByLabel('Login'));
    await visible(page.getByLabel('Password'));
    await visible(page.getByLabel('Access token'));
    await screenshot(page, join(shots, '14-sign-in.png'));
  });

  await t.test('an SRE signs in at the provider and lands in the UI as their e-mail address', async () => {
    await server.api('PUT', `${P}/flags/checkout-v2`, {
      state: 'ENABLED', variants: { on: true, off: false }, defaultVariant: 'on',
    }, { headers: { 'X-Change-Reason': 'the new checkout for everyone' } });
    await signInAtProvider(page, 'sam');
    await visible(page.getByRole('heading', { name: 'Flags' }));
    await visible(page.locator('.user-name', { hasText: 'sam@example.com' }));
    await visible(page.locator('.role-chip', { hasText: 'responder' }));
    const s = await page.evaluate(() => fetch('/api/v1/session').then((r) => r.json()));
    assert.equal(s.person, true);
    assert.equal(s.name, 'sam@example.com');
    assert.deepEqual(s.environments, ['production']);
    // The groups reached flagd in the ID token itself (verified there), not only at userinfo.
    const token = idp.idTokens.at(-1);
    assert.equal(token.iss, idp.issuer);
    assert.equal(token.aud, CLIENT_ID);
    assert.equal(token.email, 'sam@example.com');
    assert.deepEqual(token.groups, ['sre', 'oncall']);
    assert.ok(token.nonce, 'flagd sent a nonce');
    await screenshot(page, join(shots, '15-signed-in-sso.png'));
  });

  await t.test('the SRE flips the kill switch in production, recorded under their name', async () => {
    const sw = await visible(page.getByRole('switch', { name: 'checkout-v2 enabled' }));
    await sw.click();
    const dlg = await visible(page.getByRole('dialog', { name: /Disable checkout-v2 in Production/ }));
    await dlg.getByLabel(/Reason/).fill('payment errors after the deploy');
    await dlg.getByRole('button', { name: 'Disable in Production' }).click();
    await visible(page.getByRole('switch', { name: 'checkout-v2 disabled' }));
    const v = (await server.api('GET', `${P}/versions?flag=checkout-v2&limit=1`)).versions[0];
    assert.equal(v.author, 'sam@example.com');
    assert.equal(v.reason, 'payment errors after the deploy');
    assert.equal((await server.api('GET', `${P}/flags/checkout-v2`)).state, 'DISABLED');
  });

  await t.test('the person is listed with the role their claims map to', async () => {
    const { users } = await server.api('GET', '/users');
    const sam = users.find((u) => u.login === 'sam@example.com');
    assert.ok(sam, `sam is listed: ${JSON.stringify(users)}`);
    assert.equal(sam.roleSource, 'claim');
    assert.equal(sam.role, 'responder');
    assert.deepEqual(sam.environments, ['production']);
    assert.equal(sam.name, 'Sam Reliability');
    assert.equal(sam.password, false);
    assert.equal(sam.oidcIssuer, idp.issuer);
    assert.ok(sam.lastLoginAt);
  });

  await t.test('a developer gets the role of their group, in every environment', async () => {
    const dev = await newPage('devs');
    await dev.goto(`${server.base}/`);
    await signInAtProvider(dev, 'dev');
    await visible(dev.locator('.user-name', { hasText: 'dev@example.com' }));
    await visible(dev.locator('.role-chip', { hasText: 'editor' }));
    const { users } = await server.api('GET', '/users');
    const u = users.find((x) => x.login === 'dev@example.com');
    assert.equal(u.role, 'editor');
    assert.equal(u.roleSource, 'claim');
    assert.equal(u.environments, null);
    await dev.context().close();
  });

  await t.test('someone in no mapped group is refused, and the sign-in page says why', async () => {
    const other = await newPage('marketing');
    await other.goto(`${server.base}/`);
    await signInAtProvider(other, 'mo');
    const alert = await visible(other.locator('.signin-card [role="alert"]', { hasText: 'Single sign-on failed' }));
    assert.match(await alert.innerText(), /an admin must create the account/);
    assert.match(await alert.innerText(), /mo@example\.com/);
    await waitFor(() => !other.url().includes('signin_error'), { message: 'the message taken out of the address bar' });
    await visible(other.getByRole('link', { name: 'Sign in with Test IdP' }));
    await screenshot(other, join(shots, '16-sign-in-refused.png'));
    const r = await other.evaluate(() => fetch('/api/v1/session').then((x) => x.status));
    assert.equal(r, 401, 'no session');
    const { users } = await server.api('GET', '/users');
    assert.equal(users.some((u) => u.login === 'mo@example.com'), false, 'no account was made');
    assert.deepEqual(await cspViolations(other), []);
    await other.context().close();
  });

  await t.test('a callback flagd did not start (a made-up state) is refused', async () => {
    const r = await fetch(`${server.base}/api/v1/session/oidc/callback?code=made-up-code&state=made-up-state`, { redirect: 'manual' });
    assert.equal(r.status, 303);
    const location = r.headers.get('location');
    assert.match(location, /^\/\?signin_error=/);
    const why = new URLSearchParams(location.slice(2)).get('signin_error');
    assert.match(why, /not started in this browser/, 'it says why');
    assert.equal(r.headers.getSetCookie().some((c) => /^flagd_session=[^;]+/.test(c)), false, 'no session cookie');
  });

  await t.test('no console errors and no CSP violations on flagd’s pages', async () => {
    assert.deepEqual(await cspViolations(page), []);
    assert.deepEqual(consoleErrors, []);
  });
});
