// End-to-end: headless Chromium drives the admin UI served by a real flagd, with the
// real Rust SDK (checkout-service) connected. Run from the repository root:
//   node --test admin-ui/tests/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createServer } from 'node:http';
import {
  startFlagd, startSdk, launchBrowser, screenshotDir, waitFor, watchPage, unlabeledControls, cspViolations, visible, screenshot,
} from './harness.mjs';

let server;
let sdk;
let sdkKey;
let hung;
let browser;
let context;
let page;
let shots;
let editor;
let viewer;
const consoleErrors = [];

/** A screenshot of the main page into admin-ui/screenshots/. */
function shot(name, opts) {
  return screenshot(page, join(shots, `${name}.png`), opts);
}

/** A link of the main navigation. */
function nav(name) {
  return page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name });
}

/** The access-token form of the sign-in page (a login and password form comes before it). */
async function signIn(token) {
  const form = page.getByRole('form', { name: 'Sign in with an access token' });
  await visible(form.getByLabel('Access token'));
  await form.getByLabel('Access token').fill(token);
  await form.getByRole('button', { name: 'Sign in' }).click();
}

async function inPageFetch(p, method, path, { csrf = false, body } = {}) {
  return p.evaluate(async ({ method, path, csrf, body }) => {
    const headers = { 'Content-Type': 'application/json' };
    if (csrf) {
      const s = await fetch('/api/v1/session').then((r) => r.json());
      headers['X-CSRF-Token'] = s.csrfToken;
    }
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let json = null;
    try {
      json = await r.json();
    } catch {
      json = null;
    }
    return { status: r.status, body: json };
  }, { method, path, csrf, body });
}

before(async () => {
  shots = await screenshotDir();
  // Three silent 200 ms heartbeats close a half-open SDK stream: a frozen instance is
  // unreachable within a second.
  server = await startFlagd({ args: ['--stream-heartbeat', '200ms', '--notify-allow-private-addresses'] });
  editor = await server.api('POST', '/tokens', { name: 'alice', role: 'editor' });
  viewer = await server.api('POST', '/tokens', { name: 'victor', role: 'viewer' });
  sdkKey = (await server.api('POST', '/environments/production/sdk-keys', { name: 'checkout-service' })).secret;
  sdk = await startSdk(server.base, sdkKey);
  browser = await launchBrowser();
  context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  page = await context.newPage();
  watchPage(page, 'main', consoleErrors);
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (hung) await hung.kill();
  if (sdk) await sdk.stop();
  if (server) await server.stop();
});

