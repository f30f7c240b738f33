// End-to-end: approvals. An admin protects production in the UI (2 approvals); alice
// (editor) edits a flag and proposes the change; she cannot approve it herself; bob and
// carol approve it and the second approval applies it in alice's name. dave
// (responder) flips a kill switch with a reason: applied without approval, it opens a
// review that bob acknowledges. A request whose base moved is stale and alice updates
// it onto the current version. Each person has their own browser context (cookie).
// Run from the repository root:
//   node --test admin-ui/tests/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  startFlagd, launchBrowser, screenshotDir, waitFor, watchPage, unlabeledControls, cspViolations, visible, screenshot,
} from './harness.mjs';

const PASSWORD = 'correct horse battery staple';
const P = '/environments/production';
const CHECKOUT = { state: 'ENABLED', variants: { on: true, off: false }, defaultVariant: 'off' };

let server;
let browser;
let shots;
const consoleErrors = [];
const pages = [];

before(async () => {
  shots = await screenshotDir();
  server = await startFlagd();
  for (const [login, role] of [['alice', 'editor'], ['bob', 'editor'], ['carol', 'admin'], ['dave', 'responder']]) {
    await server.api('POST', '/users', { login, role, password: PASSWORD });
  }
  await server.api('PUT', `${P}/flags/checkout`, CHECKOUT);
  await server.api('PUT', `${P}/flags/banner`, { state: 'ENABLED', variants: { on: true, off: false }, defaultVariant: 'on' });
  browser = await launchBrowser();
}, { timeout: 120000 });

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (server) await server.stop();
}, { timeout: 60000 });

/** A new browser context signed in as `login` (a person) or with the admin token, at `hash`. */
async function signedIn(login, hash = '#/production/flags') {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  watchPage(page, login, consoleErrors);
  pages.push(page);
  await page.goto(`${server.base}/${hash}`);
  if (login === 'admin') {
    const form = page.getByRole('form', { name: 'Sign in with an access token' });
    await visible(form.getByLabel('Access token'));
    await form.getByLabel('Access token').fill(server.adminToken);
    await form.getByRole('button', { name: 'Sign in' }).click();
  } else {
    const form = page.getByRole('form', { name: 'Sign in with a password' });
    await visible(form.getByLabel('Login'));
    await form.getByLabel('Login').fill(login);
    await form.getByLabel('Password').fill(PASSWORD);
    await form.getByRole('button', { name: 'Sign in' }).click();
  }
  await visible(page.locator('.user-name', { hasText: login }));
  return page;
}

function nav(page, name) {
  return page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name });
}

async function request(id) {
  return (await server.api('GET', `${P}/change-requests/${encodeURIComponent(id)}`)).request;
}

function requestId(page) {
  const m = /#\/production\/requests\/([^/?]+)$/.exec(page.url());
  return m ? decodeURIComponent(m[1]) : null;
}

