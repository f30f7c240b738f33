// End-to-end: an OpenFeature flagd provider's stream (flagd.sync.v1 over gRPC, spoken
// here with node:http2) next to the real Rust SDK (checkout-service), both in the fleet
// view of a real flagd in headless Chromium. The provider cannot acknowledge what it
// applied: the view shows what flagd sent it, never "current", "behind" or "converged".
// Run from the repository root:
//   node --test admin-ui/tests/providers.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  REPO, startFlagd, startSdk, launchBrowser, freePort, waitFor, watchPage, cspViolations, visible, screenshot, loopbackOnly,
  unlabeledControls, screenshotDir,
} from './harness.mjs';

const P = '/environments/production';
const DOC_SHOT = join(REPO, 'docs/screenshots/fleet-providers.png');
const PROVIDER_ID = 'ui-test-provider';

let server;
let grpcPort;
let sdk;
let sdkKey;
let stream;
let browser;
let context;
let page;
let shots;
const consoleErrors = [];

// ---- a gRPC client of a few lines: one server stream over node:http2 ----------------

/** A protobuf varint. */
function varint(n) {
  const out = [];
  let v = n;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  out.push(v);
  return Buffer.from(out);
}

/** Reads a varint at `at`: [value, next offset]. */
function readVarint(buf, at) {
  let v = 0;
  let shift = 0;
  for (;;) {
    if (at >= buf.length) throw new Error('truncated varint');
    const b = buf[at];
    at += 1;
    v += (b & 0x7f) * 2 ** shift;
    if (!(b & 0x80)) return [v, at];
    shift += 7;
  }
}

/** A gRPC message frame: uncompressed, 4-byte big-endian length, the message. */
function grpcFrame(message) {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/** `SyncFlagsRequest { provider_id = 1 }` (an empty message without one). */
function syncFlagsRequest(providerId) {
  if (!providerId) return Buffer.alloc(0);
  const id = Buffer.from(providerId);
  return Buffer.concat([Buffer.from([0x0a]), varint(id.length), id]);
}

/** `SyncFlagsResponse`: field 1, `flag_configuration`, a JSON string (field 2, the context, skipped). */
function decodeSyncFlagsResponse(msg) {
  let at = 0;
  let configuration = null;
  while (at < msg.length) {
    let key;
    [key, at] = readVarint(msg, at);
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 2) {
      let len;
      [len, at] = readVarint(msg, at);
      if (field === 1) configuration = msg.subarray(at, at + len).toString('utf8');
      at += len;
    } else if (wire === 0) {
      [, at] = readVarint(msg, at);
    } else {
      throw new Error(`unexpected wire type ${wire} (field ${field})`);
    }
  }
  if (configuration === null) throw new Error('no flag_configuration in the SyncFlagsResponse');
  return JSON.parse(configuration);
}

/**
 * `flagd.sync.v1.FlagSyncService/SyncFlags`, its response stream kept open: `next()` is
 * the next flag set flagd sends (parsed), `close()` cancels the stream (RST_STREAM) and
 * ends the connection.
 */
function syncFlags(port, key) {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  const sessionErrors = [];
  session.on('error', (e) => sessionErrors.push(e));
  const req = session.request({
    ':method': 'POST',
    ':path': '/flagd.sync.v1.FlagSyncService/SyncFlags',
    'content-type': 'application/grpc',
    te: 'trailers',
    authorization: `Bearer ${key}`,
    'user-agent': 'flagd-ui-test node-http2',
  });
  const sets = [];
  const waiting = [];
  let buf = Buffer.alloc(0);
  let headers = null;
  let trailers = null;
  let ended = false;
  const failure = () => new Error(`the SyncFlags stream ended: headers ${JSON.stringify(headers)}, trailers ${JSON.stringify(trailers)}`
    + `${sessionErrors.length ? `, ${sessionErrors.map((e) => e.message).join('; ')}` : ''}`);
  const deliver = () => {
    while (waiting.length && (sets.length || ended)) {
      const w = waiting.shift();
      if (sets.length) w.resolve(sets.shift());
      else w.reject(failure());
    }
  };
  req.on('response', (h) => { headers = h; });
  req.on('trailers', (t) => { trailers = t; });
  req.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 5) {
      const len = buf.readUInt32BE(1);
      if (buf.length < 5 + len) break;
      if (buf[0] !== 0) throw new Error('a compressed gRPC frame (none was asked for)');
      sets.push(decodeSyncFlagsResponse(buf.subarray(5, 5 + len)));
      buf = buf.subarray(5 + len);
    }
    deliver();
  });
  const end = () => {
    ended = true;
    deliver();
  };
  req.on('end', end);
  req.on('close', end);
  req.on('error', (e) => {
    sessionErrors.push(e);
    end();
  });
  // The one request message, then the end of the client's side, as gRPC clients do for a
  // server stream: flagd (tonic) starts the call only once the request is complete.
  req.end(grpcFrame(syncFlagsRequest(PROVIDER_ID)));
  return {
    next(timeout = 15000) {
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no flag set from SyncFlags in time')), timeout);
        waiting.push({
          resolve: (v) => { clearTimeout(t); resolve(v); },
          reject: (e) => { clearTimeout(t); reject(e); },
        });
        deliver();
      });
    },
    close() {
      return new Promise((resolve) => {
        if (!req.closed) req.close(http2.constants.NGHTTP2_CANCEL);
        if (session.closed || session.destroyed) {
          resolve();
          return;
        }
        session.close(resolve);
      });
    },
  };
}

