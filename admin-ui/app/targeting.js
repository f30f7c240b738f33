// Reading and writing flagd JsonLogic targeting.
//
// The structured editors work on one model that covers the common shapes:
//   { rules: [{conds: [{attr, op, value, semOp?}], result}], otherwise: result }
// with result = {type: 'default'} | {type: 'variant', variant} | {type: 'split', buckets, bucketBy?}
// parse() turns targeting into that model (or {unsupported: reason}); serialize() turns
// it back. Both read and write the same JsonLogic as the raw editor, so any edit in one
// shows in the others.

export const OPS = [
  { op: '==', label: 'equals', kind: 'scalar' },
  { op: '!=', label: 'does not equal', kind: 'scalar' },
  { op: 'in', label: 'is one of', kind: 'list' },
  { op: 'starts_with', label: 'starts with', kind: 'string' },
  { op: 'ends_with', label: 'ends with', kind: 'string' },
  { op: 'sem_ver', label: 'version (sem_ver)', kind: 'semver' },
];
export const SEMVER_OPS = ['=', '!=', '>', '>=', '<', '<=', '^', '~'];
const OP_SET = new Set(OPS.map((o) => o.op));

const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const isScalar = (v) => ['string', 'number', 'boolean'].includes(typeof v);

function varName(v) {
  if (!isObj(v) || Object.keys(v).length !== 1 || !('var' in v)) return null;
  const a = v.var;
  if (typeof a === 'string') return a;
  if (Array.isArray(a) && a.length === 1 && typeof a[0] === 'string') return a[0];
  return null;
}

function singleOp(o) {
  if (!isObj(o)) return null;
  const keys = Object.keys(o);
  return keys.length === 1 ? keys[0] : null;
}

// ---- parse ------------------------------------------------------------------------

function parseCond(c) {
  const op = singleOp(c);
  if (!op) return null;
  const args = c[op];
  if (op === 'and') {
    if (!Array.isArray(args) || args.length === 0) return null;
    const out = [];
    for (const a of args) {
      const p = parseCond(a);
      if (!p || p.length !== 1) return null;
      out.push(p[0]);
    }
    return out;
  }
  if (!OP_SET.has(op) || !Array.isArray(args)) return null;
  const attr = varName(args[0]);
  if (attr === null) return null;
  if (op === 'sem_ver') {
    if (args.length !== 3 || !SEMVER_OPS.includes(args[1]) || typeof args[2] !== 'string') return null;
    return [{ attr, op, semOp: args[1], value: args[2] }];
  }
  if (args.length !== 2) return null;
  const v = args[1];
  if (op === 'in') {
    if (!Array.isArray(v) || !v.every(isScalar)) return null;
    return [{ attr, op, value: v.slice() }];
  }
  if (op === 'starts_with' || op === 'ends_with') {
    if (typeof v !== 'string') return null;
    return [{ attr, op, value: v }];
  }
  if (!isScalar(v)) return null;
  return [{ attr, op, value: v }];
}

function parseSplit(f) {
  if (!Array.isArray(f) || f.length === 0) return null;
  let bucketBy;
  let items = f;
  if (!Array.isArray(f[0])) {
    bucketBy = f[0];
    items = f.slice(1);
  }
  const buckets = [];
  for (const b of items) {
    if (!Array.isArray(b) || b.length < 1 || b.length > 2 || typeof b[0] !== 'string') return null;
    const w = b.length === 2 ? b[1] : 1;
    if (typeof w !== 'number' || !Number.isFinite(w) || w < 0) return null;
    buckets.push([b[0], w]);
  }
  if (!buckets.length) return null;
  const r = { type: 'split', buckets };
  if (bucketBy !== undefined) r.bucketBy = bucketBy;
  return r;
}

function parseResult(r) {
  if (r === null || r === undefined) return { type: 'default' };
  if (typeof r === 'string') return { type: 'variant', variant: r };
  if (isObj(r) && singleOp(r) === 'fractional') return parseSplit(r.fractional);
  return null;
}

