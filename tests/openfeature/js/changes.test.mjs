// Changes made through the REST API reach the official JavaScript provider: the kill
// switch (disable/enable) and a revert of the whole set, each seen as a
// ConfigurationChanged event naming the flag, then in the next evaluation.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { OpenFeature } from '@openfeature/server-sdk';
import { startFixture, timing, now, ENV, FLAGS } from './fixture.mjs';
import { MODES, makeProvider, connect, CTX, reset, expectedMetadata } from './providers.mjs';

const TOGGLES = 10;

/**
 * The event names exactly the flags the version changed. RPC: flagd's configuration_change
 * names them. In-process: flagd-core diffs the whole set itself (a hash of each flag with
 * the set's metadata merged in), and flagd's synced set metadata has no per-version field.
 */
function assertNames(ev, keys, summary) {
  assert.deepEqual([...ev.flagsChanged].sort(), [...keys].sort(), summary);
}
const REVERTS = 5;

describe('changes reach the provider', () => {
  let fx;
  before(async () => {
    fx = await startFixture();
  });
  after(async () => {
    await OpenFeature.close();
    await fx?.flagd.stop();
  });

  for (const mode of MODES) {
    describe(mode, () => {
      let client, recorder, domain;
      before(async () => {
        domain = `changes-${mode}`;
        // The provider's defaults (the RPC one caches STATIC answers): what users run.
        ({ client, recorder } = await connect(domain, makeProvider(mode, fx.flagd, fx.key.secret)));
      });
      beforeEach(async () => {
        await reset(fx, client, mode);
      });
      after(async () => {
        recorder?.detach();
        await OpenFeature.getProvider(domain)?.onClose?.();
      });

      it(`kill switch: ${TOGGLES} disable/enable toggles, each an event naming the flag, then the new answer`, async () => {
        const flag = 'toggle-flag';
        const on = await client.getBooleanDetails(flag, false, CTX);
        assert.deepEqual([on.value, on.variant, on.reason], [true, 'on', 'TARGETING_MATCH']);
        for (let i = 0; i < TOGGLES; i++) {
          for (const action of ['disable', 'enable']) {
            const from = recorder.mark();
            const t0 = now();
            const { body } = await fx.flagd.api('POST', `/environments/${ENV}/flags/${flag}/${action}`, { reason: `compat ${action} ${i}` });
            assert.equal(body.changed, true);
            const ev = await recorder.changed(flag, from);
            timing('js', mode, action === 'disable' ? 'kill-switch' : 'enable', ev.at - t0);
            assertNames(ev, [flag], recorder.summary(from));
            const got = await client.getBooleanDetails(flag, false, CTX);
            const ref = await fx.flagd.ofrep(flag, CTX, fx.key.secret);
            if (action === 'disable') {
              assert.deepEqual([got.value, got.variant, got.reason, got.errorCode], [false, undefined, 'DISABLED', undefined]);
              assert.equal(ref.reason, 'DISABLED');
            } else {
              assert.deepEqual([got.value, got.variant, got.reason, got.errorCode], [true, 'on', 'TARGETING_MATCH', undefined]);
              assert.equal(ref.reason, 'TARGETING_MATCH');
            }
            // The value and reason above show the change arrived. RPC answers also name
            // the version written; in-process ones carry no version (set + flag metadata).
            assert.equal(ref.metadata.flagSetVersion, body.version);
            assert.deepEqual(got.flagMetadata, expectedMetadata(mode, ref));
            if (mode === 'rpc') assert.equal(got.flagMetadata.flagSetVersion, body.version, 'flagSetVersion names the version written');
            else assert.equal(got.flagMetadata.flagSetVersion, undefined, 'no flagSetVersion in-process');
          }
        }
      });

      it('kill switch of a STATIC flag (cached by the RPC provider): the event evicts it', async () => {
        const flag = 'bool-static';
        for (let i = 0; i < 2; i++) {
          const d = await client.getBooleanDetails(flag, false);
          assert.equal(d.value, true);
          assert.ok(['STATIC', 'CACHED'].includes(d.reason), d.reason);
        }
        const from = recorder.mark();
        const t0 = now();
        await fx.flagd.api('POST', `/environments/${ENV}/flags/${flag}/disable`, { reason: 'compat static' });
        const ev = await recorder.changed(flag, from);
        timing('js', mode, 'kill-switch-static', ev.at - t0);
        assertNames(ev, [flag], recorder.summary(from));
        const off = await client.getBooleanDetails(flag, false);
        assert.deepEqual([off.value, off.reason], [false, 'DISABLED']);
        const from2 = recorder.mark();
        await fx.flagd.api('POST', `/environments/${ENV}/flags/${flag}/enable`, { reason: 'compat static' });
        assertNames(await recorder.changed(flag, from2), [flag], recorder.summary(from2));
        const back = await client.getBooleanDetails(flag, false);
        assert.deepEqual([back.value, back.variant, back.reason], [true, 'on', 'STATIC']);
      });

      it(`revert of the whole set to an earlier version (${REVERTS} rounds): event, then the old values`, async () => {
        for (let i = 0; i < REVERTS; i++) {
          const base = (await fx.flagd.api('GET', `/environments/${ENV}/flags`)).headers.get('x-flag-set-version');
          // One import changes three flags: one updated, one removed, one added.
          const changed = structuredClone(FLAGS);
          changed.flags['bool-static'].defaultVariant = 'off';
          delete changed.flags['ref-flag'];
          changed.flags['added-flag'] = { state: 'ENABLED', variants: { x: 'x-value', y: 'y-value' }, defaultVariant: 'y' };
          let from = recorder.mark();
          let t0 = now();
          const { body: put } = await fx.flagd.api('PUT', `/environments/${ENV}/flags`, changed);
          assert.deepEqual([...put.changedFlags].sort(), ['added-flag', 'bool-static', 'ref-flag']);
          let ev = await recorder.changed('bool-static', from);
          timing('js', mode, 'import', ev.at - t0);
          assertNames(ev, ['added-flag', 'bool-static', 'ref-flag'], recorder.summary(from));
          assert.equal((await client.getBooleanDetails('bool-static', true)).value, false);
          assert.equal((await client.getStringDetails('added-flag', 'none')).value, 'y-value');
          assert.equal((await client.getStringDetails('ref-flag', 'none', CTX)).errorCode, 'FLAG_NOT_FOUND');

          from = recorder.mark();
          t0 = now();
          const { body: rev } = await fx.flagd.api('POST', `/environments/${ENV}/revert`, { version: Number(base), reason: `compat revert ${i}` });
          assert.equal(rev.changed, true);
          ev = await recorder.changed('bool-static', from);
          timing('js', mode, 'revert', ev.at - t0);
          assertNames(ev, ['added-flag', 'bool-static', 'ref-flag'], recorder.summary(from));
          const s = await client.getBooleanDetails('bool-static', false);
          assert.deepEqual([s.value, s.variant, s.reason], [true, 'on', 'STATIC']);
          const r = await client.getStringDetails('ref-flag', 'none', CTX);
          assert.deepEqual([r.value, r.variant, r.reason], ['staff-view', 'staff', 'TARGETING_MATCH']);
          const a = await client.getStringDetails('added-flag', 'none');
          assert.deepEqual([a.value, a.errorCode], ['none', 'FLAG_NOT_FOUND']);
          // The old values above show the revert arrived; RPC answers name its version too.
          const sRef = await fx.flagd.ofrep('bool-static', {}, fx.key.secret);
          assert.equal(sRef.metadata.flagSetVersion, rev.version);
          assert.deepEqual(s.flagMetadata, expectedMetadata(mode, sRef));
          if (mode === 'rpc') assert.equal(s.flagMetadata.flagSetVersion, rev.version);
          else assert.equal(s.flagMetadata.flagSetVersion, undefined);
        }
      });
    });
  }
});
