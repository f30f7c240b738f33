// Structured editors: variants, percentage splits (rollout slider) and targeting rules.
// Each editor owns its DOM and mutates the model it was given, then calls onChange();
// the flag page writes the model back to the definition (and the raw JSON editor).
import { h, clear, field, icon, nextId, fmtInt } from './dom.js';
import { OPS, SEMVER_OPS, splitTotal, pct, rampSplit, parseLiteral, describeSplit } from './targeting.js';

// ---- variants ---------------------------------------------------------------------

const TYPE_LABEL = { boolean: 'Boolean', string: 'String', number: 'Number', object: 'JSON object' };

export function parseVariantValue(type, raw) {
  if (type === 'boolean') return { ok: true, value: raw === 'true' };
  if (type === 'number') {
    const n = Number(raw);
    return raw.trim() !== '' && Number.isFinite(n) ? { ok: true, value: n } : { ok: false, error: 'a number' };
  }
  if (type === 'string') return { ok: true, value: raw };
  try {
    const v = JSON.parse(raw);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? { ok: true, value: v } : { ok: false, error: 'a JSON object' };
  } catch (e) {
    return { ok: false, error: `valid JSON (${e.message})` };
  }
}

function rawOf(type, v) {
  if (type === 'object') return JSON.stringify(v);
  return String(v);
}

/**
 * Variants table. state = {variants, defaultVariant, type}; onChange(state) after each
 * valid edit. Returns {el, set(state)}.
 */