/** targeting (JsonLogic) → model, or {unsupported: 'why'}. */
export function parse(targeting) {
  if (targeting === undefined || targeting === null || (isObj(targeting) && Object.keys(targeting).length === 0)) {
    return { rules: [], otherwise: { type: 'default' } };
  }
  if (!isObj(targeting)) return { unsupported: 'the targeting is not a JsonLogic object' };
  const op = singleOp(targeting);
  if (op === 'fractional') {
    const s = parseSplit(targeting.fractional);
    return s ? { rules: [], otherwise: s } : { unsupported: 'this fractional split has a shape the editor does not read' };
  }
  if (op === '$ref') return { unsupported: `it uses the shared evaluator "${targeting.$ref}"` };
  if (op !== 'if') return { unsupported: `its top-level operator is "${op || Object.keys(targeting).join(', ')}"` };
  const rules = [];
  let otherwise = { type: 'default' };
  let args = targeting.if;
  for (;;) {
    if (!Array.isArray(args) || args.length < 2) return { unsupported: 'an "if" with fewer than two arguments' };
    const pairs = Math.floor(args.length / 2);
    for (let i = 0; i < pairs; i += 1) {
      const conds = parseCond(args[2 * i]);
      if (!conds) return { unsupported: 'a condition uses operators or operands the rule editor does not read' };
      const result = parseResult(args[2 * i + 1]);
      if (!result) return { unsupported: 'a rule returns something other than a variant name, null or a fractional split' };
      rules.push({ conds, result });
    }
    if (args.length % 2 === 1) {
      const last = args[args.length - 1];
      if (isObj(last) && singleOp(last) === 'if') {
        args = last.if; // an else that is itself an if: read it as more rules
        continue;
      }
      const res = parseResult(last);
      if (!res) return { unsupported: 'the "else" branch is something other than a variant name, null or a fractional split' };
      otherwise = res;
    }
    break;
  }
  return { rules, otherwise };
}

// ---- serialize --------------------------------------------------------------------

function serCond(c) {
  const v = { var: c.attr };
  if (c.op === 'sem_ver') return { sem_ver: [v, c.semOp || '>=', c.value] };
  return { [c.op]: [v, c.value] };
}

function serResult(r) {
  if (!r || r.type === 'default') return null;
  if (r.type === 'variant') return r.variant;
  const items = r.buckets.map(([n, w]) => [n, w]);
  return { fractional: r.bucketBy !== undefined ? [r.bucketBy, ...items] : items };
}

/** model → targeting (undefined when the flag should have none). */
export function serialize(model) {
  if (!model.rules.length) {
    if (model.otherwise.type === 'split') return serResult(model.otherwise);
    return undefined;
  }
  const args = [];
  for (const r of model.rules) {
    const conds = r.conds.map(serCond);
    args.push(conds.length === 1 ? conds[0] : { and: conds });
    args.push(serResult(r.result));
  }
  if (model.otherwise.type !== 'default') args.push(serResult(model.otherwise));
  return { if: args };
}

// ---- splits and rollouts ------------------------------------------------------------

export function splitTotal(buckets) {
  return buckets.reduce((s, [, w]) => s + w, 0);
}

export function pct(w, total) {
  if (!total) return 0;
  return Math.round((w / total) * 10000) / 100;
}

/**
 * The split with `variant` at `percent`: the arithmetic of flagd's rollout endpoint
 * (`flagd_core::document::rollout`), checked by the UI tests against the vectors it
 * generates (`sdk/core/tests/vectors/rollout.json`). The other buckets share the rest in
 * proportion to their weights (largest remainder, ties to the earlier bucket; equally if
 * all are 0), a variant not in the split is added last, whole percentages keep a total of
 * 100 and hundredths one of 10,000. `null` when the variant is the split's only bucket and
 * the percentage is not 100 (the server refuses that too).
 */
export function rampSplit(split, variant, percent) {
  const p = Math.max(0, Math.min(100, Math.round(percent * 100) / 100));
  const total = Number.isInteger(p) ? 100 : 10000;
  const want = Math.round((p * total) / 100);
  const rest = total - want;
  const buckets = split.buckets.map(([n, w]) => [n, w]);
  let target = -1;
  buckets.forEach(([n], i) => { if (n === variant) target = i; });
  if (target < 0) {
    buckets.push([variant, 0]);
    target = buckets.length - 1;
  }
  const others = buckets.map((_, i) => i).filter((i) => i !== target);
  if (!others.length && rest > 0) return null;
  const oldRest = others.reduce((sum, i) => sum + buckets[i][1], 0);
  const shares = others.map((i) => {
    const [num, den] = oldRest === 0 ? [rest, others.length] : [rest * buckets[i][1], oldRest];
    return { i, share: Math.floor(num / den), rem: num % den };
  });
  let left = rest - shares.reduce((sum, x) => sum + x.share, 0);
  const order = shares.map((_, k) => k).sort((a, b) => shares[b].rem - shares[a].rem || a - b);
  for (const k of order) {
    if (left === 0) break;
    shares[k].share += 1;
    left -= 1;
  }
  buckets[target][1] = want;
  for (const { i, share } of shares) buckets[i][1] = share;
  const r = { type: 'split', buckets };
  if (split.bucketBy !== undefined) r.bucketBy = split.bucketBy;
  return r;
}

