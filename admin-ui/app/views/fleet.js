// Fleet: the SDK instances of this environment and the version each applied, connected
// or unreachable. Polls every second while open; after a change or revert shows
// convergence live.
import { api, envPath, enc } from '../api.js';
import { h, clear, timeEl, absTime, fmtInt, tickTimes } from '../dom.js';
import { errorBox, spinner, envBadge, emptyState, confirmDialog, toast } from '../ui.js';

/** flagd lost its connection without a goodbye: it may still serve what it last applied. */
const isUnreachable = (i) => i.state === 'unreachable';

/** Applied `version` or a later one (an SDK never goes back, even once unreachable). */
const hasApplied = (i, version) => typeof i.appliedVersion === 'number' && i.appliedVersion >= version;

/** "unreachable since 09:14:40, last applied v11", with the exact time as a tooltip. */
function lostLine(i) {
  return h('span.lost-line',
    'unreachable since ',
    h('time', { datetime: i.unreachableSince || '', title: i.unreachableSince || '', text: absTime(i.unreachableSince) || '?' }),
    `, last applied ${i.appliedVersion == null ? 'nothing' : `v${i.appliedVersion}`}`);
}

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
    clearTimeout(timer);
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
      // A poll started early (after a forget) may overlap the timer's: one timer left.
      clearTimeout(timer);
      if (!destroyed) timer = setTimeout(poll, 1000);
    }
  }

  async function forget(i) {
    const gone = await confirmDialog({
      title: `Forget SDK instance ${i.instance}?`,
      lead: [
        'flagd lost its connection ', h('strong', { text: absTime(i.unreachableSince) || '' }),
        ` without a goodbye; it may still be serving v${i.appliedVersion ?? '?'}. `,
        'Forget it only if you know it is gone: until then it counts as not converged. ',
        'If it is still running, it comes back when it reconnects.',
      ],
      confirmLabel: 'Forget',
      danger: true,
      submit: () => api('DELETE', envPath(ctx.env, `/fleet/${enc(i.instance)}`)),
    });
    if (!gone || destroyed) return;
    toast(`Forgot SDK instance ${i.instance}`, 'success');
    poll();
  }

  /** `lost` lagging instances are unreachable: they will not converge by themselves. */
  function progress(done, total, lost, label, sub) {
    const p = total ? Math.round((done / total) * 100) : 100;
    const complete = done >= total;
    let chip;
    if (complete) chip = h('span.chip.chip-current', { text: total ? 'converged' : 'no instances' });
    else if (lost) chip = h('span.chip.chip-lost', { text: `not converged: ${fmtInt(lost)} unreachable` });
    else chip = h('span.chip.chip-behind', { text: 'converging' });
    return h(`div.converge${complete ? '.converge-done' : ''}${!complete && lost ? '.converge-lost' : ''}`,
      h('div.converge-line',
        h('strong', { text: label }),
        h('span.converge-count', { text: `${fmtInt(done)}/${fmtInt(total)} instances applied` }),
        chip),
      h('div.progress', { role: 'progressbar', aria: { valuemin: '0', valuemax: String(total || 0), valuenow: String(done), label } },
        h('div.progress-fill', { vars: { '--pct': `${p}%` } })),
      lost ? h('p.small.lost-note', {
        text: `${fmtInt(lost)} unreachable instance${lost === 1 ? '' : 's'} did not apply it and may still serve an older version: `
          + 'counted as not converged until it reconnects, or is forgotten once known to be gone.',
      }) : null,
      sub ? h('p.muted.small', { text: sub }) : null);
  }

  function render(r) {
    const inst = r.instances || [];
    const unreachable = inst.filter(isUnreachable).length;
    clear(summary);
    if (watch) {
      const done = inst.filter((i) => hasApplied(i, watch.version)).length;
      const lost = inst.filter((i) => isUnreachable(i) && !hasApplied(i, watch.version)).length;
      summary.append(progress(done, inst.length, lost, `${watch.label}${watch.label.startsWith('v') ? '' : ` (v${watch.version})`}`,
        watch.by ? `by ${watch.by}` : null));
    }
    summary.append(h('div.fleet-stats',
      h('div.stat', h('div.stat-num', { text: `${fmtInt(r.onVersion)}/${fmtInt(r.total)}` }), h('div.stat-label', { text: `instances on v${r.version}` })),
      h('div.stat', h('div.stat-num', { text: fmtInt(r.total - r.onVersion) }), h('div.stat-label', { text: 'behind' })),
      h(`div.stat${unreachable ? '.stat-lost' : ''}`, h('div.stat-num', { text: fmtInt(unreachable) }), h('div.stat-label', { text: 'unreachable' })),
      h('div.stat', h('div.stat-num', { text: `v${r.version}` }), h('div.stat-label', { text: 'current version' }))));
    clear(table);
    if (!inst.length) {
      table.append(emptyState('No SDK connected', `No application is connected to ${ctx.envInfo.name || ctx.env} with an SDK key right now.`));
      return;
    }
    // Forgetting is for those who may flip the kill switch (as flagd checks), and only
    // for unreachable instances: flagd would hide a connected one until it reconnects.
    const canForget = Boolean(ctx.can.toggle) && unreachable > 0;
    const head = ['Instance', 'SDK', 'Host', 'Labels', 'Connection', 'Applied version', 'Last ack'];
    const severalReplicas = new Set(inst.map((i) => i.replica)).size > 1;
    if (canForget) head.push('Actions');
    table.append(h('table.table.fleet-table', { aria: { label: `SDK instances in ${ctx.env}` } },
      h('thead', h('tr', head.map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', inst.map((i) => {
        const lost = isUnreachable(i);
        const current = i.appliedVersion === r.version;
        const problems = Array.isArray(i.problems) ? i.problems : [];
        let chip;
        if (lost) chip = h('span.chip.chip-lost', { text: current ? 'unreachable' : 'unreachable, behind' });
        else chip = h(`span.chip.${current ? 'chip-current' : 'chip-behind'}`, { text: current ? 'current' : 'behind' });
        return h(`tr${lost ? '.row-lost' : ''}`, { dataset: { instance: i.instance } },
          h('td', { dataset: { label: 'Instance' } }, h('code', { text: i.instance, title: i.keyName ? `SDK key: ${i.keyName}` : '' }),
            i.keyName ? h('div.cell-sub', { text: `key ${i.keyName}` }) : null),
          h('td', { dataset: { label: 'SDK' } }, h('span', { text: i.sdk || '—' })),
          h('td', { dataset: { label: 'Host' } }, h('span', { text: i.host || '—' })),
          h('td', { dataset: { label: 'Labels' } }, Object.entries(i.labels || {}).map(([k, v]) => h('span.label-chip', { text: `${k}=${v}` }))),
          h('td', { dataset: { label: 'Connection' } }, lost
            ? lostLine(i)
            : h('span', 'connected ', timeEl(i.connectedSince)),
          // With several replicas, which one it streams from (or last did).
          severalReplicas && i.replica ? h('div.cell-sub', { text: `replica ${i.replica}` }) : null),
          h('td', { dataset: { label: 'Applied version' } },
            h('span.vnum', { text: i.appliedVersion == null ? '—' : `v${i.appliedVersion}` }), ' ', chip,
            problems.length ? h('div.cell-sub.problem-note', {
              text: `${problems.length} flag${problems.length === 1 ? '' : 's'} could not load`,
              title: problems.map((p) => `${p.path}: ${p.message}`).join('\n'),
            }) : null,
            i.lastError ? h('div.cell-sub.problem-note', { text: 'could not read an update', title: i.lastError }) : null),
          h('td', { dataset: { label: 'Last ack' } }, timeEl(i.lastAck)),
          canForget ? h('td', { dataset: { label: 'Actions' } }, lost
            ? h('button.btn.btn-sm', { type: 'button', text: 'Forget', aria: { label: `Forget ${i.instance}` }, onclick: () => forget(i) })
            : null) : null);
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
