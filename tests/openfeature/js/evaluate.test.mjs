// Typed evaluations through the official JavaScript flagd provider, in-process and RPC,
// for every flag of the fixture and every context, compared with OFREP's answers.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { OpenFeature } from '@openfeature/server-sdk';
import { startFixture, FLAGS, CONTEXTS, flagType, codeDefault } from './fixture.mjs';
import { MODES, makeProvider, connect, expectedMetadata } from './providers.mjs';

const GETTER = { boolean: 'getBooleanDetails', string: 'getStringDetails', number: 'getNumberDetails', object: 'getObjectDetails' };
const ALL_CONTEXTS = [...CONTEXTS, {}];
const FRACTIONAL = ['string-fractional', 'string-fractional-default-bucketing'];

// Where the provider's own evaluator is known to bucket differently from flagd's (OFREP).
// Each is checked to differ in value and variant only, and printed as DEVIATION.
const KNOWN_DEVIATIONS = [
  {
    mode: 'in-process',
    applies: (flag, ctx) => FRACTIONAL.includes(flag) && /[^\x00-\x7f]/.test(ctx.targetingKey ?? ''),
    why: 'flagd-core (JS) hashes a bucketing value with imurmurhash over UTF-16 code units cut to 8 bits, not its UTF-8 bytes',
  },
  {
    mode: 'in-process',
    applies: (flag, ctx) => flag === 'string-fractional' && ctx.targetingKey === undefined,
    why: 'flagd-core (JS) makes {"cat": [flagKey, {"var": "targetingKey"}]} "…null" for a missing var; flagd (JsonLogic) makes it ""',
  },
];

/** Sorted keys, so that objects compare whatever their key order. */
const canon = (v) =>
  Array.isArray(v) ? v.map(canon) : v && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])])) : v;

