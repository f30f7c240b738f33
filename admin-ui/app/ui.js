// Shared pieces: dialogs, error boxes, toasts, badges, JSON and diff rendering.
import { h, clear, field, icon, nextId } from './dom.js';
import { summarize } from './targeting.js';

// ---- errors -----------------------------------------------------------------------

const FRIENDLY = {
  unauthorized: 'Your session has ended. Sign in again.',
  forbidden: 'Your role does not allow this.',
  csrf: 'The request was refused (CSRF check). Reload the page and try again.',
  conflict: 'Someone else changed this environment since you loaded it.',
  not_found: 'Not found.',
  network: 'Cannot reach flagd.',
  unavailable: 'flagd cannot reach its store right now.',
  payload_too_large: 'That is too large for flagd to accept.',
};

/** A readable error block: the server's message, its code, and every detail path. */
export function errorBox(err, opts = {}) {
  const box = h('div.alert.alert-error', { role: 'alert' });
  // A protected environment refuses a direct write with 409 approval_required: that is
  // not someone else's change, so it gets neither the "Conflict" title nor its hint.
  const needsApproval = err.code === 'approval_required';
  const title = opts.title || (needsApproval ? 'This environment needs approvals' : err.status === 403 ? 'Not allowed' : err.status === 409 ? 'Conflict' : 'Error');
  box.append(
    h('div.alert-icon', icon('alert')),
    h('div.alert-body',
      h('strong', { text: title }),
      h('p', { text: err.message || FRIENDLY[err.code] || String(err) }),
      err.status === 403 && err.code !== 'csrf' ? h('p.muted', { text: FRIENDLY.forbidden }) : null,
      err.status === 409 && !needsApproval ? h('p.muted', { text: `${FRIENDLY.conflict}${err.currentVersion ? ` It is now at v${err.currentVersion}.` : ''}` }) : null,
      err.details && err.details.length
        ? h('ul.detail-list', err.details.map((d) => h('li',
          h('code.path', { text: d.path || '(document)' }), ' ', h('span', { text: d.message }))))
        : null,
      err.code ? h('div.err-code', { text: `${err.status ? `HTTP ${err.status} · ` : ''}${err.code}` }) : null,
      opts.actions ? h('div.alert-actions', opts.actions) : null,
    ),
  );
  return box;
}

// ---- toasts -----------------------------------------------------------------------

let toastRegion = null;
export function toast(message, kind = 'info', ms = 5000) {
  if (!toastRegion) {
    toastRegion = h('div.toasts', { role: 'status', aria: { live: 'polite' } });
    document.body.append(toastRegion);
  }
  const t = h(`div.toast.toast-${kind}`, h('span', { text: message }));
  const close = h('button.icon-btn', { type: 'button', aria: { label: 'Dismiss' }, onclick: () => t.remove() }, icon('close'));
  t.append(close);
  toastRegion.append(t);
  while (toastRegion.children.length > 3) toastRegion.firstElementChild.remove();
  setTimeout(() => t.remove(), ms);
}

// ---- badges -----------------------------------------------------------------------

export function stateBadge(state) {
  const on = state === 'ENABLED';
  return h(`span.badge.${on ? 'badge-on' : 'badge-off'}`, h('span.dot'), on ? 'Enabled' : 'Disabled');
}

/** Kinds made by an alert (the Alertmanager receiver), not by a person. */
const AUTOMATIC = { 'auto-disable': 'An alert disabled this flag', 'auto-revert': 'An alert reverted to the last known-good version' };

export function kindBadge(kind) {
  const badge = h(`span.kind.kind-${kind || 'other'}`, { text: kind || '—' });
  if (!AUTOMATIC[kind]) return badge;
  return h('span.kind-wrap', badge, h('span.chip.chip-auto', { text: 'alert', title: AUTOMATIC[kind] }));
}

export function envBadge(env) {
  if (!env) return null;
  if (env.production) return h('span.env-badge.env-prod', { text: 'Production' });
  return h('span.env-badge', { text: env.name || env.key });
}

// ---- dialogs ----------------------------------------------------------------------

/**
 * A modal dialog asking for a reason. `submit(reason)` runs the change; if it throws the
 * error is shown in the dialog, which stays open. Resolves to submit's result or null.
 * `errorActions(err, close)` may add buttons to the error shown (close(value) ends the
 * dialog, resolving to value).
 */
