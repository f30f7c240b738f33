// Run by keys.test.mjs in a process of its own. The JavaScript provider keeps trying to
// reconnect after onClose() when it was closed while its stream was failing (its first
// connection refused, or its key revoked): a pending reconnect timer calls listen()
// again and nothing stops it, which keeps Node alive forever. So each such scenario
// runs here, reports one line `RESULT <json>`, and exits by itself.
//
// argv[2]: JSON {scenario: "refused" | "revoke", mode, port, secret, options,
//                base, adminToken, keyId, keyName}
import { OpenFeature, ProviderEvents } from '@openfeature/server-sdk';
import { performance } from 'node:perf_hooks';
import { makeProvider } from './providers.mjs';
import { waitFor } from './fixture.mjs';

const args = JSON.parse(process.argv[2]);
const provider = makeProvider(args.mode, { grpcPort: args.port }, args.secret, args.options ?? {});
const client = OpenFeature.getClient('child');
const events = [];
for (const type of ['Ready', 'Error', 'Stale', 'ConfigurationChanged']) {
  client.addHandler(ProviderEvents[type], (d) => events.push({ type, at: performance.now(), message: d?.message }));
}
const CTX = { targetingKey: 'user-001', plan: 'pro' };
const evaluate = async () => {
  const d = await client.getBooleanDetails('bool-targeted', false, CTX);
  return { value: d.value, variant: d.variant, reason: d.reason, errorCode: d.errorCode, errorMessage: d.errorMessage };
};
const admin = async (method, path) => {
  const r = await fetch(`${args.base}/api/v1${path}`, { method, headers: { Authorization: `Bearer ${args.adminToken}` } });
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
  return r.status === 204 ? null : r.json();
};

const result = { events };
try {
  const t0 = performance.now();
  try {
    await OpenFeature.setProviderAndWait('child', provider);
    result.ready = true;
  } catch (e) {
    result.ready = false;
    result.error = `${e?.constructor?.name}: ${e?.message}`;
  }
  result.ms = performance.now() - t0;
  result.status = client.providerStatus;
  result.evaluation = await evaluate();

  if (args.scenario === 'revoke') {
    const mine = (i) => i.keyName === args.keyName;
    await waitFor('the provider in the fleet', async () => (await admin('GET', '/environments/production/fleet')).instances.some(mine));
    const from = events.length;
    const t1 = performance.now();
    await admin('DELETE', `/tokens/${args.keyId}`);
    const lost = await waitFor('Stale or Error after the revocation', () => events.slice(from).find((e) => e.type === 'Stale' || e.type === 'Error'));
    result.revokeMs = lost.at - t1;
    // The grace period (retryGracePeriod) turns Stale into Error: the key is not coming back.
    await waitFor('Error after the grace period', () => events.slice(from).find((e) => e.type === 'Error'));
    result.afterRevoke = events.slice(from);
    result.statusAfterRevoke = client.providerStatus;
    await waitFor('the provider gone from the fleet', async () => !(await admin('GET', '/environments/production/fleet')).instances.some(mine));
    result.goneFromFleet = true;
    result.evaluationAfterRevoke = await evaluate();
  }
} catch (e) {
  result.failure = String(e?.stack ?? e);
}
await Promise.race([provider.onClose(), new Promise((r) => setTimeout(r, 2000))]);
console.log(`RESULT ${JSON.stringify(result)}`);
process.exit(0);
