// Diff of two versions: added / removed / changed flags with a line diff each.
import { api, envPath, enc, qs } from '../api.js';
import { h, clear, field, icon } from '../dom.js';
import { errorBox, spinner, diffList, envBadge } from '../ui.js';
import { revertDialog } from './revert.js';

export function mount(root, ctx) {
  const q = ctx.route.query;
  const from = Number(q.from);
  const to = q.to !== undefined && q.to !== '' ? Number(q.to) : null;
  ctx.setTitle(`Diff v${from} → ${to === null ? 'head' : `v${to}`}`);
  let destroyed = false;

  const fromIn = h('input.input.num-input', { type: 'number', min: '0', step: '1', value: Number.isFinite(from) ? String(from) : '' });
  const toIn = h('input.input.num-input', { type: 'number', min: '0', step: '1', value: to === null ? '' : String(to), placeholder: 'head' });
  const form = h('form.toolbar', { aria: { label: 'Versions to compare' } },
    field('From version', fromIn), field('To version', toIn),
    h('button.btn', { type: 'submit', text: 'Compare' }));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    ctx.navigate(`#/${enc(ctx.env)}/history/diff${qs({ from: fromIn.value, to: toIn.value })}`);
  });
  const actions = h('div.page-actions');
  root.append(
    h('a.back', { href: `#/${enc(ctx.env)}/history` }, icon('back'), h('span', { text: 'History' })),
    h('div.page-head',
      h('div.page-title', h('h1', { text: `Changes v${from} → ${to === null ? 'head' : `v${to}`}` }), envBadge(ctx.envInfo)),
      actions),
    form);
  const out = h('div.diff-out', spinner());
  root.append(out);

  async function load() {
    if (!Number.isFinite(from)) {
      clear(out).append(h('p.muted', { text: 'Choose two versions.' }));
      return;
    }
    try {
      const d = await api('GET', envPath(ctx.env, `/diff${qs({ from, to: to === null ? undefined : to })}`));
      if (destroyed) return;
      const n = d.changes.length;
      const counts = { added: 0, removed: 0, changed: 0 };
      for (const c of d.changes) counts[c.change] = (counts[c.change] || 0) + 1;
      clear(out).append(
        h('div.diff-stats',
          h('span', { text: n === 1 ? '1 flag differs' : `${n} flags differ` }),
          counts.added ? h('span.chg.chg-added', { text: `${counts.added} added` }) : null,
          counts.removed ? h('span.chg.chg-removed', { text: `${counts.removed} removed` }) : null,
          counts.changed ? h('span.chg.chg-changed', { text: `${counts.changed} changed` }) : null),
        diffList(d));
      clear(actions);
      if (ctx.can.revert) {
        actions.append(h('button.btn', {
          type: 'button',
          onclick: () => revertDialog(ctx, from).then((r) => {
            if (r) ctx.navigate(`#/${enc(ctx.env)}/fleet?after=${r.version}&revertedTo=${from}`);
          }),
        }, icon('revert'), h('span', { text: `Revert to v${from}` })));
      }
    } catch (err) {
      if (!destroyed) clear(out).append(errorBox(err, { title: 'Could not compute the diff' }));
    }
  }

  load();
  return {
    destroy: () => {
      destroyed = true;
    },
  };
}