export function variantsEditor(state, onChange, { readOnly = false, allowType = false } = {}) {
  const el = h('div.variants-editor', { dataset: { group: nextId('vdef') } });
  let rows = [];
  let type = state.type;
  let def = state.defaultVariant;

  function load(s) {
    type = s.type;
    def = s.defaultVariant;
    rows = Object.entries(s.variants || {}).map(([name, v]) => ({ name, raw: rawOf(type, v), error: null }));
    render();
  }

  function emit() {
    const variants = {};
    let ok = true;
    for (const r of rows) {
      const p = parseVariantValue(type, r.raw);
      r.error = p.ok ? null : `Must be ${p.error}`;
      if (!p.ok || !r.name) ok = false;
      else variants[r.name] = p.value;
    }
    const names = rows.map((r) => r.name);
    if (new Set(names).size !== names.length) ok = false;
    renderErrors();
    if (ok) onChange({ variants, defaultVariant: def, type });
  }

  let errEls = [];
  function renderErrors() {
    rows.forEach((r, i) => {
      if (!errEls[i]) return;
      errEls[i].textContent = r.error || (!r.name ? 'A variant needs a name' : '');
    });
  }

  function render() {
    clear(el);
    errEls = [];
    if (allowType) {
      const typeSel = h('select.input', { disabled: readOnly || undefined },
        Object.entries(TYPE_LABEL).map(([k, l]) => h('option', { value: k, text: l })));
      typeSel.value = type;
      typeSel.addEventListener('change', () => {
        type = typeSel.value;
        if (type === 'boolean') rows = [{ name: 'on', raw: 'true' }, { name: 'off', raw: 'false' }];
        else if (type === 'string') rows = [{ name: 'control', raw: 'control' }, { name: 'treatment', raw: 'treatment' }];
        else if (type === 'number') rows = [{ name: 'low', raw: '0' }, { name: 'high', raw: '1' }];
        else rows = [{ name: 'a', raw: '{}' }, { name: 'b', raw: '{}' }];
        def = rows[rows.length - 1].name;
        render();
        emit();
      });
      el.append(field('Variant type', typeSel));
    }
    const list = h('div.vrows', { role: 'group', aria: { label: 'Variants' } });
    rows.forEach((r, i) => {
      const nameIn = h('input.input.mono', { value: r.name, aria: { label: `Variant ${i + 1} name` }, readonly: readOnly || undefined, spellcheck: 'false' });
      let valIn;
      if (type === 'boolean') {
        valIn = h('select.input', { aria: { label: `Variant ${r.name || i + 1} value` }, disabled: readOnly || undefined },
          h('option', { value: 'true', text: 'true' }), h('option', { value: 'false', text: 'false' }));
        valIn.value = r.raw === 'true' ? 'true' : 'false';
      } else if (type === 'object') {
        valIn = h('textarea.input.mono', { rows: 1, aria: { label: `Variant ${r.name || i + 1} value (JSON)` }, readonly: readOnly || undefined, spellcheck: 'false' });
        valIn.value = r.raw;
      } else {
        valIn = h('input.input.mono', { value: r.raw, inputmode: type === 'number' ? 'decimal' : undefined, aria: { label: `Variant ${r.name || i + 1} value` }, readonly: readOnly || undefined, spellcheck: 'false' });
      }
      const defIn = h('input', { type: 'radio', name: el.dataset.group, aria: { label: `Make ${r.name || `variant ${i + 1}`} the default variant` }, disabled: readOnly || undefined });
      defIn.checked = r.name === def;
      const rm = readOnly ? null : h('button.icon-btn', { type: 'button', aria: { label: `Remove variant ${r.name || i + 1}` }, disabled: rows.length <= 1 || undefined }, icon('close'));
      const err = h('div.row-error', { aria: { live: 'polite' } });
      errEls[i] = err;
      nameIn.addEventListener('input', () => {
        const old = r.name;
        r.name = nameIn.value.trim();
        if (def === old) def = r.name;
        defIn.setAttribute('aria-label', `Make ${r.name} the default variant`);
        emit();
      });
      valIn.addEventListener(type === 'boolean' ? 'change' : 'input', () => {
        r.raw = valIn.value;
        emit();
      });
      defIn.addEventListener('change', () => {
        if (defIn.checked) {
          def = r.name;
          emit();
        }
      });
      if (rm) {
        rm.addEventListener('click', () => {
          rows.splice(i, 1);
          if (def === r.name) def = rows[0] ? rows[0].name : null;
          render();
          emit();
        });
      }
      list.append(h('div.vrow',
        h('label.vrow-default', { title: 'Default variant' }, defIn, h('span', { text: 'default' })),
        nameIn, h('span.vrow-eq', { text: '=' }), valIn, rm, err));
    });
    el.append(list);
    const noDefId = nextId('nodef');
    const noDef = h('input', { type: 'radio', id: noDefId, name: el.dataset.group, disabled: readOnly || undefined });
    noDef.checked = def === null || def === undefined;
    noDef.addEventListener('change', () => {
      if (noDef.checked) {
        def = null;
        emit();
      }
    });
    el.append(h('div.vrow-foot',
      readOnly ? null : h('button.btn.btn-sm', {
        type: 'button',
        onclick: () => {
          rows.push({ name: `variant-${rows.length + 1}`, raw: type === 'boolean' ? 'false' : type === 'number' ? '0' : type === 'object' ? '{}' : '' });
          render();
          emit();
        },
      }, icon('plus'), h('span', { text: 'Add variant' })),
      h('label.check.muted', { for: noDefId }, noDef, h('span', { text: 'No default (callers get their code default)' }))));
    renderErrors();
  }

  load(state);
  return { el, set: load };
}

// ---- percentage split -------------------------------------------------------------

let usersCount = 10000;

/**
 * A fractional split editor: a stacked bar, a ramp slider for one variant with cohort
 * sizes, and per-bucket weights. split is mutated; onChange() after each edit.
 * opts.actions(slot, info) lets the page add a "Roll out now" button.
 */
