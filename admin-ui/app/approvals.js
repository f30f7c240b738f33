// Protected environments: the "Protected · N approvals" badge, the admins' approval
// setting, and "Propose change": in a protected environment a change is written only as
// an approved change request, so the views offer one in place of the direct write.
// A kill switch, a revert and an undo of the head stay direct (break-glass) and open a
// review; breakGlassNote() says so in their dialogs.
import { api, envPath, enc } from './api.js';
import { h, clear, field, icon, nextId } from './dom.js';
import { attachDialog, errorBox, toast } from './ui.js';

export function isProtected(env) {
  return !!(env && env.protected);
}

function approvalsCount(env) {
  return Math.max(1, Number(env && env.approvals) || 1);
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function others(n) {
  return n === 1 ? '1 other person' : `${n} other people`;
}

export function envName(env) {
  return (env && (env.name || env.key)) || '';
}

export function requestsHref(env, id) {
  return `#/${enc(env)}/requests${id ? `/${enc(id)}` : ''}`;
}

/**
 * "Protected · 2 approvals", or nothing for an environment that is not protected. With
 * `onEdit` (admins) it is a button that opens the approval setting, shown as
 * "Not protected" too, so protection can be turned on. `compact` (the header, where
 * room is short) is the lock and the count (the lock alone when not protected), with
 * the words in its title and accessible name.
 */
export function protectedBadge(env, { onEdit, compact = false } = {}) {
  if (!env || (!env.protected && !onEdit)) return null;
  const n = approvalsCount(env);
  const text = compact
    ? (env.protected ? String(n) : '')
    : (env.protected ? `Protected · ${plural(n, 'approval')}` : 'Not protected');
  const title = env.protected
    ? `Changes in ${envName(env)} are written only as change requests that ${others(n)} approved. A kill switch, a revert and an undo of the last version apply at once and open a review.`
    : `Changes in ${envName(env)} apply at once. Protect it to require approvals.`;
  const cls = `span.protect-badge${env.protected ? '.is-protected' : ''}`;
  if (!onEdit) {
    return h(cls, { title, role: compact ? 'img' : null, aria: compact ? { label: `${envName(env)} is protected: ${plural(n, 'approval')} per change` } : {} },
      icon('lock'), text ? h('span', { text }) : null);
  }
  return h(`button${cls.slice(4)}`, {
    type: 'button', title, onclick: onEdit,
    aria: { label: `Approval setting of ${envName(env)}: ${env.protected ? `protected, ${plural(n, 'approval')}` : 'not protected'}` },
  }, icon('lock'), text ? h('span', { text }) : null);
}

/** A line for the dialogs of break-glass actions in a protected environment. */
export function breakGlassNote(env) {
  if (!isProtected(env)) return null;
  return h('div.alert.alert-info.break-glass', { role: 'note' },
    h('div.alert-icon', icon('lock')),
    h('div.alert-body',
      h('strong', { text: `${envName(env)} is protected: applied without approval; opens a review.` }),
      h('p', { text: 'It applies at once, in the safe direction only. Someone else (an editor or admin) acknowledges it afterwards in Requests → Break-glass reviews.' })));
}

/**
 * The admins' setting: protected or not, and how many approvals a change needs.
 * PUT /environments/{env}/approval-policy. Resolves to the policy saved, or null.
 */
export function policyDialog(env) {
  return new Promise((resolve) => {
    const name = envName(env);
    const on = h('input', { type: 'checkbox', id: nextId('prot') });
    on.checked = !!env.protected;
    const count = h('input.input.num-input', { type: 'number', min: '1', max: '10', step: '1', value: String(approvalsCount(env)), name: 'approvals' });
    const countField = field('Approvals needed', count, 'From 1 to 10 people other than the change’s author (editors or admins, signed in as themselves).');
    const errSlot = h('div.dialog-error');
    const ok = h('button.btn.btn-primary', { type: 'submit', text: 'Save' });
    const cancel = h('button.btn', { type: 'button', text: 'Cancel' });
    const titleId = nextId('dlgt');
    const dlg = h('dialog.dialog', { aria: { labelledby: titleId } });
    const sync = () => {
      count.disabled = !on.checked;
    };
    on.addEventListener('change', sync);
    sync();
    const form = h('form', { novalidate: true },
      h('div.dialog-head', h('h2', { id: titleId, text: `Approvals in ${name}` })),
      h('div.dialog-body',
        h('p.lead', { text: 'In a protected environment every change is proposed as a change request and written only once other people approved it. A kill switch, a revert of the whole set and an undo of the last version still apply at once, with a reason, and open a review.' }),
        h('label.check', { for: on.id }, on, h('span', { text: `Protect ${name}: changes need approval` })),
        countField,
        errSlot),
      h('div.dialog-foot', cancel, ok));
    dlg.append(form);
    const finish = attachDialog(dlg, cancel, resolve);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      clear(errSlot);
      count.removeAttribute('aria-invalid');
      const n = Number(count.value);
      if (on.checked && !(Number.isInteger(n) && n >= 1 && n <= 10)) {
        errSlot.append(errorBox({ message: 'Fix this first:', details: [{ path: 'approvals', message: 'is a whole number from 1 to 10' }] }, { title: 'Not saved' }));
        count.setAttribute('aria-invalid', 'true');
        count.focus();
        return;
      }
      ok.disabled = true;
      try {
        const body = { protected: on.checked, approvals: on.checked ? n : approvalsCount(env) };
        const r = await api('PUT', envPath(env.key, '/approval-policy'), { body });
        toast(r.policy.protected ? `${name} is protected: ${plural(r.policy.approvals, 'approval')} per change` : `${name} is no longer protected`, 'success');
        finish(r.policy);
      } catch (err) {
        if ((err.details || []).some((d) => d.path === 'approvals')) count.setAttribute('aria-invalid', 'true');
        errSlot.append(errorBox(err, { title: 'Not saved' }));
        ok.disabled = false;
      }
    });
    dlg.showModal();
    on.focus();
  });
}

