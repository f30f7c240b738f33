// End-to-end: people's own accounts. An admin (signed in with the bootstrap token)
// creates a person in the People view, changes their role and environments; the person
// signs in with their login and password, changes it; a wrong password, a locked
// account and a disabled one are refused with clear words. Run from the repository root:
//   node --test admin-ui/tests/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  startFlagd, launchBrowser, screenshotDir, waitFor, watchPage, unlabeledControls, cspViolations, visible, screenshot,
} from './harness.mjs';

const PASSWORD = 'correct horse battery staple';
const NEW_PASSWORD = 'tr0ub4dor and three more';

let server;
let browser;
let context;
let page;
let shots;
const consoleErrors = [];

before(async () => {
  shots = await screenshotDir();
  server = await startFlagd();
  browser = await launchBrowser();
  context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  page = await context.newPage();
  watchPage(page, 'people', consoleErrors);
}, { timeout: 120000 });

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (server) await server.stop();
}, { timeout: 60000 });

function nav(name) {
  return page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name });
}

function passwordForm() {
  return page.getByRole('form', { name: 'Sign in with a password' });
}

async function signInWithPassword(login, password) {
  const form = passwordForm();
  await visible(form.getByLabel('Login'));
  await form.getByLabel('Login').fill(login);
  await form.getByLabel('Password').fill(password);
  await form.getByRole('button', { name: 'Sign in' }).click();
}

async function signInWithToken(token) {
  const form = page.getByRole('form', { name: 'Sign in with an access token' });
  await visible(form.getByLabel('Access token'));
  await form.getByLabel('Access token').fill(token);
  await form.getByRole('button', { name: 'Sign in' }).click();
}

async function signOut(name) {
  await page.getByRole('button', { name: `Sign out ${name}` }).click();
  await visible(passwordForm());
}

async function person(login) {
  const { users } = await server.api('GET', '/users');
  return users.find((u) => u.login === login);
}