test('approvals: protect production, propose, approve twice, break-glass and its review, stale', { timeout: 300000 }, async (t) => {
  let admin;
  let alice;
  let bob;
  let carol;
  let dave;
  let firstId;
  let staleId;

  await t.test('an admin protects production with 2 approvals from the header', async () => {
    admin = await signedIn('admin');
    const setting = await visible(admin.getByRole('button', { name: /Approval setting of Production: not protected/ }));
    await setting.click();
    const dlg = await visible(admin.getByRole('dialog', { name: 'Approvals in Production' }));
    assert.deepEqual(await unlabeledControls(admin), [], 'every control of the dialog has a label');
    assert.equal(await dlg.getByLabel('Approvals needed').isDisabled(), true, 'the count waits for protection');
    await dlg.getByLabel('Protect Production: changes need approval').check();
    await dlg.getByLabel('Approvals needed').fill('2');
    await dlg.getByRole('button', { name: 'Save' }).click();
    await visible(admin.locator('.env-switch').getByRole('button', { name: /protected, 2 approvals/ }));
    await visible(admin.locator('.page-title .protect-badge', { hasText: 'Protected · 2 approvals' }));
    assert.deepEqual((await server.api('GET', `${P}/approval-policy`)).policy, { protected: true, approvals: 2 });
    const env = (await server.api('GET', '/environments')).environments.find((e) => e.key === 'production');
    assert.equal(env.protected, true);
    // The Requests link appears with the environment protected.
    await visible(nav(admin, 'Requests'));
  });

  await t.test('alice edits checkout: the editor proposes the change instead of saving it', async () => {
    alice = await signedIn('alice', '#/production/flags/checkout');
    await visible(alice.getByRole('heading', { name: 'checkout' }));
    await visible(alice.locator('.page-title .protect-badge', { hasText: 'Protected · 2 approvals' }));
    assert.equal(await alice.locator('.env-switch button.protect-badge').count(), 0, 'only admins change the setting');
    const raw = alice.getByLabel('Raw JSON of the flag definition');
    await raw.fill(JSON.stringify({ ...CHECKOUT, defaultVariant: 'on' }, null, 2));
    const propose = alice.getByRole('button', { name: 'Propose change' });
    await waitFor(() => propose.isEnabled(), { message: 'the propose button' });
    assert.equal(await alice.getByRole('button', { name: 'Save changes' }).count(), 0, 'no direct save in a protected environment');
    await propose.click();
    const dlg = await visible(alice.getByRole('dialog', { name: 'Propose: Update checkout' }));
    await visible(dlg.getByText('Nothing changes until 2 other people', { exact: false }));
    await visible(dlg.locator('.dl.add', { hasText: '"defaultVariant": "on"' }));
    assert.deepEqual(await unlabeledControls(alice), []);
    await dlg.getByLabel('Title of the change request').fill('Serve on by default');
    await dlg.getByRole('button', { name: 'Propose change' }).click();
    firstId = await waitFor(() => requestId(alice), { message: 'the request page' });
    await visible(alice.getByRole('heading', { name: 'Serve on by default', level: 1 }));
    await visible(alice.locator('.page-actions .state-chip', { hasText: 'open' }));
    await visible(alice.locator('.approvals-big', { hasText: '0 of 2 approvals' }));
    await visible(alice.locator('.diff-card', { hasText: 'checkout' }).locator('.dl.add', { hasText: '"defaultVariant": "on"' }));
    await visible(alice.locator('.request-events li[data-action="created"]', { hasText: 'alice' }));
    // Not written: the flag is as it was, and the request holds the change.
    assert.equal((await server.api('GET', `${P}/flags/checkout`)).defaultVariant, 'off');
    const req = await request(firstId);
    assert.equal(req.author, 'alice');
    assert.equal(req.approvalsRequired, 2);
    assert.deepEqual(req.change, { flags: { checkout: { ...CHECKOUT, defaultVariant: 'on' } } });
    // The editor was left clean: the draft lives in the request.
    await visible(nav(alice, 'Requests').locator('.nav-count', { hasText: '1' }));
  });

  await t.test('alice cannot approve her own request: the button is disabled and says why', async () => {
    const approve = alice.getByRole('button', { name: 'Approve', exact: true });
    await visible(approve);
    assert.equal(await approve.isDisabled(), true);
    await visible(alice.locator('.why-list', { hasText: 'You proposed this: approvals must come from other people.' }));
    assert.equal(await alice.getByRole('button', { name: 'Reject', exact: true }).isDisabled(), true);
    await visible(alice.getByRole('button', { name: 'Withdraw' }));
    assert.equal(await alice.getByRole('button', { name: 'Apply', exact: true }).count(), 0, 'it applies itself at the last approval');
    // A responder cannot approve either.
    dave = await signedIn('dave', `#/production/requests/${encodeURIComponent(firstId)}`);
    await visible(dave.getByRole('heading', { name: 'Serve on by default' }));
    assert.equal(await dave.getByRole('button', { name: 'Approve', exact: true }).isDisabled(), true);
    await visible(dave.locator('.why-list', { hasText: 'Your role (responder) cannot approve' }));
    // Off the request page: fewer pages read it again at each version event. flagd's GET
    // of a request holds a SQLite connection while it waits for a second one, so many at
    // once can exhaust its pool of 4 (503 after --store-timeout; reported).
    await dave.goto(`${server.base}/#/production/flags`);
  });

  await t.test('bob approves: 1 of 2', async () => {
    bob = await signedIn('bob', `#/production/requests/${encodeURIComponent(firstId)}`);
    await visible(bob.getByRole('heading', { name: 'Serve on by default' }));
    const approve = bob.getByRole('button', { name: 'Approve', exact: true });
    assert.equal(await approve.isEnabled(), true);
    await approve.click();
    const dlg = await visible(bob.getByRole('dialog', { name: 'Approve “Serve on by default”?' }));
    await visible(dlg.getByText('Approval 1 of 2.'));
    await dlg.getByLabel('Comment (optional)').fill('looks right');
    await dlg.getByRole('button', { name: 'Approve' }).click();
    await visible(bob.locator('.approvals-big', { hasText: '1 of 2 approvals' }));
    await visible(bob.locator('.request-events li[data-action="approved"]', { hasText: 'looks right' }));
    assert.equal(await bob.getByRole('button', { name: 'Approve', exact: true }).isDisabled(), true, 'one approval per person');
    assert.deepEqual((await request(firstId)).approvedBy, ['bob']);
    assert.equal((await server.api('GET', `${P}/flags/checkout`)).defaultVariant, 'off', 'not applied yet');
    await screenshot(bob, join(shots, '20-change-request.png'), { tall: true });
    await bob.goto(`${server.base}/#/production/requests`);
  });

  await t.test('carol approves: the last approval applies it, in alice’s name', async () => {
    carol = await signedIn('carol', `#/production/requests/${encodeURIComponent(firstId)}`);
    await carol.getByRole('button', { name: 'Approve', exact: true }).click();
    const dlg = await visible(carol.getByRole('dialog', { name: 'Approve “Serve on by default”?' }));
    await visible(dlg.getByText('Yours is the last approval needed', { exact: false }));
    await dlg.getByRole('button', { name: 'Approve' }).click();
    try {
      await visible(carol.locator('.page-actions .state-chip', { hasText: 'applied' }));
    } catch (err) {
      throw new Error(`${err.message}\nshown: ${await carol.locator('body').innerText()}\n${JSON.stringify(await request(firstId))}`);
    }
    const req = await request(firstId);
    assert.equal(req.state, 'applied');
    assert.deepEqual(req.approvedBy, ['bob', 'carol']);
    await visible(carol.getByText(`Applied as v${req.appliedVersion}.`));
    assert.equal((await server.api('GET', `${P}/flags/checkout`)).defaultVariant, 'on');
    const [v] = (await server.api('GET', `${P}/versions?limit=1`)).versions;
    assert.equal(v.version, req.appliedVersion);
    assert.equal(v.author, 'alice');
    assert.match(v.reason, /approved by bob, carol/);
    // alice's page follows the version event.
    await visible(alice.locator('.page-actions .state-chip', { hasText: 'applied' }));
    // The list: state, approvals, author, title.
    await nav(alice, 'Requests').click();
    const row = await visible(alice.locator(`.requests-table tr[data-id="${firstId}"]`));
    const text = await row.innerText();
    assert.match(text, /applied/);
    assert.match(text, /2 of 2/);
    assert.match(text, /alice/);
    assert.match(text, /Serve on by default/);
    assert.equal(await nav(alice, 'Requests').locator('.nav-count').count(), 0, 'nothing open');
  });

  await t.test('dave flips the kill switch: applied without approval, a review opens', async () => {
    await dave.goto(`${server.base}/#/production/flags`);
    const sw = await visible(dave.getByRole('switch', { name: 'checkout enabled' }));
    await sw.click();
    const dlg = await visible(dave.getByRole('dialog', { name: /Disable checkout in Production/ }));
    await visible(dlg.getByText('applied without approval; opens a review', { exact: false }));
    await dlg.getByLabel(/Reason/).fill('checkout 5xx spike (INC-7)');
    await dlg.getByRole('button', { name: 'Disable in Production' }).click();
    await visible(dave.getByRole('switch', { name: 'checkout disabled' }));
    assert.equal((await server.api('GET', `${P}/flags/checkout`)).state, 'DISABLED');
    const { reviews } = await server.api('GET', `${P}/reviews?open=true`);
    assert.equal(reviews.length, 1);
    assert.equal(reviews[0].actor, 'dave');
    await nav(dave, 'Requests').click();
    const row = await visible(dave.locator(`table[aria-label="Reviews to acknowledge"] tr[data-id="${reviews[0].id}"]`));
    const text = await row.innerText();
    assert.match(text, /dave/);
    assert.match(text, /Kill switch/);
    assert.match(text, /checkout/);
    assert.match(text, /checkout 5xx spike \(INC-7\)/);
    assert.equal(await row.getByRole('link', { name: `The changes of v${reviews[0].version}` }).getAttribute('href'),
      `#/production/history/diff?from=${reviews[0].version - 1}&to=${reviews[0].version}`);
    assert.equal(await row.getByRole('button', { name: /Acknowledge/ }).count(), 0, 'a responder does not acknowledge');
    await visible(dave.getByText('Reviews are acknowledged by editors and admins other than who acted', { exact: false }));
  });

  await t.test('bob acknowledges the review with a note', async () => {
    await bob.goto(`${server.base}/#/production/requests`);
    const { reviews: [r] } = await server.api('GET', `${P}/reviews?open=true`);
    const row = await visible(bob.locator(`table[aria-label="Reviews to acknowledge"] tr[data-id="${r.id}"]`));
    await row.getByRole('button', { name: `Acknowledge v${r.version}` }).click();
    const dlg = await visible(bob.getByRole('dialog', { name: `Acknowledge v${r.version} by dave?` }));
    await dlg.getByLabel('Note (optional)').fill('right call, see INC-7');
    await dlg.getByRole('button', { name: 'Acknowledge' }).click();
    const done = await visible(bob.locator(`table[aria-label="Acknowledged reviews"] tr[data-id="${r.id}"]`));
    assert.match(await done.innerText(), /by bob/);
    assert.match(await done.innerText(), /right call, see INC-7/);
    await visible(bob.getByText('Nothing waits for acknowledgement.'));
    const [ack] = (await server.api('GET', `${P}/reviews`)).reviews;
    assert.equal(ack.acknowledgedBy, 'bob');
    assert.equal(ack.note, 'right call, see INC-7');
  });

  await t.test('history: a revert says it opens a review; an older version’s undo is proposed', async () => {
    const { appliedVersion } = await request(firstId);
    await alice.goto(`${server.base}/#/production/history`);
    await alice.getByRole('button', { name: `Revert to v${appliedVersion - 1}` }).click();
    const rv = await visible(alice.getByRole('dialog', { name: /Revert Production to v/ }));
    await visible(rv.getByText('applied without approval; opens a review', { exact: false }));
    await rv.getByRole('button', { name: 'Cancel' }).click();
    // The request's version is no longer the head (dave's kill switch came after it).
    await alice.getByRole('button', { name: `Undo v${appliedVersion}`, exact: true }).click();
    const dlg = await visible(alice.getByRole('dialog', { name: `Propose undoing v${appliedVersion} in Production?` }));
    await visible(dlg.getByText('only its last version', { exact: false }));
    await dlg.getByLabel(/Reason/).fill('default on was too early');
    const check = dlg.getByLabel('Also undo the later changes to these flags');
    if (await check.count()) await check.check();
    await dlg.getByRole('button', { name: 'Propose the undo' }).click();
    const id = await waitFor(() => requestId(alice), { message: 'the undo request' });
    const req = await request(id);
    assert.equal(req.title, `Undo v${appliedVersion}: default on was too early`);
    // What the undo writes: checkout as it was before that version.
    assert.deepEqual(req.change, { flags: { checkout: CHECKOUT } });
    await alice.getByRole('button', { name: 'Withdraw' }).click();
    await (await visible(alice.getByRole('dialog', { name: /Withdraw/ }))).getByRole('button', { name: 'Withdraw' }).click();
    await visible(alice.locator('.page-actions .state-chip', { hasText: 'withdrawn' }));
  });

  await t.test('enabling is not break-glass: alice proposes it from the list', async () => {
    await alice.goto(`${server.base}/#/production/flags`);
    await alice.getByRole('switch', { name: 'checkout disabled' }).click();
    const dlg = await visible(alice.getByRole('dialog', { name: 'Propose: enable checkout' }));
    await dlg.getByRole('button', { name: 'Propose change' }).click();
    const id = await waitFor(() => requestId(alice), { message: 'the enable request' });
    assert.equal((await request(id)).change.flags.checkout.state, 'ENABLED');
    assert.equal((await server.api('GET', `${P}/flags/checkout`)).state, 'DISABLED');
    await alice.getByRole('button', { name: 'Withdraw' }).click();
    const w = await visible(alice.getByRole('dialog', { name: /Withdraw/ }));
    await w.getByRole('button', { name: 'Withdraw' }).click();
    await visible(alice.locator('.page-actions .state-chip', { hasText: 'withdrawn' }));
  });

  await t.test('a new flag in a protected environment is proposed', async () => {
    await nav(alice, 'Flags').click();
    await alice.getByRole('button', { name: 'New flag' }).click();
    const dlg = await visible(alice.getByRole('dialog', { name: /New flag in Production/ }));
    await visible(dlg.getByText('Production is protected.'));
    await dlg.getByLabel('Key', { exact: true }).fill('new-banner');
    await dlg.getByLabel(/Title of the change request/).fill('Add new-banner');
    await dlg.getByRole('button', { name: 'Propose in Production' }).click();
    staleId = await waitFor(() => requestId(alice), { message: 'the new flag’s request' });
    await visible(alice.getByRole('heading', { name: 'Add new-banner' }));
    await visible(alice.locator('.diff-card', { hasText: 'new-banner' }).locator('.chg-added'));
    await assert.rejects(server.api('GET', `${P}/flags/new-banner`), /404/);
  });

  await t.test('another change moves the base: the request is stale and alice updates it', async () => {
    const base = (await request(staleId)).baseVersion;
    // Break-glass moves the head on.
    await server.api('POST', `${P}/flags/banner/disable`, { reason: 'banner broke the layout' });
    await bob.goto(`${server.base}/#/production/requests/${encodeURIComponent(staleId)}`);
    await visible(bob.locator('.stale-note', { hasText: `The flag set moved since v${base}` }));
    await visible(bob.locator('.stale-note', { hasText: 'its author must update it' }));
    assert.equal(await bob.getByRole('button', { name: 'Approve', exact: true }).isDisabled(), true);
    assert.equal(await bob.getByRole('button', { name: 'Update onto the current version' }).count(), 0, 'only its author updates it');
    // flagd itself refuses an approval on a moved base, and marks the request stale.
    const r = await bob.evaluate(async (id) => {
      const s = await fetch('/api/v1/session').then((x) => x.json());
      const res = await fetch(`/api/v1/environments/production/change-requests/${encodeURIComponent(id)}/approve`, {
        method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': s.csrfToken }, body: '{}',
      });
      return res.status;
    }, staleId);
    assert.equal(r, 409);
    assert.equal((await request(staleId)).state, 'stale');

    await alice.reload();
    await visible(alice.locator('.page-actions .state-chip', { hasText: 'stale' }));
    await visible(alice.locator('.stale-note', { hasText: 'its author must update it' }));
    await visible(alice.locator('.stale-note', { hasText: 'This request is stale' }));
    await alice.locator('.stale-note').getByRole('button', { name: 'Update onto the current version' }).click();
    await visible(alice.locator('.page-actions .state-chip', { hasText: 'open' }));
    await waitFor(async () => (await alice.locator('.stale-note').count()) === 0, { message: 'the stale notice to go' });
    const req = await request(staleId);
    assert.equal(req.state, 'open');
    assert.equal(req.revision, 2);
    const head = (await server.api('GET', P)).version;
    assert.equal(req.baseVersion, head);
    await visible(alice.locator('.request-events li[data-action="edited"]', { hasText: 'alice' }));
    await visible(alice.locator('.request-events li[data-action="stale"]'));
  });

  await t.test('a write refused with approval_required offers to propose it instead', async () => {
    // staging is protected behind the page's back: the page still thinks it is not.
    await server.api('PUT', '/environments/staging/flags/promo', CHECKOUT);
    await alice.goto(`${server.base}/#/staging/flags/promo`);
    await visible(alice.getByRole('heading', { name: 'promo' }));
    await server.api('PUT', '/environments/staging/approval-policy', { protected: true, approvals: 1 });
    await alice.getByLabel('Raw JSON of the flag definition').fill(JSON.stringify({ ...CHECKOUT, defaultVariant: 'on' }, null, 2));
    await alice.getByRole('button', { name: 'Save changes' }).click();
    const dlg = await visible(alice.getByRole('dialog', { name: /Save promo in Staging/ }));
    await dlg.getByRole('button', { name: 'Save' }).click();
    await visible(dlg.getByText('environment "staging" is protected', { exact: false }));
    await dlg.getByRole('button', { name: 'Propose this change instead' }).click();
    const p = await visible(alice.getByRole('dialog', { name: 'Propose: Update promo' }));
    await visible(p.getByText('Nothing changes until 1 other person', { exact: false }));
    await p.getByRole('button', { name: 'Propose change' }).click();
    const id = await waitFor(() => /#\/staging\/requests\/[^/]+$/.test(alice.url()), { message: 'the staging request' }) && alice.url().split('/').pop();
    const req = (await server.api('GET', `/environments/staging/change-requests/${id}`)).request;
    assert.equal(req.change.flags.promo.defaultVariant, 'on');
    await visible(alice.locator('.env-switch .protect-badge[aria-label="Staging is protected: 1 approval per change"]'));
    await visible(alice.locator('.page-title .protect-badge', { hasText: 'Protected · 1 approval' }));
  });

  await t.test('mobile (390×844): the requests list and a request page do not overflow', async () => {
    await bob.setViewportSize({ width: 390, height: 844 });
    try {
      for (const hash of ['#/production/requests', `#/production/requests/${encodeURIComponent(firstId)}`]) {
        await bob.goto(`${server.base}/${hash}`);
        await visible(bob.locator('.requests-table, .request-main'));
        const w = await bob.evaluate(() => document.documentElement.scrollWidth);
        assert.ok(w <= 390, `${hash}: scrollWidth ${w} > 390`);
      }
    } finally {
      await bob.setViewportSize({ width: 1280, height: 800 });
    }
  });

  await t.test('every control has a label; no console errors and no CSP violations', async () => {
    for (const p of pages) {
      assert.deepEqual(await unlabeledControls(p), []);
      assert.deepEqual(await cspViolations(p), []);
    }
    assert.deepEqual(consoleErrors, []);
  });
});
