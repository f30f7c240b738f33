// History: every version of the environment, newest first; pick two to diff; undo one
// version's change, or revert to a version.
import { api, envPath, enc, qs } from '../api.js';
import { h, clear, icon, timeEl, nextId } from '../dom.js';
import { errorBox, spinner, kindBadge, envBadge, emptyState } from '../ui.js';
import { revertDialog } from './revert.js';
import { undoDialog } from './undo.js';
import { protectedBadge, requestsHref } from '../approvals.js';

const PAGE = 50;

export function mount(root, ctx) {
  ctx.setTitle('History');
  let versions = [];
  let next = null;
  let head = null;
  const selected = new Set();
  let destroyed = false;

  const compareBtn = h('button.btn.btn-primary', { type: 'button', onclick: compare }, icon('diff'), h('span.cmp-label', { text: 'Compare' }));
  const hint = h('span.muted.small', { aria: { live: 'polite' } });
  root.append(
    h('div.page-head',
      h('div.page-title', h('h1', { text: 'History' }), envBadge(ctx.envInfo), protectedBadge(ctx.envInfo), h('span.count.head-count')),
      h('div.page-actions', hint, compareBtn)));
  const errSlot = h('div');
  const list = h('div.list-wrap', spinner());
  const more = h('div.more');
  root.append(errSlot, list, more);

  function syncCompare() {
    const s = [...selected].sort((a, b) => a - b);
    compareBtn.disabled = s.length !== 2;
    compareBtn.querySelector('.cmp-label').textContent = s.length === 2 ? `Compare v${s[0]} → v${s[1]}` : 'Compare';
    hint.textContent = s.length === 2 ? '' : s.length === 1 ? 'Select one more version' : 'Select two versions to compare';
  }

  function compare() {
    const s = [...selected].sort((a, b) => a - b);
    if (s.length === 2) ctx.navigate(`#/${enc(ctx.env)}/history/diff?from=${s[0]}&to=${s[1]}`);
  }

  async function load(reset = true) {
    try {
      const r = await api('GET', envPath(ctx.env, `/versions${qs({ limit: PAGE, before: reset ? undefined : next })}`));
      if (destroyed) return;
      versions = reset ? r.versions || [] : versions.concat(r.versions || []);
      next = r.next ?? null;
      if (reset && versions.length) {
        head = versions[0].version;
        ctx.setEnvVersion(head);
      }
      clear(errSlot);
      render();
    } catch (err) {
      if (destroyed) return;
      clear(errSlot).append(errorBox(err, { title: 'Could not load the history' }));
      if (!versions.length) clear(list);
    }
  }

  function render() {
    const cnt = root.querySelector('.head-count');
    cnt.textContent = head ? `head v${head}` : '';
    clear(list);
    clear(more);
    syncCompare();
    if (!versions.length) {
      list.append(emptyState('No versions yet', 'Every change to this environment’s flags makes a version.'));
      return;
    }
    const tbody = h('tbody');
    for (const v of versions) {
      const cb = h('input', { type: 'checkbox', id: nextId('sel'), aria: { label: `Select v${v.version} to compare` } });
      cb.checked = selected.has(v.version);
      cb.addEventListener('change', () => {
        if (cb.checked) {
          selected.add(v.version);
          if (selected.size > 2) {
            const first = [...selected][0];
            selected.delete(first);
            const other = list.querySelector(`input[data-version="${first}"]`);
            if (other) other.checked = false;
          }
        } else selected.delete(v.version);
        syncCompare();
      });
      cb.dataset.version = String(v.version);
      const isHead = v.version === head;
      tbody.append(h('tr', { class: isHead ? 'row-head' : '' },
        h('td.col-check', { dataset: { label: 'Compare' } }, cb),
        h('td', { dataset: { label: 'Version' } }, h('span.vnum.vnum-lg', { text: `v${v.version}` }), isHead ? h('span.chip.chip-current', { text: 'head' }) : null),
        h('td', { dataset: { label: 'Kind' } }, kindBadge(v.kind), v.revertedTo ? h('span.muted.small', { text: ` to v${v.revertedTo}` }) : null),
        h('td', { dataset: { label: 'Author' } }, h('span.author', { text: v.author })),
        h('td', { dataset: { label: 'When' } }, timeEl(v.createdAt)),
        h('td.cell-reason', { dataset: { label: 'Reason' } }, v.reason ? h('span', { text: v.reason }) : h('span.muted', { text: '—' })),
        h('td', { dataset: { label: 'Flags' } }, (v.changedFlags || []).map((k) => h('a.flag-chip', { href: `#/${enc(ctx.env)}/flags/${enc(k)}`, text: k }))),
        h('td.col-actions', { dataset: { label: 'Actions' } },
          h('a.btn.btn-sm.btn-ghost', { href: `#/${enc(ctx.env)}/history/diff?from=${Math.max(0, v.version - 1)}&to=${v.version}`, aria: { label: `Show the changes of v${v.version}` }, text: 'Changes' }),
          // Undo this row's change alone (what an incident usually needs), or make the
          // whole set equal this version (which also drops every later change).
          ctx.can.revert
            ? h('button.btn.btn-sm', { type: 'button', aria: { label: `Undo v${v.version}` }, onclick: () => undo(v.version) }, icon('revert'), h('span', { text: 'Undo this change' }))
            : null,
          ctx.can.revert && !isHead
            ? h('button.btn.btn-sm.btn-ghost', { type: 'button', aria: { label: `Revert to v${v.version}` }, onclick: () => revertTo(v.version) }, h('span', { text: 'Revert to this version' }))
            : null)));
    }
    list.append(h('table.table.history-table', { aria: { label: `Versions of ${ctx.env}` } },
      h('thead', h('tr',
        h('th.col-check', { scope: 'col' }, h('span.sr-only', { text: 'Select' })),
        ['Version', 'Kind', 'Author', 'When', 'Reason', 'Changed flags'].map((t) => h('th', { scope: 'col', text: t })),
        h('th', { scope: 'col' }, h('span.sr-only', { text: 'Actions' })))),
      tbody));
    if (next !== null) more.append(h('button.btn', { type: 'button', text: 'Load older versions', onclick: () => load(false) }));
  }

  function undo(version) {
    undoDialog(ctx, version, head).then((r) => {
      if (r && r.request) {
        ctx.requestsChanged();
        ctx.navigate(requestsHref(ctx.env, r.request.id));
      } else if (r && r.changed !== false) ctx.navigate(`#/${enc(ctx.env)}/fleet?after=${r.version}`);
    });
  }

  function revertTo(version) {
    revertDialog(ctx, version, head).then((r) => {
      if (r) ctx.navigate(`#/${enc(ctx.env)}/fleet?after=${r.version}&revertedTo=${version}`);
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