export function splitEditor(split, variantNames, defaultVariant, onChange, opts = {}) {
  const { readOnly = false, compact = false, label = 'Percentage rollout' } = opts;
  const el = h(`div.split-editor${compact ? '.compact' : ''}`);
  const nonDefault = split.buckets.find(([n]) => n !== defaultVariant);
  let rampVar = (nonDefault || split.buckets[0] || [variantNames[0]])[0];

  const bar = h('div.split-bar', { aria: { hidden: 'true' } });
  const sliderId = nextId('slider');
  const slider = h('input.slider', { id: sliderId, type: 'range', min: '0', max: '100', step: '1', disabled: readOnly || undefined });
  const num = h('input.input.pct-input', { type: 'number', min: '0', max: '100', step: '0.01', inputmode: 'decimal', disabled: readOnly || undefined });
  const rampSel = h('select.input', { disabled: readOnly || undefined });
  const cohort = h('div.cohort', { aria: { live: 'polite' } });
  const users = h('input.input.users-input', { type: 'number', min: '1', step: '1', value: String(usersCount) });
  const weights = h('div.weights');
  const actions = h('div.split-actions');

  function currentPct() {
    const total = splitTotal(split.buckets);
    const b = split.buckets.find(([n]) => n === rampVar);
    return b ? pct(b[1], total) : 0;
  }

  function paint() {
    const total = splitTotal(split.buckets);
    const p = currentPct();
    slider.value = String(Math.round(p));
    slider.setAttribute('aria-valuetext', `${p}% of users get ${rampVar}`);
    if (document.activeElement !== num) num.value = String(p);
    clear(bar);
    split.buckets.forEach(([n, w], i) => {
      const seg = h(`div.seg.seg-${i % 6}${n === defaultVariant ? '.seg-default' : ''}`, { vars: { '--w': `${total ? (w / total) * 100 : 0}%` }, title: `${n}: ${pct(w, total)}%` });
      if (total && w / total > 0.08) seg.append(h('span', { text: `${n} ${pct(w, total)}%` }));
      bar.append(seg);
    });
    const u = Math.max(0, Math.floor(Number(users.value) || 0));
    const approx = Math.round((u * p) / 100);
    clear(cohort).append(h('strong', { text: `${p}% → about ${fmtInt(approx)} of ${fmtInt(u)} users` }), h('span.muted', { text: ` get ${rampVar}` }));
    clear(weights);
    split.buckets.forEach(([n, w], i) => {
      const wi = h('input.input.weight-input', { type: 'number', min: '0', step: '1', value: String(w), disabled: readOnly || undefined, aria: { label: `Weight of ${n}` } });
      wi.addEventListener('change', () => {
        const v = Math.max(0, Math.round(Number(wi.value) || 0));
        split.buckets[i][1] = v;
        onChange();
        paint();
      });
      weights.append(h('div.weight-row', h(`span.swatch.seg-${i % 6}`), h('code', { text: n }), wi, h('span.muted', { text: `${pct(w, total)}%` })));
    });
    if (opts.actions) opts.actions(clear(actions), { variant: rampVar, percent: p });
  }

  function ramp(p) {
    const r = rampSplit(split, rampVar, p);
    // The only bucket can be at 100% alone (the server refuses anything else).
    if (!r) return;
    split.buckets = r.buckets;
    onChange();
    paint();
  }

  for (const n of variantNames) rampSel.append(h('option', { value: n, text: n }));
  rampSel.value = rampVar;
  rampSel.addEventListener('change', () => {
    rampVar = rampSel.value;
    paint();
  });
  slider.addEventListener('input', () => ramp(Number(slider.value)));
  num.addEventListener('change', () => ramp(Number(num.value)));
  users.addEventListener('input', () => {
    usersCount = Math.max(1, Math.floor(Number(users.value) || 1));
    paint();
  });

  const sliderLabel = h('label.slider-label', { for: sliderId }, `${label}: share of users on `, h('code', { text: rampVar }));
  rampSel.addEventListener('change', () => {
    sliderLabel.querySelector('code').textContent = rampVar;
  });
  el.append(
    bar,
    h('div.ramp-row',
      h('div.ramp-main', sliderLabel, slider),
      h('div.ramp-side',
        h('div.field.field-inline', h('label', { text: 'Percent', for: num.id || (num.id = nextId('pct')) }), num, h('span.muted', { text: '%' })),
        h('div.field.field-inline', h('label', { text: 'of variant', for: rampSel.id || (rampSel.id = nextId('rv')) }), rampSel))),
    h('div.cohort-row', cohort, h('div.field.field-inline', h('label', { for: users.id || (users.id = nextId('users')), text: 'Expected users' }), users)),
    h('details.weights-details', h('summary', { text: 'Bucket weights' }), weights,
      split.bucketBy !== undefined ? h('p.muted', { text: `Bucketed by ${JSON.stringify(split.bucketBy)} (kept as is).` }) : null),
    actions,
  );
  paint();
  return { el, refresh: paint, describe: () => describeSplit(split, defaultVariant) };
}