describe('typed evaluations agree with OFREP', () => {
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
      let client;
      before(async () => {
        // The cache off: every answer is the server's (the cache has its own test).
        ({ client } = await connect(`eval-${mode}`, makeProvider(mode, fx.flagd, fx.key.secret, { cache: 'disabled' })));
      });

      it('every flag × context: value, variant, reason and metadata as OFREP', async () => {
        const problems = [];
        let compared = 0;
        let deviations = 0;
        for (const flag of Object.keys(FLAGS.flags)) {
          const type = flagType(flag);
          const dflt = codeDefault(type);
          for (const ctx of ALL_CONTEXTS) {
            const got = await client[GETTER[type]](flag, dflt, ctx);
            const ref = await fx.flagd.ofrep(flag, ctx, fx.key.secret);
            assert.equal(ref.status, 200, `OFREP ${flag}: ${JSON.stringify(ref)}`);
            compared++;
            assert.equal(ref.metadata.flagSetVersion, fx.version, `OFREP ${flag}: flagSetVersion`);
            // In-process: the set's and the flag's metadata, no flagSetVersion (see the README).
            const want = { value: ref.value ?? dflt, variant: ref.variant, reason: ref.reason, errorCode: undefined, flagMetadata: expectedMetadata(mode, ref) };
            const have = { value: got.value, variant: got.variant, reason: got.reason, errorCode: got.errorCode, flagMetadata: got.flagMetadata };
            if (JSON.stringify(canon(have)) === JSON.stringify(canon(want))) continue;
            const known = KNOWN_DEVIATIONS.find((d) => d.mode === mode && d.applies(flag, ctx));
            const where = `${flag} ${JSON.stringify(ctx)}`;
            if (known) {
              deviations++;
              console.log(`DEVIATION js ${mode} ${where}: provider ${have.variant}, OFREP ${want.variant} (${known.why})`);
              // Only the bucket differs: the rest is flagd's answer.
              assert.equal(have.reason, want.reason, where);
              assert.deepEqual(canon(have.flagMetadata), canon(want.flagMetadata), where);
              assert.ok(Object.hasOwn(FLAGS.flags[flag].variants, have.variant), where);
              assert.deepEqual(have.value, FLAGS.flags[flag].variants[have.variant], where);
              continue;
            }
            problems.push(`${where}\n    provider ${JSON.stringify(canon(have))}\n    OFREP    ${JSON.stringify(canon(want))}`);
          }
        }
        console.log(`js ${mode}: ${compared} evaluations compared with OFREP, ${deviations} known deviations`);
        assert.deepEqual(problems, [], `${problems.length} evaluations differ from OFREP:\n${problems.join('\n')}`);
      });

      it('the reasons cover STATIC, TARGETING_MATCH, DEFAULT and DISABLED', async () => {
        const ctx = CONTEXTS[0];
        const cases = [
          ['bool-static', 'boolean', { value: true, variant: 'on', reason: 'STATIC' }],
          ['bool-targeted', 'boolean', { value: true, variant: 'on', reason: 'TARGETING_MATCH' }],
          // Targeting returned null: the default variant, reason DEFAULT.
          ['float-flag', 'number', { value: 0.25, variant: 'low', reason: 'DEFAULT' }, { targetingKey: 'x' }],
          // No default variant: the caller's default, no variant.
          ['no-default-flag', 'string', { value: 'code-default', variant: undefined, reason: 'DEFAULT' }],
          ['disabled-flag', 'boolean', { value: false, variant: undefined, reason: 'DISABLED' }],
          ['object-flag', 'object', { value: FLAGS.flags['object-flag'].variants.premium, variant: 'premium', reason: 'TARGETING_MATCH' }],
          ['ref-flag', 'string', { value: 'staff-view', variant: 'staff', reason: 'TARGETING_MATCH' }],
          ['semver-flag', 'boolean', { value: true, variant: 'new', reason: 'TARGETING_MATCH' }],
          ['starts-with-flag', 'string', { value: 'admin-console', variant: 'admin', reason: 'TARGETING_MATCH' }],
          ['int-flag', 'number', { value: 250, variant: 'medium', reason: 'TARGETING_MATCH' }],
        ];
        for (const [flag, type, want, c] of cases) {
          const got = await client[GETTER[type]](flag, codeDefault(type), c ?? ctx);
          assert.deepEqual({ value: got.value, variant: got.variant, reason: got.reason }, want, flag);
          assert.equal(got.errorCode, undefined, flag);
        }
      });

      it(`flag metadata: the flag set, the flag${mode === 'rpc' ? ' and flagSetVersion' : ' (no flagSetVersion in-process)'}`, async () => {
        const merged = { ...FLAGS.metadata, ...FLAGS.flags['bool-targeted'].metadata };
        const got = await client.getBooleanDetails('bool-targeted', false, CONTEXTS[0]);
        assert.deepEqual(canon(got.flagMetadata), canon(mode === 'rpc' ? { ...merged, flagSetVersion: fx.version } : merged));
        // A flag without metadata of its own: the set's metadata alone.
        const plain = await client.getBooleanDetails('bool-static', false);
        assert.deepEqual(canon(plain.flagMetadata), canon(mode === 'rpc' ? { ...FLAGS.metadata, flagSetVersion: fx.version } : FLAGS.metadata));
      });

      it('an unknown flag is FLAG_NOT_FOUND with the caller default, for every type', async () => {
        for (const type of Object.keys(GETTER)) {
          const got = await client[GETTER[type]]('no-such-flag', codeDefault(type), CONTEXTS[0]);
          assert.equal(got.errorCode, 'FLAG_NOT_FOUND', type);
          assert.equal(got.reason, 'ERROR', type);
          assert.deepEqual(got.value, codeDefault(type), type);
          assert.equal(got.variant, undefined, type);
        }
        const ref = await fx.flagd.ofrep('no-such-flag', CONTEXTS[0], fx.key.secret);
        assert.equal(ref.errorCode, 'FLAG_NOT_FOUND');
      });

      it('the wrong type is TYPE_MISMATCH with the caller default', async () => {
        const cases = [
          ['string-fractional', 'boolean'],
          ['bool-targeted', 'string'],
          ['object-flag', 'number'],
          ['int-flag', 'object'],
          ['float-flag', 'string'],
        ];
        for (const [flag, type] of cases) {
          const got = await client[GETTER[type]](flag, codeDefault(type), CONTEXTS[0]);
          assert.equal(got.errorCode, 'TYPE_MISMATCH', `${flag} as ${type}: ${JSON.stringify(got)}`);
          assert.equal(got.reason, 'ERROR', flag);
          assert.deepEqual(got.value, codeDefault(type), flag);
        }
      });
    });
  }

  it('rpc: the provider caches STATIC answers (reason CACHED), never targeted ones', async () => {
    const { client } = await connect('eval-rpc-cache', makeProvider('rpc', fx.flagd, fx.key.secret, { cache: 'lru' }));
    const first = await client.getBooleanDetails('bool-static', false);
    assert.deepEqual([first.value, first.variant, first.reason], [true, 'on', 'STATIC']);
    const second = await client.getBooleanDetails('bool-static', false);
    assert.deepEqual([second.value, second.variant, second.reason], [true, 'on', 'CACHED']);
    for (let i = 0; i < 2; i++) {
      const t = await client.getBooleanDetails('bool-targeted', false, CONTEXTS[0]);
      assert.equal(t.reason, 'TARGETING_MATCH');
    }
  });
});
