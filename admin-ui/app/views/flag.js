// One flag: state, variants, targeting (structured + raw JSON), "who gets what"
// preview, save with If-Match, and this flag's history with restore.
import { api, envPath, enc, qs } from '../api.js';
import { h, clear, field, icon, timeEl, nextId, clone, deepEqual, debounce, pretty } from '../dom.js';
import { errorBox, reasonDialog, toast, spinner, kindBadge, envBadge, jsonDiff, infoDialog, emptyState } from '../ui.js';
import { parse, serialize, summarize, variantType, rolloutSplit, pct, splitTotal } from '../targeting.js';
import { variantsEditor, rulesEditor } from '../editors.js';
import { planCard } from './plan.js';
import { isProtected, protectedBadge, proposeDialog, proposeInstead, breakGlassNote, requestsHref } from '../approvals.js';

const SAMPLE_CONTEXTS = [
  '{"targetingKey": "user-1"}',
  '{"targetingKey": "user-2", "country": "NO"}',
  '{"targetingKey": "user-3", "email": "ann@example.com"}',
  '{"targetingKey": "user-4", "country": "US", "version": "2.1.0"}',
].join('\n');

let savedContexts = SAMPLE_CONTEXTS;

// ---- locating a validation path in pretty-printed JSON --------------------------

function pathSegments(path, key) {
  let p = path || '';
  const prefix = `flags.${key}`;
  if (p === prefix) return [];
  if (p.startsWith(`${prefix}.`) || p.startsWith(`${prefix}[`)) p = p.slice(prefix.length).replace(/^\./, '');
  else return null;
  const segs = [];
  const re = /([^.[\]]+)|\[(\d+)\]/g;
  let m;
  while ((m = re.exec(p))) segs.push(m[2] !== undefined ? Number(m[2]) : m[1]);
  return segs;
}

/** Offsets [start, end) of the node at segs in JSON.stringify(value, null, 2). */
export function locate(value, segs) {
  let out = '';
  let found = null;
  const walk = (v, indent, path) => {
    const here = path.length === segs.length && path.every((s, i) => s === segs[i]);
    const start = out.length;
    if (Array.isArray(v)) {
      if (!v.length) out += '[]';
      else {
        out += '[\n';
        v.forEach((x, i) => {
          out += `${indent}  `;
          walk(x, `${indent}  `, [...path, i]);
          out += i < v.length - 1 ? ',\n' : '\n';
        });
        out += `${indent}]`;
      }
    } else if (v !== null && typeof v === 'object') {
      const ks = Object.keys(v).filter((k) => v[k] !== undefined);
      if (!ks.length) out += '{}';
      else {
        out += '{\n';
        ks.forEach((k, i) => {
          out += `${indent}  ${JSON.stringify(k)}: `;
          walk(v[k], `${indent}  `, [...path, k]);
          out += i < ks.length - 1 ? ',\n' : '\n';
        });
        out += `${indent}}`;
      }
    } else {
      out += JSON.stringify(v);
    }
    if (here && !found) found = [start, out.length];
  };
  walk(value, '', []);
  return found;
}