// ---- the browser ---------------------------------------------------------------------

function nav(name) {
  return page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name });
}

async function signIn(token) {
  const form = page.getByRole('form', { name: 'Sign in with an access token' });
  await visible(form.getByLabel('Access token'));
  await form.getByLabel('Access token').fill(token);
  await form.getByRole('button', { name: 'Sign in' }).click();
}

const fleet = () => server.api('GET', `${P}/fleet`);
const providerOf = (f) => f.instances.find((i) => i.acknowledges === false);

/** What the page and the server show, for a failed wait. */
async function explain(err) {
  const f = await fleet().catch((e) => e.message);
  const shown = await page.locator('main').innerText().catch(() => '?');
  return new Error(`${err.message}\nfleet: ${JSON.stringify(f)}\nshown:\n${shown}\nflagd log:\n${server.log()}`);
}

before(async () => {
  shots = await screenshotDir();
  await mkdir(join(REPO, 'docs/screenshots'), { recursive: true });
  grpcPort = await freePort();
  server = await startFlagd({ args: ['--grpc-listen', `127.0.0.1:${grpcPort}`] });
  sdkKey = (await server.api('POST', `${P}/sdk-keys`, { name: 'checkout-service' })).secret;
  await server.api('PUT', `${P}/flags/new-checkout`, { state: 'ENABLED', variants: { on: true, off: false }, defaultVariant: 'on' });
  sdk = await startSdk(server.base, sdkKey);
  browser = await launchBrowser();
  context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  await loopbackOnly(context);
  page = await context.newPage();
  watchPage(page, 'main', consoleErrors);
});

after(async () => {
  if (stream) await stream.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  if (sdk) await sdk.stop();
  if (server) await server.stop();
});