// ---- rules (allow-list and attribute rules) ----------------------------------------

const ATTR_SUGGESTIONS = ['targetingKey', 'email', 'country', 'plan', 'version', 'appVersion', 'tenant', '$flagd.flagKey', '$flagd.timestamp'];

function resultKey(r) {
  if (!r || r.type === 'default') return '__default';
  if (r.type === 'split') return '__split';
  return `v:${r.variant}`;
}

function resultSelect(r, variantNames, defaultVariant, label, readOnly, { allowVariant = true } = {}) {
  const sel = h('select.input', { aria: { label }, disabled: readOnly || undefined });
  sel.append(h('option', { value: '__default', text: defaultVariant != null ? `default variant (${defaultVariant})` : "caller's default" }));
  if (allowVariant) for (const n of variantNames) sel.append(h('option', { value: `v:${n}`, text: n }));
  sel.append(h('option', { value: '__split', text: 'percentage split…' }));
  if (r.type === 'variant' && !variantNames.includes(r.variant)) sel.append(h('option', { value: `v:${r.variant}`, text: `${r.variant} (not a variant)` }));
  sel.value = resultKey(r);
  return sel;
}

function newSplit(variantNames, defaultVariant) {
  const on = variantNames.find((n) => n !== defaultVariant) || variantNames[0];
  const off = defaultVariant && variantNames.includes(defaultVariant) ? defaultVariant : variantNames.find((n) => n !== on);
  return off ? { type: 'split', buckets: [[on, 10], [off, 90]] } : { type: 'split', buckets: [[on, 100]] };
}

function applyResult(sel, variantNames, defaultVariant) {
  const v = sel.value;
  if (v === '__default') return { type: 'default' };
  if (v === '__split') return newSplit(variantNames, defaultVariant);
  return { type: 'variant', variant: v.slice(2) };
}

function listText(values) {
  return values.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join('\n');
}

function parseList(text) {
  return text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean).map((s) => parseLiteral(s));
}

/**
 * The rules editor: an ordered list of "if … then serve …" rules and what everyone else
 * gets. model is mutated; onChange() after each edit. opts.otherwiseActions is passed to
 * the split editor of the "everyone else" split (for "Roll out now").
 */
