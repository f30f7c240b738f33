// The flags list: what is on in this environment, who changed it, one-click kill switch.
import { api, envPath, enc } from '../api.js';
import { h, clear, icon, timeEl, nextId } from '../dom.js';
import { errorBox, reasonDialog, toast, spinner, emptyState, envBadge } from '../ui.js';
import { summarize } from '../targeting.js';
import { createFlagDialog } from './create.js';
import { isProtected, protectedBadge, proposeDialog, proposeInstead, breakGlassNote, requestsHref } from '../approvals.js';

const DAY = 24 * 3600 * 1000;

export function mount(root, ctx) {
  ctx.setTitle('Flags');
  const q = ctx.route.query;
  const filters = { text: q.q || '', state: q.state || 'all', recent: q.recent === '1' };
  let data = null;
  let loadSeq = 0;
  let destroyed = false;

  const search = h('input.input.search-input', {
    type: 'search', placeholder: 'Search by key…', value: filters.text, aria: { label: 'Search flags by key' }, autocomplete: 'off',
  });
  const stateSel = h('select.input', { aria: { label: 'Filter by state' } },
    h('option', { value: 'all', text: 'All states' }),
    h('option', { value: 'ENABLED', text: 'Enabled' }),
    h('option', { value: 'DISABLED', text: 'Disabled' }));
  stateSel.value = filters.state;
  const recentId = nextId('recent');
  const recent = h('input', { type: 'checkbox', id: recentId });
  recent.checked = filters.recent;

  const newBtn = ctx.can.editFlags
    ? h('button.btn.btn-primary', { type: 'button', onclick: openCreate }, icon('plus'), h('span', { text: 'New flag' }))
    : null;
  const count = h('span.count');
  const head = h('div.page-head',
    h('div.page-title', h('h1', { text: 'Flags' }), envBadge(ctx.envInfo), protectedBadge(ctx.envInfo), count),
    h('div.page-actions', newBtn));
  const toolbar = h('div.toolbar',
    h('div.search-wrap', icon('search'), search),
    stateSel,
    h('label.check', { for: recentId }, recent, h('span', { text: 'Changed in the last 24 h' })));
  const errSlot = h('div');
  const list = h('div.list-wrap', spinner());
  root.append(head, toolbar, errSlot, list);

  const syncUrl = () => {
    const p = new URLSearchParams();
    if (filters.text) p.set('q', filters.text);
    if (filters.state !== 'all') p.set('state', filters.state);
    if (filters.recent) p.set('recent', '1');
    const s = p.toString();
    history.replaceState(null, '', `#/${enc(ctx.env)}/flags${s ? `?${s}` : ''}`);
  };
  search.addEventListener('input', () => {
    filters.text = search.value.trim();
    syncUrl();
    render();
  });
  stateSel.addEventListener('change', () => {
    filters.state = stateSel.value;
    syncUrl();
    render();
  });
  recent.addEventListener('change', () => {
    filters.recent = recent.checked;
    syncUrl();
    render();
  });

  async function load() {
    const seq = ++loadSeq;
    try {
      const r = await api('GET', envPath(ctx.env, '/flag-summaries'));
      if (destroyed || seq !== loadSeq) return;
      data = r;
      ctx.setEnvVersion(r.version);
      clear(errSlot);
      render();
    } catch (err) {
      if (destroyed || seq !== loadSeq) return;
      clear(errSlot).append(errorBox(err, { title: 'Could not load the flags' }));
      if (!data) clear(list);
    }
  }

  function visible() {
    const now = Date.now();
    const t = filters.text.toLowerCase();
    return data.flags.filter((f) => {
      if (t && !f.key.toLowerCase().includes(t)) return false;
      if (filters.state !== 'all' && (f.definition.state || 'ENABLED') !== filters.state) return false;
      if (filters.recent) {
        const at = f.lastChange && Date.parse(f.lastChange.createdAt);
        if (!at || now - at > DAY) return false;
      }
      return true;
    }).sort((a, b) => a.key.localeCompare(b.key));
  }

  function render() {
    if (!data) return;
    const rows = visible();
    count.textContent = `${rows.length === data.flags.length ? data.flags.length : `${rows.length} of ${data.flags.length}`} flag${data.flags.length === 1 ? '' : 's'} · v${data.version}`;
    clear(list);
    if (!data.flags.length) {
      list.append(emptyState('No flags yet', `Nothing is defined in ${ctx.envInfo.name || ctx.env}.`, newBtn ? h('button.btn.btn-primary', { type: 'button', onclick: openCreate, text: 'Create the first flag' }) : null));
      return;
    }
    if (!rows.length) {
      list.append(emptyState('No flag matches', 'Change the search or the filters.'));
      return;
    }
    const table = h('table.table.flags-table', { aria: { label: `Flags in ${ctx.env}` } },
      h('thead', h('tr',
        h('th', { scope: 'col', text: 'Flag' }),
        h('th', { scope: 'col', text: 'State' }),
        h('th', { scope: 'col', text: 'Variants' }),
        h('th', { scope: 'col', text: 'Targeting' }),
        h('th', { scope: 'col', text: 'Last change' }),
        h('th.col-toggle', { scope: 'col' }, h('span.sr-only', { text: 'On/off' })))),
      h('tbody', rows.map(row)));
    list.append(table);
  }

  function row(f) {
    const d = f.definition || {};
    const on = (d.state || 'ENABLED') === 'ENABLED';
    const href = `#/${enc(ctx.env)}/flags/${enc(f.key)}`;
    const variants = Object.keys(d.variants || {});
    const lc = f.lastChange;
    const toggle = h('button.switch', {
      type: 'button', role: 'switch', aria: { checked: String(on), label: `${f.key} ${on ? 'enabled' : 'disabled'}` },
      title: ctx.can.toggle ? (on ? 'Disable (kill switch)' : 'Enable') : 'Your role cannot turn flags on or off',
      disabled: !ctx.can.toggle,
      onclick: () => toggleFlag(f.key, on),
    }, h('span.switch-knob'));
    return h('tr', { class: on ? '' : 'row-off', dataset: { key: f.key } },
      h('td.cell-key', { dataset: { label: 'Flag' } }, h('a.flag-link', { href }, h('code', { text: f.key })),
        d.metadata && d.metadata.description ? h('div.cell-sub', { text: String(d.metadata.description) }) : null),
      h('td', { dataset: { label: 'State' } }, h(`span.badge.${on ? 'badge-on' : 'badge-off'}`, h('span.dot'), on ? 'Enabled' : 'Disabled')),
      h('td.cell-variants', { dataset: { label: 'Variants' } }, variants.map((v) => h(`span.vchip${v === d.defaultVariant ? '.vchip-default' : ''}`,
        { title: v === d.defaultVariant ? `${v} (default variant)` : v }, v, v === d.defaultVariant ? h('span.vchip-mark', { text: 'default' }) : null))),
      h('td.cell-targeting', { dataset: { label: 'Targeting' } }, h('span', { text: summarize(d) })),
      h('td.cell-change', { dataset: { label: 'Last change' } }, lc
        ? h('span', h('span.vnum', { text: `v${lc.version}` }), ' · ', timeEl(lc.createdAt), ' · by ', h('span.author', { text: lc.author }),
          lc.reason ? h('div.cell-sub', { text: lc.reason, title: lc.reason }) : null)
        : h('span.muted', { text: '—' })),
      h('td.col-toggle', { dataset: { label: 'On/off' } }, toggle));
  }

  /** Enabling is not break-glass: in a protected environment it is a change request. */
  async function proposeEnable(key) {
    const f = data && data.flags.find((x) => x.key === key);
    if (!f) return;
    const req = await proposeDialog(ctx, {
      change: { flags: { [key]: { ...f.definition, state: 'ENABLED' } } },
      title: `Enable ${key}`,
      heading: `Propose: enable ${key}`,
      lead: `Once approved, ${key}’s variants and targeting take effect again.`,
    });
    if (!req || destroyed) return;
    ctx.requestsChanged();
    ctx.navigate(requestsHref(ctx.env, req.id));
  }

  async function toggleFlag(key, on) {
    const action = on ? 'disable' : 'enable';
    const envName = ctx.envInfo.name || ctx.env;
    if (!on && isProtected(ctx.envInfo)) {
      await proposeEnable(key);
      return;
    }
    await reasonDialog({
      title: `${on ? 'Disable' : 'Enable'} ${key} in ${envName}?`,
      lead: on
        ? 'The kill switch: every SDK stops evaluating this flag’s targeting at once and callers get the default value in their code.'
        : 'The flag’s variants and targeting take effect again for every SDK at once.',
      env: ctx.envInfo,
      danger: on,
      body: on ? breakGlassNote(ctx.envInfo) : null,
      confirmLabel: `${on ? 'Disable' : 'Enable'} in ${envName}`,
      errorActions: on ? null : (err, close) => proposeInstead(err, close, async () => {
        await ctx.refreshEnvs({ rerender: false });
        if (!destroyed) proposeEnable(key);
      }),
      submit: async (reason) => {
        const r = await api('POST', envPath(ctx.env, `/flags/${enc(key)}/${action}`), { body: { reason } });
        const review = r.changed && on && isProtected(ctx.envInfo) ? ': a review is open' : '';
        toast(r.changed ? `${key} ${action}d in ${envName} (v${r.version})${review}` : `${key} was already ${action}d`, 'success');
        await load();
        return r;
      },
    });
  }

  function openCreate() {
    createFlagDialog(ctx, (data && data.flags.map((f) => f.key)) || []).then((made) => {
      if (!made) return;
      if (made.request) {
        ctx.requestsChanged();
        ctx.navigate(requestsHref(ctx.env, made.request.id));
      } else ctx.navigate(`#/${enc(ctx.env)}/flags/${enc(made.key)}`);
    });
  }

  load();
  return {
    onChange: (evt) => {
      if (evt.environment === ctx.env) load();
    },
    destroy: () => {
      destroyed = true;
    },
  };
}