test('admin UI: the whole rollback story in a real browser against a real flagd', { timeout: 300000 }, async (t) => {
  const P = '/environments/production';

  await t.test('GET / serves the UI with a strict Content-Security-Policy', async () => {
    const res = await page.goto(`${server.base}/`);
    assert.equal(res.status(), 200);
    const csp = res.headers()['content-security-policy'] || '';
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
  });

  await t.test('sign-in: a wrong token shows a clear error, the editor token signs in', async () => {
    await visible(page.getByRole('heading', { name: 'Sign in' }));
    await shot('01-sign-in');
    await signIn('fd_not-a-real-token');
    await visible(page.getByText('That token is not valid', { exact: false }));
    await signIn(editor.secret);
    await visible(page.getByRole('heading', { name: 'Flags' }));
    await visible(page.locator('.user-name', { hasText: 'alice' }));
    await visible(page.locator('.role-chip', { hasText: 'editor' }));
    await waitFor(() => page.url().endsWith('#/production/flags'), { message: 'default route #/production/flags' });
    await visible(page.locator('.env-badge.env-prod', { hasText: /production/i }));
    await visible(page.locator('.live.live-live'));
  });

  await t.test('the session cookie is HttpOnly and writes need the CSRF token', async () => {
    const docCookie = await page.evaluate(() => document.cookie);
    assert.ok(!docCookie.includes('flagd_session'), `document.cookie exposes the session: ${docCookie}`);
    const cookies = await context.cookies();
    const c = cookies.find((x) => x.name === 'flagd_session');
    assert.ok(c, 'the flagd_session cookie is set');
    assert.equal(c.httpOnly, true);
    assert.equal(c.sameSite, 'Strict');
    const r = await inPageFetch(page, 'POST', '/api/v1/environments/production/revert', { body: { version: 0, reason: 'no csrf' } });
    assert.equal(r.status, 403, 'a POST without X-CSRF-Token is refused');
    assert.equal(r.body && r.body.error && r.body.error.code, 'csrf');
  });

  await t.test('create new-checkout (on/off, 5% on) from the New flag form', async () => {
    await page.getByRole('button', { name: 'New flag' }).click();
    const dlg = await visible(page.getByRole('dialog', { name: /New flag in Production/ }));
    assert.deepEqual(await unlabeledControls(page), [], 'every control of the list and the form has a label');
    await dlg.getByLabel('Key').fill('new-checkout');
    await dlg.getByLabel('Percentage rollout:').check();
    await dlg.getByLabel('Rollout percent').fill('5');
    assert.equal(await dlg.getByLabel('Rollout variant').inputValue(), 'on');
    await dlg.getByLabel(/Reason/).fill('new checkout behind a flag');
    await shot('01b-new-flag');
    await dlg.getByRole('button', { name: 'Create in Production' }).click();
    await waitFor(() => page.url().endsWith('#/production/flags/new-checkout'), { message: 'the flag page' });
    await visible(page.getByRole('heading', { name: 'new-checkout' }));
    const def = await server.api('GET', `${P}/flags/new-checkout`);
    assert.deepEqual(def.variants, { on: true, off: false });
    assert.equal(def.defaultVariant, 'off');
    assert.deepEqual(def.targeting, { fractional: [['on', 5], ['off', 95]] });
    await visible(page.getByText('5% → about 500 of 10,000 users'));
  });

  await t.test('toggle it off from the list, with a reason, in production', async () => {
    await nav('Flags').click();
    const sw = await visible(page.getByRole('switch', { name: 'new-checkout enabled' }));
    assert.equal(await sw.getAttribute('aria-checked'), 'true');
    await visible(page.getByText('5% on'));
    await sw.click();
    const dlg = await visible(page.getByRole('dialog', { name: /Disable new-checkout in Production/ }));
    await visible(dlg.getByText(/You are changing Production/i));
    const ok = dlg.getByRole('button', { name: 'Disable in Production' });
    assert.equal(await ok.isDisabled(), true, 'the reason is required');
    await dlg.getByLabel(/Reason/).fill('checkout 5xx spike');
    await ok.click();
    await visible(page.getByRole('switch', { name: 'new-checkout disabled' }));
    const def = await server.api('GET', `${P}/flags/new-checkout`);
    assert.equal(def.state, 'DISABLED');
    await visible(page.locator('tr[data-key="new-checkout"] .cell-change', { hasText: 'v2' }));
    await shot('02a-flags-after-toggle');
  });

  await t.test('ramp 5% → 25% with the slider and "Roll out now"', async () => {
    await page.getByRole('link', { name: 'new-checkout' }).click();
    await visible(page.getByRole('heading', { name: 'new-checkout' }));
    const slider = await visible(page.getByLabel(/Percentage rollout: share of users on/));
    assert.deepEqual(await unlabeledControls(page), [], 'every control of the flag page has a label');
    await slider.fill('25');
    await visible(page.getByText('25% → about 2,500 of 10,000 users'));
    await page.getByLabel('Expected users').fill('40000');
    await visible(page.getByText('25% → about 10,000 of 40,000 users'));
    // The raw JSON follows the structured editor.
    assert.match(await page.getByLabel('Raw JSON of the flag definition').inputValue(), /"on",\s*25/);
    await page.getByRole('button', { name: 'Roll out 25% now' }).click();
    const dlg = await visible(page.getByRole('dialog', { name: /Roll out on to 25% in Production/ }));
    await dlg.getByLabel(/Reason/).fill('error rate flat at 5%');
    await dlg.getByRole('button', { name: 'Roll out 25%' }).click();
    await waitFor(async () => {
      const def = await server.api('GET', `${P}/flags/new-checkout`);
      return JSON.stringify(def.targeting) === JSON.stringify({ fractional: [['on', 25], ['off', 75]] });
    }, { message: 'the rollout at 25%' });
    await visible(page.locator('.tl-item', { hasText: 'rollout' }).filter({ hasText: 'error rate flat at 5%' }));
  });

  await t.test('flag page: structured rule editor, raw JSON, validation at a path, preview', async () => {
    // An attribute rule written by the structured editor shows in the raw JSON …
    await page.getByRole('button', { name: 'Attribute rule' }).click();
    await page.getByLabel('Rule 1 condition 1: attribute').fill('country');
    await page.getByLabel('Rule 1 condition 1: operator').selectOption('in');
    await page.getByLabel('Rule 1 condition 1: values, comma-separated').fill('NO, SE');
    await page.getByLabel('Rule 1: serve').selectOption('v:on');
    const raw = page.getByLabel('Raw JSON of the flag definition');
    await waitFor(async () => /"country"/.test(await raw.inputValue()) && /"NO",\s*"SE"/.test(await raw.inputValue()), { message: 'the rule in the raw JSON' });
    await visible(page.locator('.targeting-summary', { hasText: 'country in NO, SE → on' }));
    // … and the preview evaluates the unsaved definition with flagd's evaluator.
    await page.getByLabel('Sample contexts, one JSON object per line').fill('{"targetingKey": "user-2", "country": "NO"}\n{"targetingKey": "user-3", "country": "US"}');
    const table = await visible(page.getByRole('table', { name: 'Preview results' }));
    await waitFor(async () => (await table.locator('tbody tr').count()) === 2, { message: 'two preview rows' });
    // The flag is disabled: flagd says so for every context.
    await visible(table.locator('tbody tr').first().getByText('DISABLED'));
    // A bad default variant in the raw JSON: the server's problem is listed at its path.
    const text = await raw.inputValue();
    await raw.fill(text.replace('"defaultVariant": "off"', '"defaultVariant": "onn"'));
    await visible(page.getByRole('button', { name: 'flags.new-checkout.defaultVariant' }));
    await visible(page.getByText('"onn" is not a variant', { exact: false }));
    await shot('03b-flag-validation', { tall: true });
    await page.getByRole('button', { name: 'flags.new-checkout.defaultVariant' }).click();
    const sel = await raw.evaluate((el) => el.value.slice(el.selectionStart, el.selectionEnd));
    assert.equal(sel, '"onn"', 'clicking the path selects the bad value in the raw editor');
    await raw.fill(text);
    await waitFor(async () => (await page.locator('.problem-list').count()) === 0, { message: 'the problem to clear' });
    await waitFor(async () => (await table.locator('tbody tr').count()) === 2, { message: 'preview back' });
    await shot('03a-flag-editing', { tall: true });
    // Leave without saving: discard.
    await page.getByRole('button', { name: 'Discard' }).click();
    await waitFor(async () => !/"country"/.test(await raw.inputValue()), { message: 'discarded edits' });
  });

  await t.test('history: the rollout entry with kind, author and reason; diff two versions', async () => {
    await nav('History').click();
    const table = await visible(page.getByRole('table', { name: 'Versions of production' }));
    const row = table.locator('tbody tr').filter({ hasText: 'v3' }).first();
    await visible(row.locator('.kind', { hasText: 'rollout' }));
    await visible(row.getByText('alice'));
    await visible(row.getByText('error rate flat at 5%'));
    await visible(table.locator('tbody tr').filter({ hasText: 'checkout 5xx spike' }).locator('.kind', { hasText: 'toggle' }));
    assert.deepEqual(await unlabeledControls(page), []);
    await page.getByLabel('Select v1 to compare').check();
    await page.getByLabel('Select v3 to compare').check();
    await shot('04-history');
    await page.getByRole('button', { name: 'Compare v1 → v3' }).click();
    await waitFor(() => page.url().includes('/history/diff?from=1&to=3'), { message: 'the diff route' });
    const card = await visible(page.locator('.diff-card', { hasText: 'new-checkout' }));
    await visible(card.locator('.chg-changed'));
    await visible(card.getByText('state ENABLED → DISABLED · targeting: 5% on → 25% on'));
    await visible(card.locator('.dl.del', { hasText: '"state": "ENABLED"' }));
    await visible(card.locator('.dl.add', { hasText: '"state": "DISABLED"' }));
    await visible(card.locator('.dl.add', { hasText: '25' }));
    await shot('05-diff');
  });

  await t.test('revert to v1: reason + confirmation showing the diff, then convergence in the fleet', async () => {
    await nav('History').click();
    await page.getByRole('button', { name: 'Revert to v1' }).click();
    const dlg = await visible(page.getByRole('dialog', { name: /Revert Production to v1/ }));
    await visible(dlg.locator('.diff-card', { hasText: 'new-checkout' }));
    await visible(dlg.locator('.dl.add', { hasText: '"state": "ENABLED"' }));
    const ok = dlg.getByRole('button', { name: 'Revert Production to v1' });
    await dlg.getByLabel(/Reason/).fill('bad release, back to 5%');
    assert.equal(await ok.isDisabled(), true, 'the review checkbox is required');
    await dlg.getByLabel('I have reviewed the changes above').check();
    await shot('06-revert-confirm');
    await ok.click();
    await waitFor(() => page.url().includes('/fleet?after=4'), { message: 'the fleet view after the revert' });
    const versions = await server.api('GET', `${P}/versions?limit=1`);
    assert.equal(versions.versions[0].version, 4);
    assert.equal(versions.versions[0].kind, 'revert');
    assert.equal(versions.versions[0].revertedTo, 1);
    assert.equal(versions.versions[0].author, 'alice');
    const def = await server.api('GET', `${P}/flags/new-checkout`);
    assert.deepEqual(def.targeting, { fractional: [['on', 5], ['off', 95]] });
    assert.equal(def.state, 'ENABLED');
    // The real SDK applies v4: the convergence bar fills.
    try {
      await visible(page.locator('.converge', { hasText: 'Revert to v1' }).filter({ hasText: '1/1 instances applied' }));
    } catch (err) {
      const fleet = await server.api('GET', `${P}/fleet`).catch((e) => e.message);
      throw new Error(`${err.message}\nfleet: ${JSON.stringify(fleet)}\nshown: ${await page.locator('.fleet-summary').innerText().catch(() => '?')}\nSDK log:\n${sdk.log()}`);
    }
  });

  await t.test('fleet: the checkout-service SDK instance on the current version', async () => {
    const table = await visible(page.getByRole('table', { name: 'SDK instances in production' }));
    const row = table.locator('tbody tr').first();
    await visible(row.getByText('service=checkout'));
    await visible(row.getByText('flagd-sdk-rust', { exact: false }));
    await visible(row.locator('.vnum', { hasText: 'v4' }));
    await visible(row.locator('.chip-current'));
    await visible(page.getByText('instances on v4'));
    await shot('07-fleet');
  });

  await t.test('fleet: an instance that stops answering is unreachable, not converged, and can be forgotten', async () => {
    const ids = async () => (await server.api('GET', `${P}/fleet`)).instances.map((i) => i.instance);
    const before = await ids();
    hung = await startSdk(server.base, sdkKey);
    const id = await waitFor(async () => (await ids()).find((i) => !before.includes(i)), { message: 'the second instance in the fleet' });
    await waitFor(async () => (await server.api('GET', `${P}/fleet`)).onVersion === 2, { message: 'both instances on v4' });
    hung.freeze();
    await waitFor(async () => (await server.api('GET', `${P}/fleet`)).unreachable === 1, { message: 'flagd to mark the frozen instance unreachable' });
    // The next change: the frozen instance cannot apply it (and new-checkout ends as it was).
    await server.api('POST', `${P}/flags/new-checkout/disable`, { reason: 'fleet check' });
    await server.api('POST', `${P}/flags/new-checkout/enable`, { reason: 'fleet check' });
    const row = await visible(page.locator(`tr.row-lost[data-instance="${id}"]`));
    await visible(row.getByText(/^unreachable since .+, last applied v4$/));
    await visible(row.locator('.chip-lost', { hasText: 'unreachable, behind' }));
    const bar = await visible(page.locator('.converge', { hasText: 'v6 toggle' }));
    await visible(bar.getByText('1/2 instances applied'));
    await visible(bar.getByText('not converged: 1 unreachable'));
    assert.equal(await bar.evaluate((el) => el.classList.contains('converge-done')), false, 'not counted as converged');
    await visible(page.locator('.stat-lost', { hasText: 'unreachable' }));
    await visible(page.getByText('instances on v6'));
    assert.equal(await page.getByRole('button', { name: /^Forget / }).count(), 1, 'only the unreachable instance can be forgotten');
    assert.deepEqual(await unlabeledControls(page), []);
    await shot('07b-fleet-unreachable');

    await row.getByRole('button', { name: `Forget ${id}` }).click();
    const dlg = await visible(page.getByRole('dialog', { name: `Forget SDK instance ${id}?` }));
    await visible(dlg.getByText('it may still be serving v4', { exact: false }));
    await dlg.getByRole('button', { name: 'Forget' }).click();
    await visible(page.locator('.converge.converge-done', { hasText: '1/1 instances applied' }));
    assert.equal(await page.locator('tr.row-lost').count(), 0);
    const fleet = await server.api('GET', `${P}/fleet`);
    assert.deepEqual([fleet.total, fleet.unreachable], [1, 0]);
    await hung.kill();
    hung = null;
  });

  await t.test('audit: the revert entry with actor, reason and version', async () => {
    await nav('Audit').click();
    const table = await visible(page.getByRole('table', { name: 'Audit entries' }));
    const row = table.locator('tbody tr').filter({ hasText: 'flagset.revert' }).first();
    await visible(row.getByText('alice'));
    await visible(row.getByText('bad release, back to 5%'));
    await visible(row.locator('.vnum', { hasText: 'v4' }));
    assert.deepEqual(await unlabeledControls(page), []);
    await page.getByLabel('Action').selectOption('flag.');
    await waitFor(() => page.url().includes('action=flag.'), { message: 'the action filter in the URL' });
    await visible(table.locator('tbody tr').filter({ hasText: 'flag.rollout' }).first());
    await waitFor(async () => (await page.getByRole('table', { name: 'Audit entries' }).locator('tbody tr', { hasText: 'flagset.revert' }).count()) === 0, { message: 'the filter to apply' });
    const rollout = page.getByRole('table', { name: 'Audit entries' }).locator('tbody tr').filter({ hasText: 'flag.rollout' }).first();
    await rollout.getByRole('button', { name: /Details of entry/ }).click();
    await visible(page.locator('.audit-detail .dl.add', { hasText: '25' }));
    await shot('08-audit');
  });

  await t.test('live: a change made through the REST API appears without a reload', async () => {
    await nav('Flags').click();
    await visible(page.getByRole('switch', { name: 'new-checkout enabled' }));
    await page.evaluate(() => {
      window.__noReload = true;
    });
    await server.api('PUT', `${P}/flags/beta-banner`, {
      state: 'ENABLED',
      variants: { on: true, off: false },
      defaultVariant: 'off',
      targeting: { if: [{ ends_with: [{ var: 'email' }, '@example.com'] }, 'on', { fractional: [['on', 10], ['off', 90]] }] },
    }, { headers: { 'X-Change-Reason': 'beta for staff and 10%' } });
    const row = await visible(page.locator('tr[data-key="beta-banner"]'));
    await visible(row.getByText('if email ends_with @example.com → on · else 10% on'));
    await server.api('POST', `${P}/flags/new-checkout/disable`, { reason: 'ci-bot: canary failed' });
    await visible(page.getByRole('switch', { name: 'new-checkout disabled' }));
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page did not reload');

    // An open flag editor with unsaved edits is not overwritten: a banner offers a reload.
    await page.getByRole('link', { name: 'beta-banner' }).click();
    await visible(page.getByRole('heading', { name: 'beta-banner' }));
    await page.getByLabel('Rule 1 condition 1: value').fill('@example.org');
    await visible(page.getByText('Unsaved changes'));
    await server.api('POST', `${P}/flags/beta-banner/rollout`, { variant: 'on', percent: 30, reason: 'ramp' });
    await visible(page.getByText(/This flag changed \(v\d+ by admin\)/));
    assert.equal(await page.getByLabel('Rule 1 condition 1: value').inputValue(), '@example.org', 'the edit is kept');
    await page.getByRole('button', { name: 'Reload it' }).click();
    await waitFor(async () => (await page.getByLabel('Rule 1 condition 1: value').inputValue()) === '@example.com', { message: 'the reloaded flag' });
    await visible(page.getByText('30% → about', { exact: false }));
  });

  await t.test('a realistic flag set: one-line targeting summaries in the list', async () => {
    const flags = {
      'search-v2': {
        state: 'ENABLED', variants: { on: true, off: false }, defaultVariant: 'off',
        targeting: { if: [{ in: [{ var: 'targetingKey' }, ['u-1001', 'u-1002', 'u-1003']] }, 'on'] },
        metadata: { description: 'New search backend, internal testers first' },
      },
      'pricing-page': {
        state: 'ENABLED', variants: { control: 'control', treatment: 'treatment' }, defaultVariant: 'control',
        targeting: { if: [{ sem_ver: [{ var: 'appVersion' }, '>=', '2.0.0'] }, 'treatment', 'control'] },
      },
      'dark-mode': { state: 'ENABLED', variants: { on: true, off: false }, defaultVariant: 'on' },
      'legacy-export': { state: 'DISABLED', variants: { on: true, off: false }, defaultVariant: 'off', metadata: { description: 'Kill switch for the CSV export' } },
      'eu-payments': {
        state: 'ENABLED', variants: { on: true, off: false }, defaultVariant: 'off',
        targeting: { if: [{ in: [{ var: 'country' }, ['NO', 'SE', 'DK', 'FI']] }, { fractional: [['on', 50], ['off', 50]] }, 'off'] },
      },
    };
    for (const [key, def] of Object.entries(flags)) {
      await server.api('PUT', `${P}/flags/${key}`, def, { headers: { 'X-Change-Reason': 'seed for the screenshots' } });
    }
    await nav('Flags').click();
    const summary = (key) => page.locator(`tr[data-key="${key}"] .cell-targeting`);
    await visible(summary('search-v2').getByText('targetingKey in 3 keys → on', { exact: true }));
    await visible(summary('pricing-page').getByText('if appVersion >= 2.0.0 → treatment · else control', { exact: true }));
    await visible(summary('dark-mode').getByText('on for everyone (default)', { exact: true }));
    await visible(summary('eu-payments').getByText('country in 4 values → 50% on · else off', { exact: true }));
    await visible(summary('new-checkout').getByText('5% on', { exact: true }));
    // Search and state filters work as you type.
    await page.getByLabel('Search flags by key').fill('check');
    await waitFor(async () => (await page.locator('tbody tr').count()) === 1, { message: 'the search filter' });
    await page.getByLabel('Search flags by key').fill('');
    await page.getByLabel('Filter by state').selectOption('DISABLED');
    await waitFor(async () => (await page.locator('tbody tr').count()) === 2, { message: 'the state filter' });
    await page.getByLabel('Filter by state').selectOption('all');
    await waitFor(async () => (await page.locator('tbody tr').count()) === 7, { message: 'all flags' });
    await shot('02-flags-list');

    // The flag page of a rule + split flag, with the preview evaluating it.
    await page.getByRole('link', { name: 'beta-banner' }).click();
    await visible(page.getByRole('heading', { name: 'beta-banner' }));
    await page.getByLabel('Sample contexts, one JSON object per line').fill([
      '{"targetingKey": "ann", "email": "ann@example.com"}',
      '{"targetingKey": "user-1", "email": "bo@shop.io"}',
      '{"targetingKey": "user-2"}',
      '{"targetingKey": "user-3", "country": "NO"}',
    ].join('\n'));
    const table = await visible(page.getByRole('table', { name: 'Preview results' }));
    await waitFor(async () => (await table.locator('tbody tr').count()) === 4, { message: 'four preview rows' });
    const first = table.locator('tbody tr').first();
    await visible(first.getByText('TARGETING_MATCH'));
    await visible(first.locator('.vchip', { hasText: 'on' }));
    await shot('03-flag-page', { tall: true });
  });

  await t.test('save from the flag page: PUT with If-Match and the reason; a stale save gets 409', async () => {
    const value = page.getByLabel('Rule 1 condition 1: value');
    await value.fill('@example.org');
    await page.getByRole('button', { name: 'Save changes' }).click();
    let dlg = await visible(page.getByRole('dialog', { name: /Save beta-banner in Production/ }));
    await visible(dlg.locator('.dl.add', { hasText: '@example.org' }));
    await dlg.getByLabel(/Reason/).fill('staff domain moved – ø');
    await dlg.getByRole('button', { name: 'Save to Production' }).click();
    await waitFor(async () => JSON.stringify((await server.api('GET', `${P}/flags/beta-banner`)).targeting).includes('@example.org'), { message: 'the saved rule' });
    const last = (await server.api('GET', `${P}/versions?flag=beta-banner&limit=1`)).versions[0];
    assert.equal(last.kind, 'update');
    assert.equal(last.author, 'alice');
    assert.equal(last.reason, 'staff domain moved – ø', 'a non-ASCII reason survives the X-Change-Reason header');
    await waitFor(async () => !(await page.getByRole('button', { name: 'Save changes' }).isEnabled()), { message: 'a clean editor after saving' });

    // Someone else changes the flag while we edit: the save is refused with 409.
    await value.fill('@example.net');
    await server.api('POST', `${P}/flags/beta-banner/rollout`, { variant: 'on', percent: 40, reason: 'ci ramp' });
    await visible(page.getByText(/This flag changed \(v\d+ by admin\)/));
    await page.getByRole('button', { name: 'Save changes' }).click();
    dlg = await visible(page.getByRole('dialog', { name: /Save beta-banner in Production/ }));
    await dlg.getByLabel(/Reason/).fill('my edit');
    await dlg.getByRole('button', { name: 'Save to Production' }).click();
    await visible(dlg.getByText('HTTP 409 · conflict'));
    await dlg.getByRole('button', { name: 'Cancel' }).click();
    await page.getByRole('button', { name: 'Reload the flag (discards your edits)' }).click();
    await waitFor(async () => (await value.inputValue()) === '@example.org', { message: 'the reloaded definition' });
    const def = await server.api('GET', `${P}/flags/beta-banner`);
    assert.ok(!JSON.stringify(def).includes('@example.net'), 'the stale save changed nothing');
  });

  await t.test('history: undo one change (the kill switch) and keep the later, unrelated ones', async () => {
    const kill = (await server.api('GET', `${P}/versions?flag=new-checkout&limit=1`)).versions[0];
    assert.equal(kill.reason, 'ci-bot: canary failed');
    const before = (await server.api('GET', P)).version;
    assert.ok(before > kill.version, 'beta-banner changed after the kill switch');
    await nav('History').click();
    // Reverting to the version before the kill would also drop the later beta-banner
    // changes: that dialog now says so.
    await page.getByRole('button', { name: `Revert to v${kill.version - 1}`, exact: true }).click();
    let dlg = await visible(page.getByRole('dialog', { name: new RegExp(`Revert Production to v${kill.version - 1}\\?`) }));
    await visible(dlg.getByText(`This also undoes every change after v${kill.version - 1}`, { exact: false }));
    await visible(dlg.locator('.revert-drops li', { hasText: 'beta-banner' }).first());
    await dlg.getByRole('button', { name: 'Cancel' }).click();
    await page.getByRole('button', { name: `Undo v${kill.version}`, exact: true }).click();
    dlg = await visible(page.getByRole('dialog', { name: new RegExp(`Undo v${kill.version} in Production`) }));
    await visible(dlg.locator('li[data-path="flags.new-checkout"]'));
    assert.equal(await dlg.locator('.undo-list li').count(), 1, 'only what that version changed');
    await dlg.getByLabel(/Reason/).fill('the canary alarm was a false positive');
    await dlg.getByLabel('I have reviewed the changes above').check();
    await shot('09-undo');
    await dlg.getByRole('button', { name: `Undo v${kill.version}` }).click();
    await waitFor(() => page.url().includes(`/fleet?after=${before + 1}`), { message: 'the fleet view after the undo' });
    const v = (await server.api('GET', `${P}/versions?limit=1`)).versions[0];
    assert.equal(v.kind, 'undo');
    assert.equal(v.author, 'alice');
    assert.deepEqual(v.changedFlags, ['new-checkout']);
    assert.equal((await server.api('GET', `${P}/flags/new-checkout`)).state, 'ENABLED');
    assert.ok(JSON.stringify(await server.api('GET', `${P}/flags/beta-banner`)).includes('@example.org'), 'the later change stays');
    // Back as the tests after this one expect it: the kill switch on, the flags list.
    await server.api('POST', `${P}/flags/new-checkout/disable`, { reason: 'ci-bot: canary failed again' });
    await nav('Flags').click();
    await visible(page.getByRole('switch', { name: 'new-checkout disabled' }));
  });

  await t.test('history: a kill switch from an Alertmanager alert, badged, with the alert as its reason', async () => {
    await server.api('POST', `${P}/flags/new-checkout/enable`, { reason: 'the fix is out' });
    const hook = {
      version: '4', groupKey: '{}:{alertname="NewCheckoutFailing"}', status: 'firing', receiver: 'flagd',
      alerts: [{
        status: 'firing', fingerprint: 'ui-1', startsAt: new Date().toISOString(), generatorURL: 'http://prometheus.example/graph',
        labels: { alertname: 'NewCheckoutFailing', flagd_environment: 'production', flagd_flag: 'new-checkout' },
        annotations: { summary: 'The new checkout is failing' },
      }],
    };
    const r = await server.api('POST', '/alertmanager', hook);
    assert.equal(r.results[0].outcome, 'applied', JSON.stringify(r));
    await nav('History').click();
    const row = page.locator('tr', { has: page.locator('.kind-auto-disable') }).first();
    await visible(row.locator('.chip-auto', { hasText: 'alert' }));
    await visible(row.getByText('alert NewCheckoutFailing: The new checkout is failing', { exact: false }));
    await shot('09-auto-disable');
    // The same firing delivered again acts no more.
    assert.equal((await server.api('POST', '/alertmanager', hook)).results[0].outcome, 'duplicate');
    await nav('Flags').click();
    await visible(page.getByRole('switch', { name: 'new-checkout disabled' }));
  });

  await t.test('flag page: the release plan, its current step, pausing and approving it', async () => {
    await server.api('PUT', `${P}/flags/plan-demo`, { state: 'ENABLED', variants: { on: true, off: false }, defaultVariant: 'off',
      targeting: { fractional: [['on', 0], ['off', 100]] } });
    const made = await server.api('POST', `${P}/flags/plan-demo/plans`, { variant: 'on', reason: 'ramp it',
      steps: [{ percent: 10, hold: '1h' }, { percent: 50, hold: 'approval' }, { percent: 100 }] });
    const id = made.plan.id;
    await nav('Flags').click();
    await page.getByRole('link', { name: 'plan-demo' }).click();
    const card = await visible(page.locator('section.plan-card'));
    await visible(card.getByText('Step 1 of 3: running'));
    assert.ok(!(await card.innerText()).includes('null'), 'nothing absent is shown as null');
    await visible(card.locator('.plan-step.current', { hasText: '10% on' }));
    await card.getByRole('button', { name: 'Pause' }).click();
    let dlg = await visible(page.getByRole('dialog', { name: /Pause the release plan of plan-demo/ }));
    await dlg.getByRole('button', { name: 'Pause' }).click();
    await visible(card.getByText('Step 1 of 3: paused'));
    assert.equal((await server.api('GET', `${P}/plans/${id}`)).plan.state, 'paused');
    // Resumed and skipped through the API: the page shows the step waiting for approval.
    await server.api('POST', `${P}/plans/${id}/resume`, {});
    await server.api('POST', `${P}/plans/${id}/skip`, {});
    await waitFor(async () => (await server.api('GET', `${P}/plans/${id}`)).plan.awaitingApproval === true, { message: 'the approval step' });
    await page.reload();
    await visible(page.locator('section.plan-card').getByText('Step 2 of 3: waiting for an approval'));
    await shot('09b-release-plan');
    await page.locator('section.plan-card').getByRole('button', { name: 'Approve' }).click();
    dlg = await visible(page.getByRole('dialog', { name: /Approve the release plan of plan-demo/ }));
    await dlg.getByRole('button', { name: 'Approve' }).click();
    await waitFor(async () => (await server.api('GET', `${P}/plans/${id}`)).plan.state === 'completed', { message: 'the plan completes' });
  });

  await t.test('environment switcher: staging is not production', async () => {
    await page.getByLabel('Current environment').selectOption('staging');
    await waitFor(() => page.url().endsWith('#/staging/flags'), { message: 'the staging route' });
    await visible(page.getByText('No flags yet'));
    assert.equal(await page.locator('.env-badge.env-prod').count(), 0);
    assert.equal(await page.locator('.env-stripe.env-prod').count(), 0);
    await page.getByLabel('Current environment').selectOption('production');
    await visible(page.locator('tr[data-key="new-checkout"]'));
    await visible(page.locator('.env-stripe.env-prod'));
  });

  await t.test('mobile (390×844): flags list and flag page do not overflow', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    try {
      await mobilePass();
    } finally {
      await page.setViewportSize({ width: 1280, height: 800 });
    }
  });

  async function mobilePass() {
    await page.getByRole('button', { name: 'Menu' }).click();
    await nav('Flags').click();
    await visible(page.locator('tr[data-key="new-checkout"]'));
    await visible(page.locator('tr[data-key="search-v2"]'));
    const w1 = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(w1 <= 390, `flags list scrollWidth ${w1} > 390`);
    await shot('09-mobile-flags');
    await page.getByRole('link', { name: 'beta-banner' }).click();
    await visible(page.getByRole('heading', { name: 'beta-banner' }));
    await visible(page.getByRole('table', { name: 'Preview results' }));
    const w2 = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(w2 <= 390, `flag page scrollWidth ${w2} > 390`);
    await shot('10-mobile-flag', { tall: true });
  }

  await t.test('sign out: the cookie is gone', async () => {
    await page.getByRole('button', { name: 'Sign out alice' }).click();
    await visible(page.getByLabel('Access token'));
    const r = await inPageFetch(page, 'GET', '/api/v1/session');
    assert.equal(r.status, 401);
    assert.ok(!(await context.cookies()).some((c) => c.name === 'flagd_session' && c.value), 'no session cookie left');
  });

  await t.test('viewer: no toggles, no save, and a forged toggle gets 403 from the server', async () => {
    await signIn(viewer.secret);
    await visible(page.locator('.role-chip', { hasText: 'viewer' }));
    const sw = await visible(page.getByRole('switch', { name: /new-checkout/ }));
    assert.equal(await sw.isDisabled(), true, 'the toggle is disabled for a viewer');
    assert.equal(await page.getByRole('button', { name: 'New flag' }).count(), 0);
    const forged = await inPageFetch(page, 'POST', '/api/v1/environments/production/flags/new-checkout/enable', { csrf: true, body: { reason: 'forged' } });
    assert.equal(forged.status, 403);
    assert.equal(forged.body.error.code, 'forbidden');
    await page.getByRole('link', { name: 'new-checkout' }).click();
    await visible(page.getByText('Read-only: your role cannot edit flags'));
    assert.equal(await page.getByRole('button', { name: 'Save changes' }).count(), 0);
    assert.equal(await page.getByRole('button', { name: /Restore/ }).count(), 0);
    await nav('History').click();
    await visible(page.getByRole('table', { name: 'Versions of production' }));
    assert.equal(await page.getByRole('button', { name: /Revert to v/ }).count(), 0);
    assert.equal(await page.getByRole('button', { name: /Undo v/ }).count(), 0);
    const def = await server.api('GET', `${P}/flags/new-checkout`);
    assert.equal(def.state, 'DISABLED', 'the forged request changed nothing');
  });

  await t.test('notifications: admins only; a Slack channel made, tested, its deliveries shown, no secret', async () => {
    assert.equal(await nav('Notifications').count(), 0, 'a viewer has no Notifications view');
    // A Slack receiver on loopback that takes every message.
    const received = [];
    const slack = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => {
        received.push(JSON.parse(body));
        res.end('ok');
      });
    });
    await new Promise((r) => slack.listen(0, '127.0.0.1', r));
    try {
      await page.getByRole('button', { name: 'Sign out victor' }).click();
      await signIn(server.adminToken);
      await nav('Notifications').click();
      await visible(page.getByRole('heading', { name: 'Notifications' }));
      await visible(page.getByText('No channel'));
      assert.deepEqual(await unlabeledControls(page), [], 'every control of the view has a label');
      const url = `http://127.0.0.1:${slack.address().port}/services/T0/B0/uisecret9876`;
      await page.getByLabel('Webhook URL').fill(url);
      await page.getByLabel('Name').fill('incidents');
      await page.getByRole('button', { name: 'Create channel' }).click();
      const row = await visible(page.locator('.channels-table tr', { hasText: 'incidents' }));
      assert.match(await row.innerText(), /…9876/);
      assert.doesNotMatch(await page.locator('main').innerText(), /uisecret/, 'the URL is never shown');
      await page.getByRole('button', { name: 'Send a test to incidents' }).click();
      await visible(page.getByText('Test delivered to incidents', { exact: false }));
      await waitFor(() => received.length === 1, { message: 'the receiver got the test' });
      assert.match(received[0].text, /test message from flagd/);
      const d = await visible(page.locator('.deliveries-table tr', { hasText: 'test' }));
      assert.match(await d.innerText(), /delivered/);
      await shot('12-notifications');
    } finally {
      slack.close();
    }
  });

  await t.test('no console errors and no CSP violations during the run', async () => {
    assert.deepEqual(await cspViolations(page), []);
    assert.deepEqual(consoleErrors, []);
  });
});
