// flagd killed (kill -9) or stopped (SIGTERM) and started again on the same ports and the
// same database: the official JavaScript provider goes Stale, reconnects by itself
// (Ready), and a change made after the restart reaches it.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { OpenFeature, ProviderStatus } from '@openfeature/server-sdk';
import { startFixture, timing, now, ENV } from './fixture.mjs';
import { MODES, makeProvider, connect, CTX, reset, expectedMetadata } from './providers.mjs';

const ROUNDS = 3;

describe('flagd restarts', () => {
  let fx;
  before(async () => {
    fx = await startFixture();
  });
  after(async () => {
    await OpenFeature.close();
    if (fx && fx.flagd.child === null) console.error(fx.flagd.logTail());
    await fx?.flagd.stop();
  });

  for (const mode of MODES) {
    for (const [signal, what] of [['SIGKILL', 'kill -9'], ['SIGTERM', 'graceful stop']]) {
      it(`${mode}: ${what}, start again (${ROUNDS} times), the provider reconnects and sees a change made after`, async () => {
        const domain = `restart-${mode}-${signal}`;
        const { client, recorder } = await connect(domain, makeProvider(mode, fx.flagd, fx.key.secret));
        try {
          for (let round = 0; round < ROUNDS; round++) {
            await reset(fx, client, mode);
            const before = await client.getBooleanDetails('toggle-flag', false, CTX);
            assert.deepEqual([before.value, before.reason], [true, 'TARGETING_MATCH']);

            let from = recorder.mark();
            await fx.flagd.kill(signal);
            const lost = await recorder.next('Stale or Error after flagd went away', (e) => e.type === 'Stale' || e.type === 'Error', { from });
            console.log(`js ${mode} ${what}: ${recorder.summary(from)}`);
            assert.ok(lost);
            if (mode === 'in-process') {
              // The last set received keeps being evaluated while flagd is away.
              const held = await client.getBooleanDetails('toggle-flag', false, CTX);
              assert.deepEqual([held.value, held.variant], [true, 'on']);
            }

            from = recorder.mark();
            const t0 = now();
            await fx.flagd.restart();
            const back = await recorder.next('Ready (or ConfigurationChanged) after the restart', (e) => e.type === 'Ready' || e.type === 'ConfigurationChanged', { from });
            timing('js', mode, `reconnect-after-${signal === 'SIGKILL' ? 'kill' : 'sigterm'}`, back.at - t0);
            console.log(`js ${mode} after restart: ${recorder.summary(from)}`);
            await waitStatus(client, ProviderStatus.READY);

            from = recorder.mark();
            const t1 = now();
            const { body } = await fx.flagd.api('POST', `/environments/${ENV}/flags/toggle-flag/disable`, { reason: 'after restart' });
            const ev = await recorder.changed('toggle-flag', from);
            timing('js', mode, 'change-after-restart', ev.at - t1);
            const got = await client.getBooleanDetails('toggle-flag', false, CTX);
            assert.deepEqual([got.value, got.variant, got.reason], [false, undefined, 'DISABLED']);
            assert.deepEqual(ev.flagsChanged, ['toggle-flag'], recorder.summary(from));
            // DISABLED above shows the change arrived; RPC answers also name its version.
            const ref = await fx.flagd.ofrep('toggle-flag', CTX, fx.key.secret);
            assert.equal(ref.metadata.flagSetVersion, body.version);
            assert.deepEqual(got.flagMetadata, expectedMetadata(mode, ref));
            if (mode === 'rpc') assert.equal(got.flagMetadata.flagSetVersion, body.version);
            else assert.equal(got.flagMetadata.flagSetVersion, undefined);
          }
        } finally {
          recorder.detach();
          await OpenFeature.getProvider(domain)?.onClose?.();
          // Whatever happened, flagd runs for the next test.
          if (fx.flagd.child === null) await fx.flagd.restart();
        }
      });
    }
  }
});

async function waitStatus(client, status) {
  const deadline = Date.now() + 20000;
  while (client.providerStatus !== status) {
    if (Date.now() > deadline) throw new Error(`provider status ${client.providerStatus}, not ${status}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