export function reasonDialog(opts) {
  const {
    title, lead, env, confirmLabel = 'Confirm', danger = false, required = true,
    body = null, confirmCheck = null, submit, placeholder = 'e.g. checkout 5xx spike (INC-1234)',
    errorActions = null,
  } = opts;
  return new Promise((resolve) => {
    const prod = env && env.production;
    const reasonInput = h('textarea.input', {
      name: 'reason', rows: 2, required: required || undefined, placeholder,
      aria: { required: required ? 'true' : undefined },
    });
    const errSlot = h('div.dialog-error');
    const check = confirmCheck ? h('input', { type: 'checkbox', id: nextId('chk') }) : null;
    const okBtn = h(`button.btn.${danger || prod ? 'btn-danger' : 'btn-primary'}`, { type: 'submit', text: confirmLabel });
    const cancel = h('button.btn', { type: 'button', text: 'Cancel' });
    const dlg = h('dialog.dialog', { aria: { labelledby: nextId('dlgt') } });
    const titleId = dlg.getAttribute('aria-labelledby');
    const form = h('form', { method: 'dialog' },
      prod ? h('div.dialog-prod', icon('alert'), h('span', { text: `You are changing ${env.name || env.key.toUpperCase()} — live for every user` })) : null,
      h('div.dialog-head', h('h2', { id: titleId, text: title })),
      h('div.dialog-body',
        lead ? h('p.lead', lead) : null,
        body,
        field(required ? 'Reason (required, recorded in the audit log)' : 'Reason (optional, recorded in the audit log)', reasonInput),
        check ? h('label.check', { for: check.id }, check, h('span', { text: confirmCheck })) : null,
        errSlot,
      ),
      h('div.dialog-foot', cancel, okBtn),
    );
    dlg.append(form);
    const finish = attachDialog(dlg, cancel, resolve);
    const sync = () => {
      okBtn.disabled = (required && !reasonInput.value.trim()) || (check && !check.checked);
    };
    reasonInput.addEventListener('input', sync);
    if (check) check.addEventListener('change', sync);
    sync();
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const reason = reasonInput.value.trim();
      if (required && !reason) {
        reasonInput.focus();
        return;
      }
      okBtn.disabled = true;
      okBtn.classList.add('busy');
      clear(errSlot);
      try {
        const r = await submit(reason);
        finish(r === undefined ? true : r);
      } catch (err) {
        errSlot.append(errorBox(err, { actions: errorActions ? errorActions(err, finish) : null }));
        okBtn.classList.remove('busy');
        sync();
      }
    });
    dlg.showModal();
    reasonInput.focus();
  });
}

/**
 * A modal asking to confirm an action that is not a flag change (so no reason, nothing
 * for the audit log). `submit()` runs it; if it throws, the error is shown in the dialog,
 * which stays open. Resolves to submit's result, or null when cancelled.
 */
export function confirmDialog({ title, lead, confirmLabel = 'Confirm', danger = false, submit }) {
  return new Promise((resolve) => {
    const errSlot = h('div.dialog-error');
    const okBtn = h(`button.btn.${danger ? 'btn-danger' : 'btn-primary'}`, { type: 'submit', text: confirmLabel });
    const cancel = h('button.btn', { type: 'button', text: 'Cancel' });
    const dlg = h('dialog.dialog', { aria: { labelledby: nextId('dlgt') } });
    const form = h('form', { method: 'dialog' },
      h('div.dialog-head', h('h2', { id: dlg.getAttribute('aria-labelledby'), text: title })),
      h('div.dialog-body', lead ? h('p.lead', lead) : null, errSlot),
      h('div.dialog-foot', cancel, okBtn));
    dlg.append(form);
    const finish = attachDialog(dlg, cancel, resolve);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      okBtn.disabled = true;
      okBtn.classList.add('busy');
      clear(errSlot);
      try {
        const r = await submit();
        finish(r === undefined ? true : r);
      } catch (err) {
        errSlot.append(errorBox(err));
        okBtn.classList.remove('busy');
        okBtn.disabled = false;
      }
    });
    dlg.showModal();
    cancel.focus();
  });
}