/**
 * "Propose change": asks for a title and POSTs a change request holding `change`
 * ({flags: {key: definition or null}}). `body` is shown above the title (the diff).
 * Resolves to the request made, or null.
 */
export function proposeDialog(ctx, { change, title = '', heading, lead, body = null }) {
  return new Promise((resolve) => {
    const env = ctx.envInfo;
    const n = approvalsCount(env);
    const titleIn = h('input.input', { name: 'title', required: true, maxlength: '200', autocomplete: 'off', value: title, aria: { required: 'true' } });
    const auto = h('input', { type: 'checkbox', id: nextId('auto') });
    auto.checked = true;
    const errSlot = h('div.dialog-error');
    const ok = h('button.btn.btn-primary', { type: 'submit', text: 'Propose change' });
    const cancel = h('button.btn', { type: 'button', text: 'Cancel' });
    const titleId = nextId('dlgt');
    const dlg = h('dialog.dialog.dialog-wide', { aria: { labelledby: titleId } });
    const form = h('form', { novalidate: true },
      h('div.dialog-head', h('h2', { id: titleId, text: heading || `Propose a change to ${envName(env)}` })),
      h('div.dialog-body',
        h('div.alert.alert-info', { role: 'note' },
          h('div.alert-icon', icon('lock')),
          h('div.alert-body',
            h('strong', { text: `${envName(env)} is protected.` }),
            h('p', { text: `${lead ? `${lead} ` : ''}Nothing changes until ${others(n)} (${n === 1 ? 'an editor or admin' : 'editors or admins'}) approve${n === 1 ? 's' : ''} the change request.` }))),
        body,
        field('Title of the change request', titleIn, 'What changes and why, for the reviewers (at most 200 characters).'),
        h('label.check', { for: auto.id }, auto, h('span', { text: 'Apply it as soon as the last approval is given' })),
        errSlot),
      h('div.dialog-foot', cancel, ok));
    dlg.append(form);
    const finish = attachDialog(dlg, cancel, resolve);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      clear(errSlot);
      titleIn.removeAttribute('aria-invalid');
      const t = titleIn.value.trim();
      if (!t) {
        errSlot.append(errorBox({ message: 'Fix this first:', details: [{ path: 'title', message: 'is required: say what changes and why' }] }, { title: 'Not proposed' }));
        titleIn.setAttribute('aria-invalid', 'true');
        titleIn.focus();
        return;
      }
      ok.disabled = true;
      ok.classList.add('busy');
      try {
        const r = await api('POST', envPath(ctx.env, '/change-requests'), { body: { title: t, change, autoApply: auto.checked } });
        toast(`Proposed “${t}”: it needs ${plural(r.request.approvalsRequired, 'approval')}`, 'success');
        finish(r.request);
      } catch (err) {
        if ((err.details || []).some((d) => d.path === 'title')) titleIn.setAttribute('aria-invalid', 'true');
        errSlot.append(errorBox(err, { title: 'Not proposed' }));
        ok.disabled = false;
        ok.classList.remove('busy');
      }
    });
    dlg.showModal();
    titleIn.focus();
    titleIn.select();
  });
}

/**
 * For a direct write refused with 409 approval_required (the environment was protected
 * after the page loaded it): a button that closes the dialog and proposes instead.
 */
export function proposeInstead(err, close, propose) {
  if (!err || err.code !== 'approval_required') return null;
  return [h('button.btn.btn-sm.btn-primary', {
    type: 'button',
    text: 'Propose this change instead',
    onclick: () => {
      close(null);
      propose();
    },
  })];
}