export function rulesEditor(model, flag, onChange, opts = {}) {
  const { readOnly = false } = opts;
  const el = h('div.rules-editor');
  const variantNames = Object.keys(flag.variants || {});
  const def = flag.defaultVariant;
  const listId = nextId('attrs');
  const datalist = h('datalist', { id: listId }, ATTR_SUGGESTIONS.map((a) => h('option', { value: a })));

  function render() {
    clear(el);
    el.append(datalist);
    const rulesWrap = h('ol.rules');
    model.rules.forEach((rule, i) => rulesWrap.append(ruleCard(rule, i)));
    if (model.rules.length) el.append(rulesWrap);
    else el.append(h('p.muted.rules-empty', { text: 'No rules: everyone gets what is set below.' }));
    if (!readOnly) {
      el.append(h('div.rule-add',
        h('button.btn.btn-sm', { type: 'button', onclick: () => addRule('allow') }, icon('plus'), h('span', { text: 'Allow-list of keys' })),
        h('button.btn.btn-sm', { type: 'button', onclick: () => addRule('attr') }, icon('plus'), h('span', { text: 'Attribute rule' }))));
    }
    el.append(otherwiseCard());
  }

  function addRule(kind) {
    const on = variantNames.find((n) => n !== def) || variantNames[0];
    const cond = kind === 'allow'
      ? { attr: 'targetingKey', op: 'in', value: [] }
      : { attr: 'email', op: 'ends_with', value: '@example.com' };
    model.rules.push({ conds: [cond], result: on ? { type: 'variant', variant: on } : { type: 'default' } });
    onChange();
    render();
    const cards = el.querySelectorAll('.rule-card');
    const last = cards[cards.length - 1];
    const first = last && last.querySelector('textarea, input');
    if (first) first.focus();
  }

  function ruleCard(rule, i) {
    const n = i + 1;
    const isAllow = rule.conds.length === 1 && rule.conds[0].attr === 'targetingKey' && rule.conds[0].op === 'in';
    const card = h('li.rule-card');
    const head = h('div.rule-head',
      h('span.rule-num', { text: `Rule ${n}` }),
      h('span.rule-kind', { text: isAllow ? 'Allow-list' : 'Attribute rule' }),
      h('span.spacer'),
      readOnly ? null : h('button.icon-btn', { type: 'button', aria: { label: `Move rule ${n} up` }, disabled: i === 0 || undefined, onclick: () => move(i, -1) }, h('span', { text: '↑' })),
      readOnly ? null : h('button.icon-btn', { type: 'button', aria: { label: `Move rule ${n} down` }, disabled: i === model.rules.length - 1 || undefined, onclick: () => move(i, 1) }, h('span', { text: '↓' })),
      readOnly ? null : h('button.icon-btn', {
        type: 'button', aria: { label: `Remove rule ${n}` },
        onclick: () => {
          model.rules.splice(i, 1);
          if (!model.rules.length && model.otherwise.type === 'variant') model.otherwise = { type: 'default' };
          onChange();
          render();
        },
      }, icon('close')));
    card.append(head);
    if (isAllow) {
      const c = rule.conds[0];
      const ta = h('textarea.input.mono', { rows: 3, readonly: readOnly || undefined, placeholder: 'user-1\nuser-2', spellcheck: 'false' });
      ta.value = listText(c.value);
      const cnt = h('span.muted', { text: `${c.value.length} key${c.value.length === 1 ? '' : 's'}` });
      ta.addEventListener('input', () => {
        c.value = parseList(ta.value).map(String);
        cnt.textContent = `${c.value.length} key${c.value.length === 1 ? '' : 's'}`;
        onChange();
      });
      card.append(h('div.field', h('label', { for: ta.id || (ta.id = nextId('keys')), text: `Rule ${n}: targeting keys (one per line or comma-separated)` }), ta, cnt));
    } else {
      const conds = h('div.conds');
      rule.conds.forEach((c, ci) => conds.append(condRow(rule, c, ci, n)));
      card.append(conds);
      if (!readOnly) {
        card.append(h('button.btn.btn-sm.btn-ghost', {
          type: 'button',
          onclick: () => {
            rule.conds.push({ attr: '', op: '==', value: '' });
            onChange();
            render();
          },
        }, icon('plus'), h('span', { text: 'AND condition' })));
      }
    }
    const sel = resultSelect(rule.result, variantNames, def, `Rule ${n}: serve`, readOnly);
    const splitSlot = h('div.rule-split');
    const paintSplit = () => {
      clear(splitSlot);
      if (rule.result.type === 'split') {
        splitSlot.append(splitEditor(rule.result, variantNames, def, onChange, { readOnly, compact: true, label: `Rule ${n} split` }).el);
      }
    };
    sel.addEventListener('change', () => {
      rule.result = applyResult(sel, variantNames, def);
      onChange();
      paintSplit();
    });
    card.append(h('div.serve-row', h('span.serve-arrow', { text: '→ serve' }), sel), splitSlot);
    paintSplit();
    return card;
  }

  function move(i, d) {
    const j = i + d;
    [model.rules[i], model.rules[j]] = [model.rules[j], model.rules[i]];
    onChange();
    render();
  }

  function condRow(rule, c, ci, n) {
    const label = `Rule ${n} condition ${ci + 1}`;
    const attr = h('input.input.mono.attr-input', { value: c.attr, list: listId, placeholder: 'attribute', aria: { label: `${label}: attribute` }, readonly: readOnly || undefined, spellcheck: 'false' });
    const op = h('select.input', { aria: { label: `${label}: operator` }, disabled: readOnly || undefined }, OPS.map((o) => h('option', { value: o.op, text: o.label })));
    op.value = c.op;
    const semOp = h('select.input.semop', { aria: { label: `${label}: version comparison` }, disabled: readOnly || undefined }, SEMVER_OPS.map((s) => h('option', { value: s, text: s })));
    semOp.value = c.semOp || '>=';
    const val = h('input.input.mono', { aria: { label: `${label}: value${c.op === 'in' ? 's, comma-separated' : ''}` }, readonly: readOnly || undefined, spellcheck: 'false' });
    const setVal = () => {
      val.value = c.op === 'in' ? (Array.isArray(c.value) ? c.value.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join(', ') : '') : (typeof c.value === 'string' ? c.value : JSON.stringify(c.value));
      val.placeholder = c.op === 'in' ? 'NO, SE, DK' : c.op === 'sem_ver' ? '2.1.0' : 'value';
      semOp.hidden = c.op !== 'sem_ver';
    };
    setVal();
    attr.addEventListener('input', () => {
      c.attr = attr.value.trim();
      onChange();
    });
    op.addEventListener('change', () => {
      const prev = c.op;
      c.op = op.value;
      if (c.op === 'in' && prev !== 'in') c.value = c.value === '' || c.value === undefined ? [] : [c.value];
      else if (c.op !== 'in' && prev === 'in') c.value = Array.isArray(c.value) && c.value.length ? c.value[0] : '';
      if (c.op === 'sem_ver') {
        c.semOp = c.semOp || '>=';
        c.value = String(c.value ?? '');
      } else delete c.semOp;
      if (c.op === 'starts_with' || c.op === 'ends_with') c.value = String(c.value ?? '');
      setVal();
      val.setAttribute('aria-label', `${label}: value${c.op === 'in' ? 's, comma-separated' : ''}`);
      onChange();
    });
    semOp.addEventListener('change', () => {
      c.semOp = semOp.value;
      onChange();
    });
    val.addEventListener('input', () => {
      if (c.op === 'in') c.value = parseList(val.value);
      else if (c.op === '==' || c.op === '!=') c.value = parseLiteral(val.value);
      else c.value = val.value;
      onChange();
    });
    const rm = readOnly || rule.conds.length <= 1 ? null : h('button.icon-btn', {
      type: 'button', aria: { label: `Remove ${label}` },
      onclick: () => {
        rule.conds.splice(ci, 1);
        onChange();
        render();
      },
    }, icon('close'));
    return h('div.cond-row', h('span.cond-if', { text: ci === 0 ? 'if' : 'and' }), attr, op, semOp, val, rm);
  }

  function otherwiseCard() {
    const card = h('div.otherwise-card');
    const sel = resultSelect(model.otherwise, variantNames, def, model.rules.length ? 'Everyone else gets' : 'Everyone gets', readOnly, { allowVariant: model.rules.length > 0 });
    const slot = h('div');
    const paint = () => {
      clear(slot);
      if (model.otherwise.type === 'split') {
        slot.append(splitEditor(model.otherwise, variantNames, def, onChange, { readOnly: opts.splitReadOnly ?? readOnly, actions: opts.otherwiseActions }).el);
      }
    };
    sel.addEventListener('change', () => {
      model.otherwise = applyResult(sel, variantNames, def);
      onChange();
      paint();
    });
    card.append(h('div.serve-row', h('span.serve-arrow', { text: model.rules.length ? 'Everyone else →' : 'Everyone →' }), sel), slot);
    paint();
    return card;
  }

  render();
  return { el, render };
}
