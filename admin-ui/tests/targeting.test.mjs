// The JsonLogic model behind the structured editors (no browser needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parse, serialize, summarize, rampSplit, rolloutSplit } from '../app/targeting.js';

const shapes = {
  allowList: { if: [{ in: [{ var: 'targetingKey' }, ['k1', 'k2', 'k3']] }, 'on', 'off'] },
  attrRules: {
    if: [
      { and: [{ ends_with: [{ var: 'email' }, '@example.com'] }, { '!=': [{ var: 'plan' }, 'free'] }] }, 'on',
      { sem_ver: [{ var: 'appVersion' }, '^', '2.1.0'] }, { fractional: [['on', 25], ['off', 75]] },
      { fractional: [{ var: 'email' }, ['on', 5], ['off', 95]] },
    ],
  },
  fractional: { fractional: [['on', 5], ['off', 95]] },
  startsWith: { if: [{ starts_with: [{ var: 'tenant' }, 'acme-'] }, 'on'] },
};

test('parse → serialize keeps every common shape exactly', () => {
  for (const [name, t] of Object.entries(shapes)) {
    const m = parse(t);
    assert.ok(!m.unsupported, `${name}: ${m.unsupported}`);
    assert.deepEqual(serialize(m), t, name);
  }
  assert.equal(serialize(parse(undefined)), undefined);
});

test('unknown shapes are reported, not mangled', () => {
  assert.match(parse({ $ref: 'beta-users' }).unsupported, /shared evaluator/);
  assert.ok(parse({ if: [{ '>': [{ var: 'age' }, 18] }, 'on', 'off'] }).unsupported);
  assert.ok(parse({ cat: ['a', 'b'] }).unsupported);
  assert.equal(summarize({ defaultVariant: 'off', targeting: { $ref: 'beta-users' } }), 'shared rule “beta-users”');
});

test('one-line summaries', () => {
  const f = (targeting, defaultVariant = 'off') => summarize({ defaultVariant, targeting });
  assert.equal(f(undefined), 'off for everyone (default)');
  assert.equal(f(shapes.fractional), '5% on');
  assert.equal(f(shapes.allowList), 'targetingKey in 3 keys → on · else off');
  assert.equal(f({ if: [{ ends_with: [{ var: 'email' }, '@example.com'] }, 'on'] }), 'if email ends_with @example.com → on');
  assert.equal(f({ if: [{ in: [{ var: 'country' }, ['NO', 'SE']] }, { fractional: [['on', 25], ['off', 75]] }] }), 'country in NO, SE → 25% on');
  assert.equal(f(shapes.attrRules), 'if email ends_with @example.com and plan ≠ free → on (+1 more rule) · else 5% on');
});

test('ramping a split keeps bucket order and shares the rest by weight', () => {
  assert.deepEqual(rampSplit({ type: 'split', buckets: [['on', 5], ['off', 95]] }, 'on', 25).buckets, [['on', 25], ['off', 75]]);
  assert.deepEqual(rampSplit({ type: 'split', buckets: [['a', 10], ['b', 30], ['c', 60]] }, 'a', 50).buckets, [['a', 50], ['b', 17], ['c', 33]]);
  assert.deepEqual(rampSplit({ type: 'split', buckets: [['on', 5], ['off', 95]] }, 'on', 12.5).buckets, [['on', 1250], ['off', 8750]]);
  assert.deepEqual(rolloutSplit(shapes.attrRules).buckets, [['on', 5], ['off', 95]]);
  assert.equal(rolloutSplit(shapes.allowList), null);
});

// One rollout arithmetic: the vectors come from the server's implementation
// (sdk/core/tests/rollout_vectors.rs), so the editor ramps a split exactly as
// `POST …/rollout` would.
test('ramping a split gives what the server gives, for every committed vector', () => {
  const file = new URL('../../sdk/core/tests/vectors/rollout.json', import.meta.url);
  const { vectors } = JSON.parse(readFileSync(file, 'utf8'));
  assert.ok(vectors.length >= 200);
  for (const v of vectors) {
    const got = rampSplit({ type: 'split', buckets: v.buckets }, v.variant, v.percent);
    const label = JSON.stringify(v);
    if (v.result.error) assert.equal(got, null, label);
    else assert.deepEqual(got.buckets, v.result.buckets, label);
  }
});
