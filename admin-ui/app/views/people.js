// People (admins): the personal accounts that sign in to the UI, how each signs in
// (a password, single sign-on), their role and environments; a new person; a role,
// environments, name or password changed; an account disabled or enabled again.
// Passwords go in and are never shown (flagd answers only whether there is one).
import { api, enc } from '../api.js';
import { h, clear, field, timeEl, tickTimes, nextId, icon, deepEqual } from '../dom.js';
import { errorBox, spinner, emptyState, toast, confirmDialog, attachDialog } from '../ui.js';

const ROLES = [
  ['viewer', 'viewer: reads everything'],
  ['editor', 'editor: creates and edits flags'],
  ['responder', 'responder: kill switches, rollouts, reverts'],
  ['ci', 'ci: rollouts, reverts, imports'],
  ['admin', 'admin: everything, people and tokens too'],
];

/**
 * "All environments" or "Only these" with a box per environment. A limited admin
 * manages only people within its own environments, so "All" is not offered to it.
 * value() is null (all) or the list chosen.
 */
function envPicker(envs, current, { allowAll }) {
  const group = nextId('envs');
  const all = h('input', { type: 'radio', name: group, id: nextId('ea'), value: 'all' });
  const some = h('input', { type: 'radio', name: group, id: nextId('es'), value: 'some' });
  const boxes = envs.map((e) => {
    const box = h('input', { type: 'checkbox', value: e.key });
    box.checked = Array.isArray(current) && current.includes(e.key);
    box.addEventListener('change', () => { some.checked = true; });
    return h('label.check', box, h('span', { text: e.name || e.key }));
  });
  all.disabled = !allowAll;
  if (current === null && allowAll) all.checked = true;
  else some.checked = true;
  const el = h('fieldset.fieldset.env-picker', h('legend', { text: 'Environments' }),
    h('div.inline-row', all, h('label', { for: all.id, text: allowAll ? 'All environments' : 'All environments (not within your limits)' })),
    h('div.inline-row', some, h('label', { for: some.id, text: 'Only:' }), boxes));
  return {
    el,
    value: () => (all.checked ? null : boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value)),
  };
}

function roleSelect(current) {
  const sel = h('select.input', { name: 'role' }, ROLES.map(([v, l]) => h('option', { value: v, text: l })));
  sel.value = current;
  return sel;
}

