// Fleet: the SDK instances connected to this environment and the version each applied.
// Polls every second while open; after a change or revert shows convergence live.
import { api, envPath } from '../api.js';
import { h, clear, timeEl, fmtInt, tickTimes } from '../dom.js';
import { errorBox, spinner, envBadge, emptyState } from '../ui.js';

export function mount(root, ctx) {
  ctx.setTitle('Fleet');
  const q = ctx.route.query;
  let watch = q.after ? {
    version: Number(q.after),
    label: q.revertedTo ? `Revert to v${q.revertedTo}` : `v${q.after}`,
  } : null;
  let timer = null;
  let destroyed = false;
  let last = null;

  const summary = h('div.fleet-summary', { aria: { live: 'polite' } });
  const errSlot = h('div');
  const table = h('div.list-wrap', spinner());
  root.append(
    h('div.page-head',
      h('div.page-title', h('h1', { text: 'Fleet' }), envBadge(ctx.envInfo), h('span.count', { text: 'SDK instances, live' }))),
    summary, errSlot, table);

  async function poll() {
    try {
      const r = await api('GET', envPath(ctx.env, '/fleet'));
      if (destroyed) return;
      last = r;
      ctx.setEnvVersion(r.version);
      clear(errSlot);
      render(r);
    } catch (err) {
      if (destroyed) return;
      clear(errSlot).append(errorBox(err, { title: 'Could not load the fleet' }));
    } finally {
      if (!destroyed) timer = setTimeout(poll, 1000);
    }
  }

  function progress(done, total, label, sub) {
    const p = total ? Math.round((done / total) * 100) : 100;
    const complete = done >= total;
    return h(`div.converge${complete ? '.converge-done' : ''}`,
      h('div.converge-line',
        h('strong', { text: label }),
        h('span.converge-count', { text: `${fmtInt(done)}/${fmtInt(total)} instances applied` }),
        complete ? h('span.chip.chip-current', { text: total ? 'converged' : 'no instances' }) : h('span.chip.chip-behind', { text: 'converging' })),
      h('div.progress', { role: 'progressbar', aria: { valuemin: '0', valuemax: String(total || 0), valuenow: String(done), label } },
        h('div.progress-fill', { vars: { '--pct': `${p}%` } })),
      sub ? h('p.muted.small', { text: sub }) : null);
  }

  function render(r) {
    const inst = r.instances || [];
    clear(summary);
    if (watch) {
      const done = inst.filter((i) => typeof i.appliedVersion === 'number' && i.appliedVersion >= watch.version).length;
      summary.append(progress(done, inst.length, `${watch.label}${watch.label.startsWith('v') ? '' : ` (v${watch.version})`}`,
        watch.by ? `by ${watch.by}` : null));
    }
    summary.append(h('div.fleet-stats',
      h('div.stat', h('div.stat-num', { text: `${fmtInt(r.onVersion)}/${fmtInt(r.total)}` }), h('div.stat-label', { text: `instances on v${r.version}` })),
      h('div.stat', h('div.stat-num', { text: fmtInt(r.total - r.onVersion) }), h('div.stat-label', { text: 'behind' })),
      h('div.stat', h('div.stat-num', { text: `v${r.version}` }), h('div.stat-label', { text: 'current version' }))));
    clear(table);
    if (!inst.length) {
      table.append(emptyState('No SDK connected', `No application is connected to ${ctx.envInfo.name || ctx.env} with an SDK key right now.`));
      return;
    }
    table.append(h('table.table.fleet-table', { aria: { label: `SDK instances in ${ctx.env}` } },
      h('thead', h('tr', ['Instance', 'SDK', 'Host', 'Labels', 'Connected since', 'Applied version', 'Last ack'].map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', inst.map((i) => {
        const current = i.appliedVersion === r.version;
        return h('tr',
          h('td', { dataset: { label: 'Instance' } }, h('code', { text: i.instance, title: i.keyName ? `SDK key: ${i.keyName}` : '' }),
            i.keyName ? h('div.cell-sub', { text: `key ${i.keyName}` }) : null),
          h('td', { dataset: { label: 'SDK' } }, h('span', { text: i.sdk || '—' })),
          h('td', { dataset: { label: 'Host' } }, h('span', { text: i.host || '—' })),
          h('td', { dataset: { label: 'Labels' } }, Object.entries(i.labels || {}).map(([k, v]) => h('span.label-chip', { text: `${k}=${v}` }))),
          h('td', { dataset: { label: 'Connected since' } }, timeEl(i.connectedSince)),
          h('td', { dataset: { label: 'Applied version' } },
            h('span.vnum', { text: i.appliedVersion == null ? '—' : `v${i.appliedVersion}` }), ' ',
            h(`span.chip.${current ? 'chip-current' : 'chip-behind'}`, { text: current ? 'current' : 'behind' })),
          h('td', { dataset: { label: 'Last ack' } }, timeEl(i.lastAck)));
      }))));
    tickTimes(table);
  }

  poll();
  return {
    onChange: (evt) => {
      if (evt.environment !== ctx.env) return;
      if (watch && evt.version <= watch.version) {
        // The change we are already following (e.g. our own revert): keep its label.
        if (evt.version === watch.version && !watch.by) watch.by = evt.author;
      } else {
        watch = { version: evt.version, label: `v${evt.version} ${evt.kind}`, by: evt.author };
      }
      if (last) render(last);
    },
    destroy: () => {
      destroyed = true;
      clearTimeout(timer);
    },
  };
}