export function mount(root, ctx) {
  const key = ctx.route.key;
  ctx.setTitle(key);
  const can = ctx.can;
  let saved = null; // the definition as last loaded
  let draft = null; // the edited definition
  let baseVersion = null; // the environment version `saved` was read at
  let model = null; // the structured targeting model (or {unsupported})
  let rawError = null;
  let destroyed = false;
  let inflight = null; // a write of ours in progress (SSE waits for it)
  let pendingRemote = null;

  const head = h('div.page-head');
  const banner = h('div.banner-slot', { aria: { live: 'polite' } });
  const errSlot = h('div');
  const body = h('div.flag-layout', spinner());
  root.append(
    h('a.back', { href: `#/${enc(ctx.env)}/flags` }, icon('back'), h('span', { text: 'Flags' })),
    head, banner, errSlot, body);

  // ---- elements that live across re-renders -------------------------------------
  const saveBtn = h('button.btn.btn-primary', { type: 'button', text: 'Save changes', onclick: save });
  const discardBtn = h('button.btn', { type: 'button', text: 'Discard', onclick: () => reset(saved) });
  const deleteBtn = h('button.btn.btn-ghost.btn-delete', { type: 'button', text: 'Delete flag', onclick: remove });
  const dirtyNote = h('span.dirty-note', { aria: { live: 'polite' } });
  const stateSwitch = h('button.switch.switch-lg', { type: 'button', role: 'switch', onclick: toggleState });
  const summaryLine = h('p.targeting-summary');
  const structuredSlot = h('div');
  const variantsSlot = h('div');
  const rawTa = h('textarea.input.mono.raw-editor', { rows: 16, spellcheck: 'false', autocomplete: 'off', aria: { label: 'Raw JSON of the flag definition', describedby: 'raw-problems' } });
  const rawSyntax = h('div.raw-syntax', { aria: { live: 'polite' } });
  const problems = h('div.problems', { id: 'raw-problems', aria: { live: 'polite' } });
  const ctxTa = h('textarea.input.mono.ctx-input', { rows: 5, wrap: 'off', spellcheck: 'false', aria: { label: 'Sample contexts, one JSON object per line' } });
  ctxTa.value = savedContexts;
  const previewOut = h('div.preview-out', { aria: { live: 'polite' } });
  const historyList = h('div.flag-history', spinner());
  const plan = planCard(ctx, key, () => load());

  rawTa.readOnly = !can.editFlags;

  // ---- loading --------------------------------------------------------------------
  async function load({ keepDraft = false } = {}) {
    try {
      const def = await api('GET', envPath(ctx.env, `/flags/${enc(key)}`));
      if (destroyed) return;
      const ver = def._version;
      saved = def;
      baseVersion = Number.isFinite(ver) ? ver : baseVersion;
      ctx.setEnvVersion(baseVersion);
      clear(errSlot);
      if (!keepDraft || !draft) reset(saved);
      else renderHead();
      loadHistory();
      plan.load();
    } catch (err) {
      if (destroyed) return;
      if (err.status === 404) {
        clear(head);
        clear(body).append(emptyState(`No flag “${key}” in ${ctx.envInfo.name || ctx.env}`, 'It may have been deleted, or it was never created here.',
          h('a.btn', { href: `#/${enc(ctx.env)}/flags`, text: 'Back to flags' })));
        return;
      }
      clear(errSlot).append(errorBox(err, { title: 'Could not load the flag' }));
    }
  }

  function reset(def) {
    draft = clone(def);
    clear(banner);
    rawError = null;
    renderAll();
  }

  const dirty = () => !!(saved && draft && (!deepEqual(draft, saved) || rawError));

  // ---- rendering ------------------------------------------------------------------
  function renderHead() {
    const on = (saved.state || 'ENABLED') === 'ENABLED';
    stateSwitch.setAttribute('aria-checked', String(on));
    stateSwitch.setAttribute('aria-label', `${key} ${on ? 'enabled' : 'disabled'} in ${ctx.env}`);
    stateSwitch.disabled = !can.toggle;
    stateSwitch.title = can.toggle ? (on ? 'Disable (kill switch)' : 'Enable') : 'Your role cannot turn flags on or off';
    clear(stateSwitch).append(h('span.switch-knob'));
    clear(head).append(
      h('div.page-title',
        h('h1.mono', { text: key }),
        envBadge(ctx.envInfo),
        protectedBadge(ctx.envInfo),
        h(`span.badge.${on ? 'badge-on' : 'badge-off'}`, h('span.dot'), on ? 'Enabled' : 'Disabled'),
        h('span.count', { text: `v${baseVersion}` })),
      h('div.page-actions',
        h('label.switch-wrap', stateSwitch, h('span', { text: on ? 'On' : 'Off' })),
        dirtyNote,
        can.editFlags ? discardBtn : null,
        can.editFlags ? saveBtn : h('span.muted.readonly-note', { text: 'Read-only: your role cannot edit flags' }),
        can.editFlags ? deleteBtn : null));
    syncDirty();
  }

  function syncDirty() {
    const d = dirty();
    // In a protected environment an edit is proposed, not saved (a change request).
    saveBtn.textContent = isProtected(ctx.envInfo) ? 'Propose change' : 'Save changes';
    dirtyNote.textContent = rawError ? 'Raw JSON has a syntax error' : d ? 'Unsaved changes' : '';
    dirtyNote.classList.toggle('is-dirty', d);
    saveBtn.disabled = !d || !!rawError;
    discardBtn.disabled = !d;
  }

  function renderAll() {
    const focused = document.activeElement === ctxTa;
    renderHead();
    clear(body);
    const variantsCard = h('section.card', { aria: { labelledby: 'sec-variants' } },
      h('div.card-head', h('h2', { id: 'sec-variants', text: 'Variants' }), h('span.muted', { text: 'the default is served when targeting returns nothing' })),
      variantsSlot);
    const targetingCard = h('section.card', { aria: { labelledby: 'sec-targeting' } },
      h('div.card-head', h('h2', { id: 'sec-targeting', text: 'Targeting' })),
      summaryLine, structuredSlot);
    const rawCard = h('section.card', { aria: { labelledby: 'sec-raw' } },
      h('div.card-head', h('h2', { id: 'sec-raw', text: 'Raw JSON' }), h('span.muted', { text: 'the whole definition, flagd format' })),
      rawTa, rawSyntax, problems);
    const previewCard = h('section.card.preview-card', { aria: { labelledby: 'sec-preview' } },
      h('div.card-head', h('h2', { id: 'sec-preview', text: 'Who gets what' }), h('span.muted', { text: 'unsaved edits, flagd’s own evaluator' })),
      h('div.field', h('label', { for: ctxTa.id || (ctxTa.id = nextId('ctx')), text: 'Sample contexts (one JSON object per line)' }), ctxTa),
      previewOut);
    const historyCard = h('section.card', { aria: { labelledby: 'sec-fhist' } },
      h('div.card-head', h('h2', { id: 'sec-fhist', text: 'History of this flag' })),
      historyList);
    const off = (saved.state || 'ENABLED') !== 'ENABLED';
    body.append(h('div.flag-main',
      off ? h('div.alert.alert-warn.disabled-note', h('div.alert-icon', icon('alert')), h('div.alert-body',
        h('strong', { text: `Disabled in ${ctx.envInfo.name || ctx.env}.` }),
        h('span', { text: ' Every SDK returns the default value in the calling code; the targeting below is kept but not evaluated.' }))) : null,
      variantsCard, targetingCard, rawCard), h('div.flag-side', plan.card, previewCard, historyCard));
    renderVariants();
    renderStructured();
    renderRaw();
    runPreview();
    if (focused) ctxTa.focus();
  }

  function renderVariants() {
    const ve = variantsEditor({ variants: draft.variants || {}, defaultVariant: draft.defaultVariant ?? null, type: variantType(draft.variants) }, (s) => {
      draft.variants = s.variants;
      if (s.defaultVariant === null) draft.defaultVariant = null;
      else draft.defaultVariant = s.defaultVariant;
      renderStructured();
      changed({ from: 'variants' });
    }, { readOnly: !can.editFlags });
    clear(variantsSlot).append(ve.el);
  }

  function renderStructured() {
    model = parse(draft.targeting);
    summaryLine.textContent = summarize(draft);
    clear(structuredSlot);
    if (model.unsupported) {
      structuredSlot.append(h('div.alert.alert-warn',
        h('div.alert-icon', icon('alert')),
        h('div.alert-body',
          h('strong', { text: 'This targeting has a shape the structured editors do not read' }),
          h('p', { text: `Because ${model.unsupported}. It is shown and edited as JSON below; nothing is lost.` }),
          h('button.btn.btn-sm', { type: 'button', text: 'Edit in the raw JSON editor', onclick: () => { rawTa.focus(); rawTa.scrollIntoView({ block: 'center' }); } }))));
      return;
    }
    // Editors may change everything; responders and CI may only ramp the split.
    const re = rulesEditor(model, draft, () => {
      const t = serialize(model);
      if (t === undefined) delete draft.targeting;
      else draft.targeting = t;
      summaryLine.textContent = summarize(draft);
      changed({ from: 'structured' });
    }, { readOnly: !can.editFlags, splitReadOnly: !can.editFlags && !can.rollout, otherwiseActions: rolloutActions });
    structuredSlot.append(re.el);
  }

  function rolloutActions(slot, { variant, percent }) {
    if (!can.rollout || !saved) return;
    const savedSplit = rolloutSplit(saved.targeting);
    if (!savedSplit) {
      slot.append(h('p.muted.small', { text: 'Save first: “Roll out now” ramps the saved split.' }));
      return;
    }
    const sb = savedSplit.buckets.find(([n]) => n === variant);
    const savedPct = sb ? pct(sb[1], splitTotal(savedSplit.buckets)) : 0;
    const strip = (d) => JSON.stringify(d, (k, v) => (k === 'fractional' ? 'F' : v));
    const onlySplit = strip(draft) === strip(saved);
    const prot = isProtected(ctx.envInfo);
    const btn = h('button.btn.btn-primary', {
      type: 'button',
      disabled: percent === savedPct || !onlySplit || undefined,
      onclick: () => rollout(variant, percent),
    }, h('span', { text: prot ? `Propose ${percent}%` : `Roll out ${percent}% now` }));
    const live = prot ? `${savedPct}% → ${percent}% ${variant} once approved (a change request).` : `Live now: ${savedPct}% → ${percent}% ${variant} (POST /rollout).`;
    slot.append(btn, h('span.muted.small', {
      text: !onlySplit ? 'Save or discard your other edits to roll out from here.' : percent === savedPct ? `Live: ${savedPct}% ${variant}. Move the slider to ramp.` : live,
    }));
  }

  function renderRaw() {
    if (document.activeElement !== rawTa) rawTa.value = pretty(draft);
    clear(rawSyntax);
  }

  // Called after any edit of the draft.
  const changed = ({ from }) => {
    if (from !== 'raw') renderRaw();
    if (from === 'structured' || from === 'variants') {
      // keep the raw editor in step even though it is not focused
      rawTa.value = pretty(draft);
    }
    syncDirty();
    schedulePreview();
  };

  rawTa.addEventListener('input', () => {
    clear(rawSyntax);
    let v;
    try {
      v = JSON.parse(rawTa.value);
    } catch (e) {
      rawError = e.message;
      rawSyntax.append(h('p.form-error', { text: `JSON syntax error: ${e.message}` }));
      syncDirty();
      return;
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      rawError = 'not an object';
      rawSyntax.append(h('p.form-error', { text: 'The definition must be a JSON object.' }));
      syncDirty();
      return;
    }
    rawError = null;
    draft = v;
    renderVariants();
    renderStructured();
    changed({ from: 'raw' });
  });
  rawTa.addEventListener('blur', () => {
    if (!rawError) rawTa.value = pretty(draft);
  });

  // ---- validation problems + preview -------------------------------------------
  function showProblems(details) {
    clear(problems);
    if (!details || !details.length) return;
    problems.append(h('div.problems-head', icon('alert'), h('strong', { text: `${details.length} problem${details.length > 1 ? 's' : ''} (flagd validation)` })),
      h('ul.problem-list', details.map((d) => {
        const segs = pathSegments(d.path, key);
        const btn = h('button.linklike.path', {
          type: 'button', text: d.path || '(definition)', title: 'Show in the raw JSON',
          onclick: () => {
            const at = segs ? locate(draft, segs) : null;
            rawTa.focus();
            if (at) {
              rawTa.setSelectionRange(at[0], at[1]);
              const line = rawTa.value.slice(0, at[0]).split('\n').length;
              rawTa.scrollTop = Math.max(0, (line - 3) * 18);
            }
          },
        });
        return h('li', btn, h('span', { text: d.message }));
      })));
  }

  let previewSeq = 0;
  const schedulePreview = debounce(() => runPreview(), 350);
  ctxTa.addEventListener('input', () => {
    savedContexts = ctxTa.value;
    schedulePreview();
  });

  async function runPreview() {
    if (!draft || rawError) return;
    const lines = ctxTa.value.split('\n').map((l) => l.trim()).filter(Boolean);
    const contexts = [];
    const lineErrors = [];
    lines.forEach((l, i) => {
      try {
        const c = JSON.parse(l);
        if (c === null || typeof c !== 'object' || Array.isArray(c)) throw new Error('not a JSON object');
        contexts.push(c);
      } catch (e) {
        lineErrors.push(`Line ${i + 1}: ${e.message}`);
      }
    });
    const seq = ++previewSeq;
    try {
      const r = await api('POST', envPath(ctx.env, '/preview'), { body: { key, flag: draft, contexts } });
      if (destroyed || seq !== previewSeq) return;
      showProblems([]);
      renderPreview(contexts, r.results || [], lineErrors);
    } catch (err) {
      if (destroyed || seq !== previewSeq) return;
      if (err.status === 422) {
        showProblems(err.details.length ? err.details : [{ path: '', message: err.message }]);
        clear(previewOut).append(h('p.muted', { text: 'Fix the problems listed under Raw JSON to see the preview.' }));
      } else {
        clear(previewOut).append(errorBox(err, { title: 'Preview failed' }));
      }
    }
  }

  function renderPreview(contexts, results, lineErrors) {
    clear(previewOut);
    for (const e of lineErrors) previewOut.append(h('p.form-error', { text: e }));
    if (!contexts.length) {
      previewOut.append(h('p.muted', { text: 'Type a context, e.g. {"targetingKey": "user-1", "country": "NO"}' }));
      return;
    }
    const rows = contexts.map((c, i) => {
      const r = results[i] || {};
      const label = c.targetingKey !== undefined ? String(c.targetingKey) : JSON.stringify(c);
      const extra = Object.entries(c).filter(([k]) => k !== 'targetingKey').map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
      return h('tr',
        h('td', { dataset: { label: 'Context' } }, h('code', { text: label }), extra ? h('div.cell-sub', { text: extra }) : null),
        h('td', { dataset: { label: 'Result' } },
          r.variant != null ? h('span.vchip', { text: r.variant }) : null,
          h('span.mono.pv-value', { text: r.value === undefined ? '—' : JSON.stringify(r.value) })),
        h('td', { dataset: { label: 'Reason' } }, h(`span.reason.reason-${String(r.reason || '').toLowerCase()}`, { text: r.reason || '—' }),
          r.errorCode ? h('div.cell-sub.err-text', { text: `${r.errorCode}${r.errorMessage ? `: ${r.errorMessage}` : ''}` }) : null));
    });
    previewOut.append(h('table.table.table-compact.preview-table', { aria: { label: 'Preview results' } },
      h('thead', h('tr', ['Context', 'Result', 'Reason'].map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', rows)));
  }

  // ---- writes ---------------------------------------------------------------------
  async function track(p) {
    inflight = p;
    try {
      return await p;
    } finally {
      inflight = null;
      if (pendingRemote) {
        const e = pendingRemote;
        pendingRemote = null;
        onRemote(e);
      }
    }
  }

  function conflictBanner(err) {
    clear(banner).append(errorBox(err, {
      title: 'Someone else changed this environment',
      actions: [h('button.btn.btn-sm', { type: 'button', text: 'Reload the flag (discards your edits)', onclick: () => load() })],
    }));
  }

  /**
   * Proposes `def` (null: delete the flag) as a change request and opens it. With
   * `discard`, the draft goes back to the saved definition first: the request holds it.
   */
  async function propose(def, { title, lead, discard = false }) {
    const req = await proposeDialog(ctx, {
      change: { flags: { [key]: def } },
      title,
      heading: `Propose: ${title}`,
      lead,
      body: h('details.dialog-diff', { open: true }, h('summary', { text: `What changes (from v${baseVersion})` }), jsonDiff(saved, def, 'Changes proposed')),
    });
    if (!req || destroyed) return null;
    if (discard) reset(saved);
    ctx.requestsChanged();
    ctx.navigate(requestsHref(ctx.env, req.id));
    return req;
  }

  /** The error actions of a direct write that a protected environment refused. */
  const orPropose = (def, opts) => (err, close) => proposeInstead(err, close, async () => {
    await ctx.refreshEnvs({ rerender: false });
    if (!destroyed) propose(def, opts);
  });

  async function save() {
    if (!dirty() || rawError) return;
    const saveProposal = { title: `Update ${key}`, discard: true };
    if (isProtected(ctx.envInfo)) {
      await propose(clone(draft), saveProposal);
      return;
    }
    const prod = ctx.envInfo.production;
    await reasonDialog({
      title: `Save ${key} in ${ctx.envInfo.name || ctx.env}?`,
      lead: `Based on v${baseVersion}; if the environment moved since, the save is refused (If-Match).`,
      env: ctx.envInfo,
      required: !!prod,
      confirmLabel: prod ? 'Save to Production' : 'Save',
      body: h('details.dialog-diff', { open: true }, h('summary', { text: 'What changes' }), jsonDiff(saved, draft, 'Changes to be saved')),
      errorActions: orPropose(clone(draft), saveProposal),
      submit: (reason) => track((async () => {
        try {
          const r = await api('PUT', envPath(ctx.env, `/flags/${enc(key)}`), { body: draft, ifMatch: baseVersion, reason });
          toast(r.changed ? `Saved ${key} (v${r.version})` : 'Nothing to save: same as the current definition', 'success');
          await load();
          return r;
        } catch (err) {
          if (err.status === 422) showProblems(err.details);
          if (err.code === 'conflict') conflictBanner(err);
          throw err;
        }
      })()),
    });
  }

  async function remove() {
    const envName = ctx.envInfo.name || ctx.env;
    if (isProtected(ctx.envInfo)) {
      await propose(null, { title: `Delete ${key}`, lead: `Once approved, ${key} is deleted from ${envName}: SDKs then answer its callers with their code’s default.` });
      return;
    }
    const prod = ctx.envInfo.production;
    await reasonDialog({
      title: `Delete ${key} in ${envName}?`,
      lead: `SDKs stop knowing ${key} at once: every caller gets the default value in its code. The flag can be restored from its history.`,
      env: ctx.envInfo,
      danger: true,
      required: !!prod,
      confirmLabel: `Delete from ${envName}`,
      errorActions: orPropose(null, { title: `Delete ${key}` }),
      submit: (reason) => track((async () => {
        try {
          const r = await api('DELETE', envPath(ctx.env, `/flags/${enc(key)}`), { ifMatch: baseVersion, reason });
          toast(`Deleted ${key} from ${envName} (v${r.version})`, 'success');
          saved = null;
          draft = null;
          ctx.navigate(`#/${enc(ctx.env)}/flags`);
          return r;
        } catch (err) {
          if (err.code === 'conflict') conflictBanner(err);
          throw err;
        }
      })()),
    });
  }

  async function toggleState() {
    const on = (saved.state || 'ENABLED') === 'ENABLED';
    const action = on ? 'disable' : 'enable';
    const envName = ctx.envInfo.name || ctx.env;
    // Enabling is not break-glass: in a protected environment it is proposed.
    const enabled = { ...clone(saved), state: 'ENABLED' };
    const enableProposal = { title: `Enable ${key}`, lead: `Once approved, ${key}’s variants and targeting take effect again.` };
    if (!on && isProtected(ctx.envInfo)) {
      await propose(enabled, enableProposal);
      return;
    }
    await reasonDialog({
      title: `${on ? 'Disable' : 'Enable'} ${key} in ${envName}?`,
      lead: on ? 'The kill switch: callers get the default value in their code, at once.' : 'Variants and targeting take effect again, at once.',
      env: ctx.envInfo,
      danger: on,
      body: on ? breakGlassNote(ctx.envInfo) : null,
      confirmLabel: `${on ? 'Disable' : 'Enable'} in ${envName}`,
      errorActions: on ? null : orPropose(enabled, enableProposal),
      submit: (reason) => track((async () => {
        try {
          const r = await api('POST', envPath(ctx.env, `/flags/${enc(key)}/${action}`), { body: { reason }, ifMatch: baseVersion });
          const wasDirty = dirty();
          const keep = draft;
          await load({ keepDraft: wasDirty });
          if (wasDirty && keep) {
            keep.state = saved.state;
            draft = keep;
            renderHead();
            rawTa.value = pretty(draft);
          }
          toast(`${key} ${action}d (v${r.version})${on && isProtected(ctx.envInfo) ? ': a review is open' : ''}`, 'success');
          return r;
        } catch (err) {
          if (err.code === 'conflict') conflictBanner(err);
          throw err;
        }
      })()),
    });
  }

  async function rollout(variant, percent) {
    const envName = ctx.envInfo.name || ctx.env;
    // The slider already wrote the new split into the draft (and nothing else differs).
    const rampProposal = { title: `Roll out ${variant} to ${percent}% for ${key}`, discard: true };
    if (isProtected(ctx.envInfo)) {
      await propose(clone(draft), rampProposal);
      return;
    }
    await reasonDialog({
      title: `Roll out ${variant} to ${percent}% in ${envName}?`,
      lead: 'Users already on stay on when you ramp up (the bucketing is stable).',
      env: ctx.envInfo,
      required: !!ctx.envInfo.production,
      confirmLabel: `Roll out ${percent}%`,
      errorActions: orPropose(clone(draft), rampProposal),
      submit: (reason) => track((async () => {
        try {
          const r = await api('POST', envPath(ctx.env, `/flags/${enc(key)}/rollout`), { body: { variant, percent, ...(reason ? { reason } : {}) }, ifMatch: baseVersion });
          toast(`${key}: ${percent}% ${variant} (v${r.version})`, 'success');
          await load();
          return r;
        } catch (err) {
          if (err.code === 'conflict') conflictBanner(err);
          if (err.status === 422) showProblems(err.details);
          throw err;
        }
      })()),
    });
  }

  // ---- this flag's history ----------------------------------------------------------
  async function loadHistory() {
    try {
      const r = await api('GET', envPath(ctx.env, `/versions${qs({ flag: key, limit: 20 })}`));
      if (destroyed) return;
      renderHistory(r.versions || []);
    } catch (err) {
      clear(historyList).append(errorBox(err, { title: 'Could not load the history' }));
    }
  }

  function renderHistory(versions) {
    clear(historyList);
    if (!versions.length) {
      historyList.append(h('p.muted', { text: 'No versions yet.' }));
      return;
    }
    const ul = h('ol.timeline');
    versions.forEach((v, i) => {
      const current = i === 0;
      ul.append(h('li.tl-item',
        h('div.tl-line',
          h('span.vnum', { text: `v${v.version}` }), kindBadge(v.kind),
          v.revertedTo ? h('span.muted', { text: `to v${v.revertedTo}` }) : null,
          h('span.spacer'),
          current ? h('span.chip.chip-current', { text: 'current' }) : null),
        h('div.tl-meta', h('span.author', { text: v.author }), ' · ', timeEl(v.createdAt)),
        v.reason ? h('div.tl-reason', { text: v.reason }) : null,
        h('div.tl-actions',
          h('button.btn.btn-sm.btn-ghost', { type: 'button', text: 'View', aria: { label: `View ${key} at v${v.version}` }, onclick: () => viewAt(v.version) }),
          !current && can.revert ? h('button.btn.btn-sm', { type: 'button', aria: { label: `Restore ${key} as of v${v.version}` }, onclick: () => restore(v.version) }, icon('revert'), h('span', { text: 'Restore this definition' })) : null)));
    });
    historyList.append(ul);
  }

  async function definitionAt(version) {
    try {
      return await api('GET', envPath(ctx.env, `/flags/${enc(key)}${qs({ version })}`));
    } catch (err) {
      if (err.status === 404) return null;
      throw err;
    }
  }

  async function viewAt(version) {
    try {
      const d = await definitionAt(version);
      infoDialog(`${key} at v${version}`, h('div',
        h('p.muted', { text: d ? `Changes from v${version} to the current definition (v${baseVersion}):` : `The flag did not exist at v${version}.` }),
        jsonDiff(d, saved, `Diff v${version} to current`)));
    } catch (err) {
      toast(`Could not load v${version}: ${err.message}`, 'error');
    }
  }

  async function restore(version) {
    let d;
    try {
      d = await definitionAt(version);
    } catch (err) {
      toast(`Could not load v${version}: ${err.message}`, 'error');
      return;
    }
    const envName = ctx.envInfo.name || ctx.env;
    const restoreProposal = { title: `Restore ${key} as of v${version}` };
    if (isProtected(ctx.envInfo)) {
      await propose(d, restoreProposal);
      return;
    }
    await reasonDialog({
      title: `Restore ${key} as of v${version}?`,
      lead: d ? 'Only this flag changes; other flags are untouched.' : `The flag did not exist at v${version}: restoring deletes it.`,
      env: ctx.envInfo,
      danger: true,
      confirmLabel: `Restore in ${envName}`,
      body: h('div.dialog-diff', h('p.small.muted', { text: `Current (v${baseVersion}) → as of v${version}` }), jsonDiff(saved, d, 'Changes the restore applies')),
      errorActions: orPropose(d, restoreProposal),
      submit: (reason) => track((async () => {
        try {
          const r = await api('POST', envPath(ctx.env, `/flags/${enc(key)}/restore`), { body: { version, reason }, ifMatch: baseVersion });
          toast(`${key} restored as of v${version} (now v${r.version})`, 'success');
          await load();
          return r;
        } catch (err) {
          if (err.code === 'conflict') conflictBanner(err);
          throw err;
        }
      })()),
    });
  }

  // ---- live changes -------------------------------------------------------------------
  function onRemote(evt) {
    if (!saved || typeof evt.version !== 'number' || evt.version <= (baseVersion || 0)) return;
    const touches = !Array.isArray(evt.changedFlags) || evt.changedFlags.includes(key);
    if (!touches) {
      // Another flag changed: our If-Match base moved on; re-read to keep saves possible.
      if (!dirty()) load();
      else {
        baseVersion = evt.version; // our flag did not change, so our edits still apply to it
        renderHead();
        loadHistory();
      }
      return;
    }
    if (dirty()) {
      clear(banner).append(h('div.alert.alert-info', { role: 'status' },
        h('div.alert-icon', icon('alert')),
        h('div.alert-body',
          h('strong', { text: `This flag changed (v${evt.version} by ${evt.author}).` }),
          h('p', { text: `${evt.kind}${evt.reason ? `: ${evt.reason}` : ''}. Your unsaved edits are kept; saving now would be refused.` }),
          h('div.alert-actions', h('button.btn.btn-sm.btn-primary', { type: 'button', text: 'Reload it', onclick: () => load() })))));
      loadHistory();
    } else {
      load();
    }
  }

  load();
  return {
    dirty,
    onChange: (evt) => {
      if (evt.environment !== ctx.env) return;
      if (inflight) pendingRemote = evt;
      else onRemote(evt);
    },
    destroy: () => {
      destroyed = true;
      schedulePreview.cancel();
    },
  };
}