/** The split the server's rollout endpoint would ramp: a top-level fractional or the else of an if. */
export function rolloutSplit(targeting) {
  if (!isObj(targeting)) return null;
  const op = singleOp(targeting);
  if (op === 'fractional') return parseSplit(targeting.fractional);
  if (op === 'if' && Array.isArray(targeting.if) && targeting.if.length % 2 === 1) {
    const last = targeting.if[targeting.if.length - 1];
    if (isObj(last) && singleOp(last) === 'fractional') return parseSplit(last.fractional);
  }
  return null;
}

// ---- one-line summaries -------------------------------------------------------------

function fmtValue(v) {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

export function describeCond(c) {
  switch (c.op) {
    case 'in': {
      const list = c.value;
      const many = c.attr === 'targetingKey' ? list.length > 1 : list.length > 3;
      if (!many) return `${c.attr} in ${list.map(fmtValue).join(', ') || '(nothing)'}`;
      const noun = c.attr === 'targetingKey' ? 'keys' : 'values';
      return `${c.attr} in ${list.length} ${noun}`;
    }
    case '==':
      return `${c.attr} = ${fmtValue(c.value)}`;
    case '!=':
      return `${c.attr} ≠ ${fmtValue(c.value)}`;
    case 'sem_ver':
      return `${c.attr} ${c.semOp} ${c.value}`;
    default:
      return `${c.attr} ${c.op} ${fmtValue(c.value)}`;
  }
}

export function describeSplit(split, defaultVariant) {
  const total = splitTotal(split.buckets);
  let shown = split.buckets;
  if (shown.length === 2 && defaultVariant && shown.some(([n]) => n === defaultVariant)) {
    shown = shown.filter(([n]) => n !== defaultVariant);
  }
  return shown.map(([n, w]) => `${pct(w, total)}% ${n}`).join(' · ');
}

export function describeResult(r, defaultVariant) {
  if (!r || r.type === 'default') return defaultVariant != null ? `${defaultVariant} (default)` : "caller's default";
  if (r.type === 'variant') return r.variant;
  return describeSplit(r, defaultVariant);
}

function collectOps(node, set) {
  if (Array.isArray(node)) node.forEach((n) => collectOps(n, set));
  else if (isObj(node)) {
    for (const [k, v] of Object.entries(node)) {
      if (k !== 'var') set.add(k);
      collectOps(v, set);
    }
  }
  return set;
}

/** "25% on · country in NO, SE", "targetingKey in 3 keys → on", "off for everyone (default)". */
export function summarize(flag) {
  const def = flag && flag.defaultVariant;
  const t = flag ? flag.targeting : undefined;
  const m = parse(t);
  if (m.unsupported) {
    if (isObj(t) && typeof t.$ref === 'string') return `shared rule “${t.$ref}”`;
    const ops = [...collectOps(t, new Set())].slice(0, 4);
    return `custom rule (${ops.join(', ') || 'JsonLogic'})`;
  }
  if (!m.rules.length) {
    if (m.otherwise.type === 'split') return describeSplit(m.otherwise, def);
    return def != null ? `${def} for everyone (default)` : "caller's default for everyone";
  }
  const [first, ...more] = m.rules;
  let s = `${first.conds.map(describeCond).join(' and ')} → ${describeResult(first.result, def)}`;
  const plain = first.conds.length === 1 && (first.conds[0].op === 'in' || first.conds[0].op === '==');
  if (!plain) s = `if ${s}`;
  if (more.length) s += ` (+${more.length} more rule${more.length > 1 ? 's' : ''})`;
  if (m.otherwise.type !== 'default') s += ` · else ${describeResult(m.otherwise, def)}`;
  return s;
}

/** The JSON type of a flag's variants: 'boolean' | 'string' | 'number' | 'object'. */
export function variantType(variants) {
  const vals = Object.values(variants || {});
  if (!vals.length) return 'boolean';
  const v = vals[0];
  if (v === null) return 'object';
  return typeof v === 'object' ? 'object' : typeof v;
}

/** Parse a literal typed in a rule's value box: numbers and booleans stay typed. */
export function parseLiteral(s) {
  const t = s.trim();
  if (t === 'true') return true;
  if (t === 'false') return false;
  if (t !== '' && /^-?\d+(\.\d+)?$/.test(t)) return Number(t);
  return s;
}