test('fleet: an OpenFeature flagd provider over gRPC is sent versions, never shown as having applied them', { timeout: 180000 }, async (t) => {
  let providerId;

  await t.test('a real SyncFlags stream gets the flag set', async () => {
    stream = syncFlags(grpcPort, sdkKey);
    const first = await stream.next();
    assert.ok(first.flags && first.flags['new-checkout'], `the set has new-checkout: ${JSON.stringify(first)}`);
    assert.equal(first.flags['new-checkout'].state, 'ENABLED');
    const f = await waitFor(async () => {
      const x = await fleet();
      return x.instances.length === 2 && providerOf(x) && providerOf(x).sentVersion === 1
        && x.instances.some((i) => i.acknowledges !== false && i.appliedVersion === 1) && x;
    }, { message: 'the SDK on v1 and the provider sent v1 in the fleet' });
    const p = providerOf(f);
    providerId = p.instance;
    assert.equal(p.state, 'connected');
    assert.equal(p.appliedVersion, null);
    assert.equal(p.labels.protocol, 'flagd.sync.v1');
    assert.equal(p.labels.providerId, PROVIDER_ID);
    assert.match(p.sdk, /flagd\.sync\.v1/);
    assert.equal(f.onVersion, 1, 'the provider is not counted on the version');
  });

  await t.test('the fleet view lists the SDK (current) and the provider (sent v1, not acknowledged)', async () => {
    await page.goto(`${server.base}/`);
    await signIn(server.adminToken);
    await visible(page.getByRole('heading', { name: 'Flags' }));
    await nav('Fleet').click();
    const table = await visible(page.getByRole('table', { name: 'SDK instances in production' }));
    const sdkRow = table.locator('tbody tr:not(.row-provider)');
    await visible(sdkRow.getByText('service=checkout'));
    await visible(sdkRow.locator('.vnum', { hasText: 'v1' }));
    await visible(sdkRow.locator('.chip-current', { hasText: 'current' }));
    const row = await visible(table.locator(`tr.row-provider[data-instance="${providerId}"]`));
    await visible(row.locator('.vnum', { hasText: 'sent v1' }));
    const chip = await visible(row.locator('.chip-unacked', { hasText: 'not acknowledged' }));
    assert.match(await chip.getAttribute('title'), /OpenFeature flagd provider over gRPC: flagd sent it this version; the protocol has no acknowledgement/);
    assert.equal(await row.locator('.chip-current, .chip-behind').count(), 0, 'a provider is never "current" or "behind"');
    await visible(row.getByText(`providerId=${PROVIDER_ID}`));
    await visible(row.getByText('OpenFeature flagd provider (gRPC)'));
    // The stats: 1/1 acknowledging instances on v1, none behind, 1 gRPC provider apart.
    const stats = page.locator('.fleet-stats');
    await visible(stats.getByText('acknowledging instances on v1'));
    assert.equal(await stats.locator('.stat').nth(0).locator('.stat-num').innerText(), '1/1');
    assert.equal(await stats.locator('.stat', { hasText: 'behind' }).locator('.stat-num').innerText(), '0');
    await visible(stats.locator('.stat-providers', { hasText: 'gRPC provider, sent v1' }));
    assert.deepEqual(await unlabeledControls(page), []);
  });

  await t.test('the kill switch: the provider is sent v2; the progress says so and does not claim "converged"', async () => {
    await server.api('POST', `${P}/flags/new-checkout/disable`, { reason: 'provider check' });
    const next = await stream.next();
    assert.equal(next.flags['new-checkout'].state, 'DISABLED');
    const row = page.locator(`tr.row-provider[data-instance="${providerId}"]`);
    const bar = page.locator('.converge', { hasText: 'v2 toggle' });
    try {
      await visible(row.locator('.vnum', { hasText: 'sent v2' }));
      await visible(bar.getByText('1/1 acknowledging instances applied'));
      await visible(bar.getByText('1 OpenFeature flagd provider (gRPC) was sent v2; it cannot acknowledge it'));
      await visible(bar.locator('.chip-unacked', { hasText: 'sent · not acknowledged' }));
    } catch (err) {
      throw await explain(err);
    }
    assert.doesNotMatch(await bar.innerText(), /converged|converging/, 'neither converged nor stuck converging');
    assert.equal(await bar.evaluate((el) => el.classList.contains('converge-done')), false);
    await visible(page.locator('tbody tr:not(.row-provider) .chip-current'));
    await visible(page.locator('.stat-providers', { hasText: 'sent v2' }));
    // The documentation's copy only when asked (UPDATE_DOC_SCREENSHOTS=1): a test run
    // leaves tracked files alone.
    if (process.env.UPDATE_DOC_SCREENSHOTS) await screenshot(page, DOC_SHOT);
    await screenshot(page, join(shots, 'fleet-providers.png'));
  });

  await t.test('mobile (390×844): the fleet with a provider does not overflow', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    try {
      const row = await visible(page.locator(`tr.row-provider[data-instance="${providerId}"]`));
      await visible(row.locator('.chip-unacked'));
      const w = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(w <= 390, `fleet scrollWidth ${w} > 390`);
      // The stacked layout labels every cell.
      const unlabeled = await row.locator('td:not([data-label])').count();
      assert.equal(unlabeled, 0);
      await screenshot(page, join(shots, 'fleet-providers-mobile.png'), { tall: true });
    } finally {
      await page.setViewportSize({ width: 1280, height: 800 });
    }
  });

  await t.test('the stream closed: the provider is unreachable, last sent v2', async () => {
    await stream.close();
    stream = null;
    const row = page.locator(`tr.row-lost.row-provider[data-instance="${providerId}"]`);
    try {
      await visible(row);
      await visible(row.getByText(/^unreachable since .+, last sent v2$/));
      await visible(row.locator('.chip-lost', { hasText: 'unreachable' }));
      await visible(row.locator('.vnum', { hasText: 'sent v2' }));
    } catch (err) {
      throw await explain(err);
    }
    const f = await fleet();
    assert.equal(providerOf(f).state, 'unreachable');
    await visible(page.locator('.stat-lost', { hasText: 'unreachable' }));
  });

  await t.test('a change it cannot be sent: not converged, 1 unreachable; forgotten, the SDK alone has converged', async () => {
    await server.api('POST', `${P}/flags/new-checkout/enable`, { reason: 'provider check' });
    const bar = page.locator('.converge', { hasText: 'v3 toggle' });
    const row = page.locator(`tr.row-provider[data-instance="${providerId}"]`);
    try {
      await visible(bar.getByText('1/1 acknowledging instances applied'));
      await visible(bar.locator('.chip-lost', { hasText: 'not converged: 1 unreachable' }));
      await visible(bar.getByText('1 OpenFeature flagd provider (gRPC) not yet sent v3', { exact: false }));
      await visible(row.locator('.chip-lost', { hasText: 'unreachable, not sent v3' }));
    } catch (err) {
      throw await explain(err);
    }
    await page.getByRole('button', { name: `Forget ${providerId}` }).click();
    const dlg = await visible(page.getByRole('dialog', { name: `Forget SDK instance ${providerId}?` }));
    await visible(dlg.getByText('it was last sent v2', { exact: false }));
    await dlg.getByRole('button', { name: 'Forget' }).click();
    await visible(page.locator('.converge.converge-done', { hasText: '1/1 instances applied' }));
    await visible(page.locator('.converge .chip-current', { hasText: 'converged' }));
    assert.equal(await page.locator('tr.row-provider').count(), 0);
    assert.equal(await page.locator('.stat-providers').count(), 0);
    await visible(page.getByText('instances on v3'));
  });

  await t.test('no console errors and no CSP violations during the run', async () => {
    assert.deepEqual(await cspViolations(page), []);
    assert.deepEqual(consoleErrors, []);
  });
});
