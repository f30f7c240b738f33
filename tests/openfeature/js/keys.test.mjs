// SDK keys and selectors with the official JavaScript provider: an unknown key, no key or
// another environment's selector is refused (the provider never becomes ready); a key
// revoked while the provider streams closes its stream (Stale, then Error).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { OpenFeature, ProviderStatus } from '@openfeature/server-sdk';
import { startFixture, timing, ENV } from './fixture.mjs';
import { MODES, makeProvider, connect, CTX } from './providers.mjs';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const CHILD = fileURLToPath(new URL('./child.mjs', import.meta.url));

function runChild(args) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CHILD, JSON.stringify(args)], { timeout: 30000 }, (err, stdout, stderr) => {
      const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
      if (!line) return reject(new Error(`child.mjs: ${err?.message}\n${stdout}\n${stderr}`));
      const r = JSON.parse(line.slice(7));
      if (r.failure) return reject(new Error(`child.mjs: ${r.failure}\n${stderr}`));
      resolve(r);
    });
  });
}

const runRefused = (mode, port, secret, options) => runChild({ scenario: 'refused', mode, port, secret, options });

describe('SDK keys', () => {
  let fx;
  before(async () => {
    fx = await startFixture();
  });
  after(async () => {
    await OpenFeature.close();
    await fx?.flagd.stop();
  });

  /**
   * A provider flagd refuses, in a process of its own (refused-child.mjs says why):
   * setProviderAndWait must reject and the client be in `status`; an evaluation errors.
   */
  async function refused(mode, secret, options = {}, status = [ProviderStatus.ERROR]) {
    const r = await runRefused(mode, fx.flagd.grpcPort, secret, options);
    console.log(`js ${mode} ${JSON.stringify(options)}: ${r.ready ? 'READY' : `refused after ${r.ms.toFixed(0)} ms: ${r.error}`}`);
    assert.equal(r.ready, false, 'setProviderAndWait rejects');
    assert.ok(status.includes(r.status), `status ${r.status}`);
    assert.deepEqual([r.evaluation.value, r.evaluation.reason], [false, 'ERROR']);
    assert.ok(r.evaluation.errorCode, 'an error code');
    return r;
  }

  for (const mode of MODES) {
    describe(mode, () => {
      it('an unknown SDK key: the provider does not become ready', async () => {
        const r = await refused(mode, 'fdsdk_' + 'x'.repeat(43));
        assert.match(r.error, /UNAUTHENTICATED/);
      });

      it('an unknown SDK key with UNAUTHENTICATED fatal: the provider is FATAL', async () => {
        const r = await refused(mode, 'fdsdk_' + 'y'.repeat(43), { fatalStatusCodes: ['UNAUTHENTICATED'] }, [ProviderStatus.FATAL]);
        assert.equal(r.evaluation.errorCode, 'PROVIDER_FATAL');
      });

      it('no SDK key at all: refused', async () => {
        const r = await refused(mode, undefined);
        assert.match(r.error, /UNAUTHENTICATED/);
      });

      it("a selector naming another environment than the key's: refused", async () => {
        if (mode === 'in-process') {
          const r = await refused(mode, fx.key.secret, { selector: 'staging' });
          assert.match(r.error, /PERMISSION_DENIED/);
          return;
        }
        // The RPC provider sends its selector with each evaluation, not on its event
        // stream: it becomes ready, and every evaluation is refused.
        const r = await runRefused(mode, fx.flagd.grpcPort, fx.key.secret, { selector: 'staging' });
        console.log(`js rpc selector staging: ready=${r.ready}, evaluation ${JSON.stringify(r.evaluation)}`);
        assert.equal(r.ready, true);
        assert.deepEqual([r.evaluation.value, r.evaluation.reason, r.evaluation.errorCode], [false, 'ERROR', 'GENERAL']);
        assert.match(r.evaluation.errorMessage, /selector asks for environment "staging"/);
      });

      for (const selector of ['production', 'environment=production', 'flagSetId=production']) {
        it(`selector "${selector}" names the key's environment: served`, async () => {
          const domain = `selector-${mode}-${selector}`;
          const { client } = await connect(domain, makeProvider(mode, fx.flagd, fx.key.secret, { selector }));
          try {
            const d = await client.getBooleanDetails('bool-targeted', false, CTX);
            assert.deepEqual([d.value, d.variant, d.reason], [true, 'on', 'TARGETING_MATCH']);
          } finally {
            await OpenFeature.getProvider(domain).onClose();
          }
        });
      }

      it('a key revoked while the provider streams: the stream is closed (Stale, then Error), 3 times', async () => {
        for (let round = 0; round < 3; round++) {
          const key = await fx.flagd.createSdkKey();
          const r = await runChild({
            scenario: 'revoke', mode, port: fx.flagd.grpcPort, secret: key.secret, options: { retryGracePeriod: 1 },
            base: fx.flagd.base, adminToken: fx.flagd.adminToken, keyId: key.id, keyName: `sdk-${ENV}-${key.id}`,
          });
          assert.equal(r.ready, true);
          assert.deepEqual([r.evaluation.value, r.evaluation.variant, r.evaluation.reason], [true, 'on', 'TARGETING_MATCH']);
          timing('js', mode, 'revoke', r.revokeMs);
          console.log(`js ${mode} revoked: ${r.afterRevoke.map((e) => `${e.type}(${e.message})`).join(' ')}`);
          assert.ok(r.afterRevoke.some((e) => e.type === 'Error'));
          assert.ok(!r.afterRevoke.some((e) => e.type === 'Ready'), 'never Ready again');
          assert.equal(r.statusAfterRevoke, ProviderStatus.ERROR);
          assert.equal(r.goneFromFleet, true);
          if (mode === 'rpc') {
            // Every evaluation is refused now (UNAUTHENTICATED: GENERAL for the provider).
            assert.deepEqual([r.evaluationAfterRevoke.value, r.evaluationAfterRevoke.reason], [false, 'ERROR']);
          } else {
            // In-process keeps evaluating the last set it received (its offline behaviour).
            assert.equal(r.evaluationAfterRevoke.value, true);
          }
        }
      });
    });
  }
});
