// Audit log: every change to flags, environments, tokens; filters and paging.
import { api, qs } from '../api.js';
import { h, clear, field, timeEl, nextId, icon } from '../dom.js';
import { errorBox, spinner, jsonDiff, jsonBlock, emptyState } from '../ui.js';

const ACTIONS = [
  ['', 'All actions'],
  ['flag.', 'flag.* (all flag actions)'],
  ['flag.create', 'flag.create'], ['flag.update', 'flag.update'], ['flag.delete', 'flag.delete'],
  ['flag.enable', 'flag.enable'], ['flag.disable', 'flag.disable'], ['flag.rollout', 'flag.rollout'], ['flag.restore', 'flag.restore'],
  ['flagset.', 'flagset.* (import, revert)'], ['flagset.import', 'flagset.import'], ['flagset.revert', 'flagset.revert'],
  ['environment.', 'environment.*'], ['token.', 'token.*'], ['sdk-key.', 'sdk-key.*'],
];

function actionClass(a) {
  if (/disable|delete|revoke/.test(a)) return 'act-danger';
  if (/revert|restore/.test(a)) return 'act-revert';
  if (/enable|create/.test(a)) return 'act-good';
  return 'act-neutral';
}

export function mount(root, ctx) {
  ctx.setTitle('Audit log');
  const q = ctx.route.query;
  const f = {
    environment: q.environment || '', actor: q.actor || '', action: q.action || '', flag: q.flag || '', since: q.since || '', before: q.before || '',
  };
  let destroyed = false;
  const cursors = []; // previous `before` values, for "Newer"

  const envSel = h('select.input', h('option', { value: '', text: 'All environments' }), ctx.envs.map((e) => h('option', { value: e.key, text: e.name || e.key })));
  envSel.value = f.environment;
  const actor = h('input.input', { value: f.actor, placeholder: 'token name', autocomplete: 'off' });
  const actionSel = h('select.input', ACTIONS.map(([v, l]) => h('option', { value: v, text: l })));
  actionSel.value = f.action;
  const flag = h('input.input.mono', { value: f.flag, placeholder: 'flag key', autocomplete: 'off', spellcheck: 'false' });
  const since = h('input.input', { type: 'date', value: f.since });
  const form = h('form.toolbar.audit-filters', { aria: { label: 'Audit filters' } },
    field('Environment', envSel), field('Actor', actor), field('Action', actionSel), field('Flag key', flag), field('Since', since),
    h('div.filter-btns', h('button.btn.btn-primary', { type: 'submit', text: 'Apply' }), h('button.btn.btn-ghost', { type: 'button', text: 'Reset', onclick: () => ctx.navigate('#/audit') })));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    go({ environment: envSel.value, actor: actor.value.trim(), action: actionSel.value, flag: flag.value.trim(), since: since.value });
  });
  envSel.addEventListener('change', () => form.requestSubmit());
  actionSel.addEventListener('change', () => form.requestSubmit());

  function go(params) {
    ctx.navigate(`#/audit${qs(params)}`);
  }

  const errSlot = h('div');
  const list = h('div.list-wrap', spinner());
  const pager = h('div.more');
  root.append(h('div.page-head', h('div.page-title', h('h1', { text: 'Audit log' }), h('span.count', { text: 'who changed what, and why' }))), form, errSlot, list, pager);

  function sinceParam() {
    if (!f.since) return undefined;
    const d = new Date(`${f.since}T00:00:00`);
    return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
  }

  async function load() {
    try {
      const r = await api('GET', `/audit${qs({ environment: f.environment, actor: f.actor, action: f.action, flag: f.flag, since: sinceParam(), before: f.before, limit: 50 })}`);
      if (destroyed) return;
      clear(errSlot);
      render(r);
    } catch (err) {
      if (destroyed) return;
      clear(errSlot).append(errorBox(err, { title: 'Could not load the audit log' }));
      clear(list);
    }
  }

  function render(r) {
    clear(list);
    clear(pager);
    const entries = r.entries || [];
    if (!entries.length) {
      list.append(emptyState('No entries', 'Nothing matches these filters.'));
    } else {
      const tbody = h('tbody');
      for (const e of entries) {
        const detailId = nextId('aud');
        const btn = h('button.icon-btn.expander', { type: 'button', aria: { expanded: 'false', controls: detailId, label: `Details of entry ${e.id}: ${e.action} ${e.target || ''}` } }, icon('chevron'));
        const detail = h('tr.detail-row', { id: detailId, hidden: true }, h('td', { colspan: '8' }, detailView(e)));
        btn.addEventListener('click', () => {
          const open = btn.getAttribute('aria-expanded') !== 'true';
          btn.setAttribute('aria-expanded', String(open));
          btn.replaceChildren(icon(open ? 'chevronDown' : 'chevron'));
          detail.hidden = !open;
        });
        tbody.append(
          h('tr',
            h('td.col-exp', btn),
            h('td', { dataset: { label: 'Time' } }, timeEl(e.at)),
            h('td', { dataset: { label: 'Actor' } }, h('span.author', { text: e.actor })),
            h('td', { dataset: { label: 'Action' } }, h(`span.action.${actionClass(e.action)}`, { text: e.action })),
            h('td', { dataset: { label: 'Environment' } }, e.environment ? h('span', { text: e.environment }) : h('span.muted', { text: '—' })),
            h('td', { dataset: { label: 'Target' } }, e.target ? h('code', { text: e.target }) : h('span.muted', { text: '—' })),
            h('td.cell-reason', { dataset: { label: 'Reason' } }, e.reason ? h('span', { text: e.reason }) : h('span.muted', { text: '—' })),
            h('td', { dataset: { label: 'Version' } }, e.version != null ? h('span.vnum', { text: `v${e.version}` }) : h('span.muted', { text: '—' }))),
          detail);
      }
      list.append(h('table.table.audit-table', { aria: { label: 'Audit entries' } },
        h('thead', h('tr', h('th.col-exp', { scope: 'col' }, h('span.sr-only', { text: 'Details' })),
          ['Time', 'Actor', 'Action', 'Environment', 'Target', 'Reason', 'Version'].map((t) => h('th', { scope: 'col', text: t })))),
        tbody));
    }
    if (f.before) {
      pager.append(h('button.btn', {
        type: 'button', text: '← Newer',
        onclick: () => {
          const prev = cursors.pop();
          f.before = prev || '';
          syncUrl();
          load();
        },
      }));
    }
    if (r.next !== null && r.next !== undefined) {
      pager.append(h('button.btn', {
        type: 'button', text: 'Older →',
        onclick: () => {
          cursors.push(f.before);
          f.before = String(r.next);
          syncUrl();
          load();
        },
      }));
    }
  }

  function syncUrl() {
    history.replaceState(null, '', `#/audit${qs(f)}`);
  }

  function detailView(e) {
    const hasBefore = e.before !== null && e.before !== undefined;
    const hasAfter = e.after !== null && e.after !== undefined;
    return h('div.audit-detail',
      h('div.audit-meta', h('span', { text: `Entry #${e.id}` }), h('span', { text: new Date(e.at).toISOString() })),
      hasBefore && hasAfter ? h('div', h('h3', { text: 'Change' }), jsonDiff(e.before, e.after, `Change of entry ${e.id}`)) : null,
      h('div.side-by-side',
        h('div', h('h3', { text: 'Before' }), hasBefore ? jsonBlock(e.before) : h('p.muted', { text: '(nothing)' })),
        h('div', h('h3', { text: 'After' }), hasAfter ? jsonBlock(e.after) : h('p.muted', { text: '(nothing)' }))));
  }

  load();
  return {
    onChange: (evt) => {
      if (!f.before && (!f.environment || f.environment === evt.environment)) load();
    },
    destroy: () => {
      destroyed = true;
    },
  };
}