test('people: an admin creates a person, who signs in with a password', { timeout: 180000 }, async (t) => {
  await t.test('the sign-in page offers a login and password, then an access token', async () => {
    await page.goto(`${server.base}/`);
    await visible(page.getByRole('heading', { name: 'Sign in' }));
    assert.equal(await page.getByRole('link', { name: /Sign in with/ }).count(), 0, 'no single sign-on without --oidc-issuer');
    const labels = await page.locator('.signin-methods form').evaluateAll((forms) => forms.map((f) => f.getAttribute('aria-label')));
    assert.deepEqual(labels, ['Sign in with a password', 'Sign in with an access token']);
    assert.deepEqual(await unlabeledControls(page), []);
  });

  await t.test('an admin creates a person in the People view', async () => {
    await signInWithToken(server.adminToken);
    await nav('People').click();
    await visible(page.getByRole('heading', { name: 'People' }));
    await visible(page.getByText('Nobody yet'));
    await page.getByRole('button', { name: 'New person' }).click();
    const dlg = await visible(page.getByRole('dialog', { name: 'New person' }));
    assert.deepEqual(await unlabeledControls(page), [], 'every control of the form has a label');
    await dlg.getByLabel('Login').fill('pat');
    await dlg.getByLabel('Name').fill('Pat Example');
    await dlg.getByLabel('E-mail').fill('pat@example.com');
    await dlg.getByLabel('Role').selectOption('editor');
    await dlg.getByLabel('Only:').check();
    await dlg.getByLabel('Production').check();
    await dlg.getByLabel('First password (optional)').fill('too short');
    await dlg.getByRole('button', { name: 'Create person' }).click();
    // flagd's 422 names the field; the dialog stays open and marks it.
    await visible(dlg.getByText('at least 12 are required', { exact: false }));
    assert.equal(await dlg.getByLabel('First password (optional)').getAttribute('aria-invalid'), 'true');
    await dlg.getByLabel('First password (optional)').fill(PASSWORD);
    await dlg.getByRole('button', { name: 'Create person' }).click();
    const row = await visible(page.locator('.people-table tr[data-login="pat"]'));
    const text = await row.innerText();
    assert.match(text, /Pat Example/);
    assert.match(text, /editor/);
    assert.match(text, /production/);
    assert.match(text, /password/);
    assert.match(text, /never/);
    const pat = await person('pat');
    assert.equal(pat.role, 'editor');
    assert.deepEqual(pat.environments, ['production']);
    assert.equal(pat.email, 'pat@example.com');
    assert.equal(pat.password, true);
    assert.equal(pat.roleSource, 'admin');
    assert.equal(pat.createdBy, 'admin');
  });

  await t.test('a login already taken is refused in the dialog', async () => {
    await page.getByRole('button', { name: 'New person' }).click();
    const dlg = await visible(page.getByRole('dialog', { name: 'New person' }));
    await dlg.getByLabel('Login').fill('pat');
    await dlg.getByRole('button', { name: 'Create person' }).click();
    await visible(dlg.getByText('exists already', { exact: false }));
    await dlg.getByRole('button', { name: 'Cancel' }).click();
    await page.getByRole('dialog').waitFor({ state: 'detached' });
  });

  await t.test('the admin changes the role and the environments', async () => {
    await page.getByRole('button', { name: 'Change pat' }).click();
    const dlg = await visible(page.getByRole('dialog', { name: 'Change pat' }));
    assert.equal(await dlg.getByLabel('Role').inputValue(), 'editor');
    assert.equal(await dlg.getByLabel('Production').isChecked(), true);
    await dlg.getByLabel('Role').selectOption('responder');
    await dlg.getByLabel('All environments').check();
    await dlg.getByRole('button', { name: 'Save' }).click();
    await waitFor(async () => /responder/.test(await page.locator('.people-table tr[data-login="pat"]').innerText()), { message: 'the new role in the list' });
    const pat = await person('pat');
    assert.equal(pat.role, 'responder');
    assert.equal(pat.environments, null);
    await screenshot(page, join(shots, '13-people.png'));
  });

  await t.test('mobile (390×844): the people list does not overflow', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    try {
      await visible(page.locator('.people-table tr[data-login="pat"]'));
      const w = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(w <= 390, `people list scrollWidth ${w} > 390`);
    } finally {
      await page.setViewportSize({ width: 1280, height: 800 });
    }
  });

  await t.test('a wrong password is refused with a clear error; the right one signs in', async () => {
    await signOut('admin');
    await signInWithPassword('pat', 'not the password at all');
    await visible(passwordForm().getByText('Wrong login or password'));
    await signInWithPassword('pat', PASSWORD);
    await visible(page.getByRole('heading', { name: 'Flags' }));
    await visible(page.locator('.user-name', { hasText: 'pat' }));
    await visible(page.locator('.role-chip', { hasText: 'responder' }));
    assert.equal(await nav('People').count(), 0, 'no People view for a responder');
    const s = await page.evaluate(() => fetch('/api/v1/session').then((r) => r.json()));
    assert.equal(s.person, true);
    assert.equal(s.name, 'pat');
    const pat = await person('pat');
    assert.ok(pat.lastLoginAt, 'the sign-in is recorded');
  });

  await t.test('the person changes their own password', async () => {
    await page.getByRole('button', { name: 'Change password' }).click();
    const dlg = await visible(page.getByRole('dialog', { name: 'Change your password' }));
    assert.deepEqual(await unlabeledControls(page), []);
    await dlg.getByLabel('Current password').fill('not my password');
    await dlg.getByLabel('New password', { exact: true }).fill(NEW_PASSWORD);
    await dlg.getByLabel('Repeat the new password').fill(NEW_PASSWORD);
    await dlg.getByRole('button', { name: 'Change password' }).click();
    await visible(dlg.getByText('is not your current password', { exact: false }));
    assert.equal(await dlg.getByLabel('Current password').getAttribute('aria-invalid'), 'true');
    await dlg.getByLabel('Current password').fill(PASSWORD);
    await dlg.getByRole('button', { name: 'Change password' }).click();
    await visible(page.getByText('Password changed'));
    await signOut('pat');
    await signInWithPassword('pat', PASSWORD);
    await visible(passwordForm().getByText('Wrong login or password'));
    await signInWithPassword('pat', NEW_PASSWORD);
    await visible(page.locator('.user-name', { hasText: 'pat' }));
    await signOut('pat');
  });

  await t.test('an account locked after ten wrong passwords says until when', async () => {
    await server.api('POST', '/users', { login: 'lee', role: 'viewer', password: PASSWORD });
    for (let i = 0; i < 10; i += 1) {
      const r = await fetch(`${server.base}/api/v1/session`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ login: 'lee', password: `wrong ${i}` }),
      });
      assert.equal(r.status, 401);
    }
    await signInWithPassword('lee', PASSWORD);
    await visible(passwordForm().getByText('This account is locked after too many wrong passwords', { exact: false }));
  });

  await t.test('a disabled person cannot sign in until enabled again', async () => {
    await signInWithToken(server.adminToken);
    await nav('People').click();
    await page.getByRole('button', { name: 'Disable pat' }).click();
    const dlg = await visible(page.getByRole('dialog', { name: 'Disable pat?' }));
    await dlg.getByRole('button', { name: 'Disable' }).click();
    await visible(page.locator('.people-table tr[data-login="pat"]', { hasText: 'disabled' }));
    assert.ok((await person('pat')).disabledAt);
    await signOut('admin');
    await signInWithPassword('pat', NEW_PASSWORD);
    await visible(passwordForm().getByText('Wrong login or password'));
    await signInWithToken(server.adminToken);
    await nav('People').click();
    await page.getByRole('button', { name: 'Enable pat' }).click();
    await visible(page.locator('.people-table tr[data-login="pat"]', { hasText: 'active' }));
    assert.equal((await person('pat')).disabledAt, undefined);
    await signOut('admin');
    await signInWithPassword('pat', NEW_PASSWORD);
    await visible(page.locator('.user-name', { hasText: 'pat' }));
  });

  await t.test('no console errors and no CSP violations during the run', async () => {
    assert.deepEqual(await cspViolations(page), []);
    assert.deepEqual(consoleErrors, []);
  });
});