/** Marks the inputs a 422 names (details[].path: login, role, environments[0], …). */
function markInvalid(inputs, err) {
  for (const el of Object.values(inputs)) el.removeAttribute('aria-invalid');
  for (const d of (err && err.details) || []) {
    const el = inputs[String(d.path || '').replace(/\[.*$/, '')];
    if (el) el.setAttribute('aria-invalid', 'true');
  }
}

/** The dialog for a new person, or for changing one (`user`). Resolves to the saved user or null. */
function personDialog(ctx, user) {
  return new Promise((resolve) => {
    const editing = !!user;
    const allowAll = !Array.isArray(ctx.session.environments);
    const login = h('input.input', { name: 'login', required: true, autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false', placeholder: 'alice@example.com' });
    const name = h('input.input', { name: 'name', autocomplete: 'off', placeholder: 'Alice Example', value: editing ? user.name || '' : '' });
    const email = h('input.input', { name: 'email', type: 'email', autocomplete: 'off', placeholder: 'alice@example.com' });
    const role = roleSelect(editing ? user.role : 'viewer');
    const envs = envPicker(ctx.envs, editing ? user.environments : (allowAll ? null : []), { allowAll });
    const password = h('input.input', { name: 'password', type: 'password', autocomplete: 'new-password' });
    const errSlot = h('div.dialog-error');
    const ok = h('button.btn.btn-primary', { type: 'submit', text: editing ? 'Save' : 'Create person' });
    const cancel = h('button.btn', { type: 'button', text: 'Cancel' });
    const titleId = nextId('dlgt');
    const dlg = h('dialog.dialog.dialog-wide', { aria: { labelledby: titleId } });
    const claimNote = editing && user.roleSource === 'claim'
      ? h('p.alert.alert-info', { text: 'This role comes from the identity provider’s claims (--oidc-role) and is taken from them again at each sign-in. A role saved here is the admin’s from then on: the claims no longer change it.' })
      : null;
    const form = h('form', { novalidate: true },
      h('div.dialog-head', h('h2', { id: titleId, text: editing ? `Change ${user.login}` : 'New person' })),
      h('div.dialog-body',
        editing ? null : h('div.grid-2',
          field('Login', login, 'Letters, digits and . _ - @ +. With single sign-on: their verified e-mail address.'),
          field('E-mail', email)),
        h('div.grid-2', field('Name', name), field('Role', role)),
        claimNote,
        envs.el,
        field(editing ? (user.password ? 'New password' : 'Password') : 'First password (optional)', password,
          editing
            ? 'At least 12 characters. Leave empty to keep the one they have.'
            : 'At least 12 characters; hand it over in person. Leave empty for someone who signs in with single sign-on.'),
        errSlot),
      h('div.dialog-foot', cancel, ok));
    dlg.append(form);
    const finish = attachDialog(dlg, cancel, resolve);
    const inputs = { login, name, email, role, password, environments: envs.el };
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      clear(errSlot);
      const chosen = envs.value();
      let body;
      if (editing) {
        body = {};
        if (name.value.trim() !== (user.name || '')) body.name = name.value.trim();
        if (role.value !== user.role) body.role = role.value;
        if (!deepEqual(chosen, user.environments ?? null)) body.environments = chosen;
        if (password.value) body.password = password.value;
        if (!Object.keys(body).length) {
          finish(null);
          return;
        }
      } else {
        body = { login: login.value.trim(), role: role.value };
        if (name.value.trim()) body.name = name.value.trim();
        if (email.value.trim()) body.email = email.value.trim();
        if (chosen !== null) body.environments = chosen;
        if (password.value) body.password = password.value;
        if (!body.login) {
          errSlot.append(errorBox({ message: 'Fix these first:', details: [{ path: 'login', message: 'is required' }] }, { title: 'Not ready' }));
          login.setAttribute('aria-invalid', 'true');
          login.focus();
          return;
        }
      }
      ok.disabled = true;
      try {
        const r = editing
          ? await api('PATCH', `/users/${enc(user.id)}`, { body })
          : await api('POST', '/users', { body });
        finish(r.user);
      } catch (err) {
        markInvalid(inputs, err);
        errSlot.append(errorBox(err, { title: editing ? 'Not saved' : 'The person was not created' }));
        ok.disabled = false;
      }
    });
    dlg.showModal();
    (editing ? role : login).focus();
  });
}

/** How a person signs in: a password, single sign-on (its issuer as the title), both, or not yet. */
function signInCell(u) {
  const ways = [];
  if (u.password) ways.push(h('span.label-chip', { text: 'password' }));
  if (u.oidcIssuer) ways.push(h('span.label-chip', { text: 'single sign-on', title: u.oidcIssuer }));
  return ways.length ? ways : h('span.muted', { text: 'no password yet' });
}

function envsCell(u) {
  if (!Array.isArray(u.environments)) return h('span', { text: 'All' });
  if (!u.environments.length) return h('span.muted', { text: 'None' });
  return u.environments.map((e) => h('span.label-chip', { text: e }));
}

export function mount(root, ctx) {
  ctx.setTitle('People');
  let destroyed = false;
  let users = [];
  const errSlot = h('div');
  const list = h('div.list-wrap', spinner());
  const count = h('span.count', { text: 'the accounts people sign in with' });
  const newBtn = h('button.btn.btn-primary', { type: 'button', onclick: create }, icon('plus'), h('span', { text: 'New person' }));
  root.append(
    h('div.page-head',
      h('div.page-title', h('h1', { text: 'People' }), count),
      ctx.can.admin ? h('div.page-actions', newBtn) : null),
    errSlot);
  if (!ctx.can.admin) {
    root.append(emptyState('Admins only', 'People’s accounts are managed by admins.'));
    return { destroy: () => {} };
  }
  root.append(list);

  async function create() {
    const u = await personDialog(ctx, null);
    if (!u || destroyed) return;
    toast(`Created ${u.login}`, 'success');
    load();
  }

  async function edit(u) {
    const saved = await personDialog(ctx, u);
    if (!saved || destroyed) return;
    toast(`Saved ${saved.login}`, 'success');
    load();
  }

  async function setDisabled(u, disabled) {
    if (disabled) {
      const done = await confirmDialog({
        title: `Disable ${u.login}?`,
        lead: ['Their open sessions end at once, and they cannot sign in until an admin enables the account again. What they changed stays in the history.'],
        confirmLabel: 'Disable',
        danger: true,
        submit: () => api('PATCH', `/users/${enc(u.id)}`, { body: { disabled: true } }),
      });
      if (!done || destroyed) return;
      toast(`Disabled ${u.login}`, 'success');
    } else {
      try {
        await api('PATCH', `/users/${enc(u.id)}`, { body: { disabled: false } });
        toast(`Enabled ${u.login}`, 'success');
      } catch (err) {
        clear(errSlot).append(errorBox(err, { title: `Could not enable ${u.login}` }));
        return;
      }
    }
    load();
  }

  async function load() {
    try {
      const r = await api('GET', '/users');
      if (destroyed) return;
      clear(errSlot);
      users = r.users || [];
      render();
    } catch (err) {
      if (!destroyed) clear(list).append(errorBox(err, { title: 'Could not load the people' }));
    }
  }

  function render() {
    clear(list);
    count.textContent = `${users.length} ${users.length === 1 ? 'person' : 'people'} · the accounts people sign in with`;
    if (!users.length) {
      list.append(emptyState('Nobody yet', 'Everyone signs in with an access token so far. Add a person, or let single sign-on create them from its claims (--oidc-role).'));
      return;
    }
    const me = ctx.session.person ? ctx.session.name : null;
    list.append(h('table.table.people-table', { aria: { label: 'People' } },
      h('thead', h('tr', ['Person', 'Role', 'Environments', 'Signs in with', 'Last sign-in', 'Status'].map((t) => h('th', { scope: 'col', text: t })),
        h('th.col-actions', { scope: 'col', text: 'Actions' }))),
      h('tbody', users.map((u) => h(`tr${u.disabledAt ? '.is-disabled' : ''}`, { dataset: { login: u.login } },
        h('td.cell-key', { dataset: { label: 'Person' } },
          h('strong.person-login', { text: u.login }),
          u.name && u.name !== u.login ? h('div.cell-sub', { text: u.name }) : null,
          u.email && u.email !== u.login ? h('div.cell-sub', { text: u.email }) : null),
        h('td', { dataset: { label: 'Role' } }, h('span.role-chip', { text: u.role }),
          u.roleSource === 'claim' ? h('div.cell-sub', { text: 'from the identity provider', title: 'Mapped by --oidc-role from the ID token’s claims at each sign-in' }) : null),
        h('td', { dataset: { label: 'Environments' } }, envsCell(u)),
        h('td', { dataset: { label: 'Signs in with' } }, signInCell(u)),
        h('td', { dataset: { label: 'Last sign-in' } }, u.lastLoginAt ? timeEl(u.lastLoginAt) : h('span.muted', { text: 'never' })),
        h('td', { dataset: { label: 'Status' } }, u.disabledAt
          ? h('span', h('span.chip.chip-lost', { text: 'disabled' }), ' ', timeEl(u.disabledAt))
          : h('span.chip.chip-current', { text: 'active' })),
        h('td.col-actions', { dataset: { label: 'Actions' } },
          h('button.btn.btn-sm', { type: 'button', text: 'Change', aria: { label: `Change ${u.login}` }, onclick: () => edit(u) }), ' ',
          u.login === me ? null : u.disabledAt
            ? h('button.btn.btn-sm', { type: 'button', text: 'Enable', aria: { label: `Enable ${u.login}` }, onclick: () => setDisabled(u, false) })
            : h('button.btn.btn-sm', { type: 'button', text: 'Disable', aria: { label: `Disable ${u.login}` }, onclick: () => setDisabled(u, true) })))))));
    tickTimes(list);
  }

  load();
  return {
    destroy: () => {
      destroyed = true;
    },
  };
}