/** A plain modal with arbitrary content and a close button; returns the dialog. */
export function infoDialog(title, content) {
  const dlg = h('dialog.dialog.dialog-wide', { aria: { label: title } });
  const close = h('button.btn', { type: 'button', text: 'Close', onclick: () => dlg.close() });
  dlg.append(h('div.dialog-head', h('h2', { text: title })), h('div.dialog-body', content), h('div.dialog-foot', close));
  dlg.addEventListener('close', () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  return dlg;
}

// ---- JSON and diffs ---------------------------------------------------------------

export function jsonBlock(value, cls = '') {
  return h(`pre.json${cls ? `.${cls}` : ''}`, { text: value === undefined ? '(absent)' : JSON.stringify(value, null, 2) });
}

/** Longest-common-subsequence line diff. Returns [{t: ' '|'-'|'+', line}]. */
export function lineDiff(aText, bText) {
  const a = aText ? aText.split('\n') : [];
  const b = bText ? bText.split('\n') : [];
  const n = a.length;
  const m = b.length;
  const dp = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i -= 1) {
    for (let j = m - 1; j >= 0; j -= 1) {
      dp[i][j] = a[i] === b[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      out.push({ t: ' ', line: a[i] });
      i += 1;
      j += 1;
    } else if (dp[i + 1][j] >= dp[i][j + 1]) {
      out.push({ t: '-', line: a[i] });
      i += 1;
    } else {
      out.push({ t: '+', line: b[j] });
      j += 1;
    }
  }
  while (i < n) out.push({ t: '-', line: a[i++] });
  while (j < m) out.push({ t: '+', line: b[j++] });
  return out;
}

/** A unified line diff of two JSON values, with +/− gutters. */
export function jsonDiff(before, after, label) {
  const a = before === undefined || before === null ? '' : JSON.stringify(before, null, 2);
  const b = after === undefined || after === null ? '' : JSON.stringify(after, null, 2);
  const lines = lineDiff(a, b);
  const pre = h('pre.diff', { aria: { label: label || 'Line diff' }, tabindex: '0' });
  // Fold long runs of unchanged lines: keep 3 lines of context around each change.
  const CONTEXT = 3;
  const keep = lines.map(() => false);
  lines.forEach((l, i) => {
    if (l.t === ' ') return;
    for (let j = Math.max(0, i - CONTEXT); j <= Math.min(lines.length - 1, i + CONTEXT); j += 1) keep[j] = true;
  });
  const anyChange = lines.some((l) => l.t !== ' ');
  let folded = 0;
  const flush = () => {
    if (folded) pre.append(h('span.dl.fold', h('span.gutter', { text: '⋯' }), h('span.code', { text: `${folded} unchanged line${folded > 1 ? 's' : ''}` })));
    folded = 0;
  };
  for (const [i, l] of lines.entries()) {
    if (anyChange && !keep[i] && lines.length > 12) {
      folded += 1;
      continue;
    }
    flush();
    const cls = l.t === '-' ? 'del' : l.t === '+' ? 'add' : 'ctx';
    pre.append(h(`span.dl.${cls}`, h('span.gutter', { text: l.t === ' ' ? ' ' : l.t === '-' ? '−' : '+' }), h('span.code', { text: l.line || ' ' })));
  }
  flush();
  return pre;
}

const CHANGE_LABEL = { added: 'Added', removed: 'Removed', changed: 'Changed' };

/** "state ENABLED → DISABLED · targeting 5% on → 25% on": what a flag change means. */
export function changeSummary(before, after) {
  if (!before && after) return `${after.state === 'DISABLED' ? 'disabled' : 'enabled'} · ${summarize(after)}`;
  if (before && !after) return 'deleted';
  if (!before || !after) return '';
  const parts = [];
  const st = (d) => d.state || 'ENABLED';
  if (st(before) !== st(after)) parts.push(`state ${st(before)} → ${st(after)}`);
  if (JSON.stringify(before.variants) !== JSON.stringify(after.variants)) parts.push('variants changed');
  if ((before.defaultVariant ?? null) !== (after.defaultVariant ?? null)) parts.push(`default ${before.defaultVariant ?? 'none'} → ${after.defaultVariant ?? 'none'}`);
  if (JSON.stringify(before.targeting) !== JSON.stringify(after.targeting)) {
    const a = summarize(before);
    const b = summarize(after);
    parts.push(a !== b ? `targeting: ${a} → ${b}` : 'targeting changed');
  }
  if (JSON.stringify(before.metadata) !== JSON.stringify(after.metadata)) parts.push('metadata changed');
  return parts.join(' · ');
}

/** Render a /diff answer: one card per changed flag with a line diff. */
export function diffList(diff, opts = {}) {
  const changes = (diff && diff.changes) || [];
  if (!changes.length) return h('p.empty', { text: opts.emptyText || 'No differences: both versions have the same flags.' });
  return h('div.diff-list', changes.map((c) => {
    const name = c.kind === 'flag' ? c.key : `${c.kind}${c.key ? ` ${c.key}` : ''}`;
    return h('section.diff-card',
      h('header.diff-card-head',
        h(`span.chg.chg-${c.change}`, { text: CHANGE_LABEL[c.change] || c.change }),
        h('code.diff-key', { text: name }),
        c.kind !== 'flag' ? h('span.muted', { text: c.kind }) : null,
        c.kind === 'flag' ? h('span.chg-summary', { text: changeSummary(c.before, c.after) }) : null,
      ),
      jsonDiff(c.before, c.after, `Changes to ${name}`));
  }));
}

export function spinner(label = 'Loading…') {
  return h('div.loading', { role: 'status' }, h('span.spin'), h('span', { text: label }));
}

export function emptyState(title, text, action) {
  return h('div.empty-state', h('strong', { text: title }), text ? h('p', { text }) : null, action || null);
}

/**
 * Puts a <dialog> in the page and returns finish(value): it closes and removes the
 * dialog once and resolves with the value. Cancel and Escape resolve null.
 */
export function attachDialog(dlg, cancel, resolve) {
  document.body.append(dlg);
  let done = false;
  const finish = (v) => {
    if (done) return;
    done = true;
    dlg.close();
    dlg.remove();
    resolve(v);
  };
  cancel.addEventListener('click', () => finish(null));
  dlg.addEventListener('cancel', (e) => {
    e.preventDefault();
    finish(null);
  });
  return finish;
}
