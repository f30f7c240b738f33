// Fleet: the SDK instances of this environment and the version each applied, connected
// or unreachable. Polls every second while open; after a change or revert shows
// convergence live. OpenFeature flagd providers over gRPC (`"acknowledges": false`)
// cannot say what they applied: they show the version flagd sent them, apart, and
// never count as applied, behind or converged.
import { api, envPath, enc } from '../api.js';
import { h, clear, timeEl, absTime, fmtInt, tickTimes } from '../dom.js';
import { errorBox, spinner, envBadge, emptyState, confirmDialog, toast } from '../ui.js';

/** flagd lost its connection without a goodbye: it may still serve what it last applied. */
const isUnreachable = (i) => i.state === 'unreachable';

/** Applied `version` or a later one (an SDK never goes back, even once unreachable). */
const hasApplied = (i, version) => typeof i.appliedVersion === 'number' && i.appliedVersion >= version;

/** An OpenFeature flagd provider over gRPC: flagd knows what it sent it, never what it applied. */
const isProvider = (i) => i.acknowledges === false;

/** flagd sent this provider `version` or a later one. */
const wasSent = (i, version) => typeof i.sentVersion === 'number' && i.sentVersion >= version;

const PROVIDER_TIP = 'an OpenFeature flagd provider over gRPC: flagd sent it this version; the protocol has no acknowledgement';

const plural = (n, one, many) => (n === 1 ? one : many);

/** "unreachable since 09:14:40, last applied v11", with the exact time as a tooltip. */
function lostLine(i) {
  const what = isProvider(i)
    ? `, last sent ${i.sentVersion == null ? 'nothing' : `v${i.sentVersion}`}`
    : `, last applied ${i.appliedVersion == null ? 'nothing' : `v${i.appliedVersion}`}`;
  return h('span.lost-line',
    'unreachable since ',
    h('time', { datetime: i.unreachableSince || '', title: i.unreachableSince || '', text: absTime(i.unreachableSince) || '?' }),
    what);
}

/** The "Applied version" cell of a provider: what flagd sent it, never "current" or "behind". */
function providerVersion(i, head) {
  const lost = isUnreachable(i);
  const sentHead = wasSent(i, head);
  return [
    h('span.vnum', { text: i.sentVersion == null ? 'nothing sent' : `sent v${i.sentVersion}`, title: PROVIDER_TIP }), ' ',
    h('span.chip.chip-unacked', { text: 'not acknowledged', title: PROVIDER_TIP }),
    lost ? h('span.chip.chip-lost', { text: sentHead ? 'unreachable' : `unreachable, not sent v${head}` }) : null,
    !lost && !sentHead && !i.lastError ? h('div.cell-sub', { text: `not yet sent v${head}` }) : null,
  ];
}

/** The progress line about providers: what they were sent, and that they cannot say more. */
function providerLine(providers, version) {
  const n = providers.length;
  const sent = providers.filter((i) => wasSent(i, version)).length;
  const who = (k) => `${fmtInt(k)} OpenFeature flagd ${plural(k, 'provider', 'providers')} (gRPC)`;
  let text;
  if (sent === n) text = `${who(n)} ${plural(n, 'was', 'were')} sent v${version}; ${plural(n, 'it cannot', 'they cannot')} acknowledge it`;
  else if (sent === 0) text = `${who(n)} not yet sent v${version}; ${plural(n, 'it cannot', 'they cannot')} acknowledge it`;
  else text = `${who(sent)} ${plural(sent, 'was', 'were')} sent v${version}, ${fmtInt(n - sent)} not yet; providers cannot acknowledge it`;
  return h('p.small.provider-note', { text, title: PROVIDER_TIP });
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
      lead: isProvider(i) ? [
        'flagd lost its connection ', h('strong', { text: absTime(i.unreachableSince) || '' }),
        ` to this OpenFeature flagd provider; it was last sent v${i.sentVersion ?? '?'} and may still be serving it. `,
        'Forget it only if you know it is gone. ',
        'If it is still running, it comes back (as a new instance) when it reconnects.',
      ] : [
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

  /**
   * `done` of the `total` instances that acknowledge applied it; `lost` lagging instances
   * are unreachable: they will not converge by themselves. `providers` (those that cannot
   * acknowledge) are counted apart: at best they were sent it, never converged.
   */
  function progress(done, total, lost, label, sub, { providers = [], version, lostProviders = 0 } = {}) {
    const p = total ? Math.round((done / total) * 100) : 100;
    const allSent = providers.every((i) => wasSent(i, version));
    const applied = done >= total;
    const complete = applied && allSent;
    const lostAll = lost + lostProviders;
    let chip;
    if (complete && providers.length) chip = h('span.chip.chip-unacked', { text: 'sent · not acknowledged', title: PROVIDER_TIP });
    else if (complete) chip = h('span.chip.chip-current', { text: total ? 'converged' : 'no instances' });
    else if (lostAll) chip = h('span.chip.chip-lost', { text: `not converged: ${fmtInt(lostAll)} unreachable` });
    else chip = h('span.chip.chip-behind', { text: 'converging' });
    const cls = complete ? (providers.length ? '.converge-sent' : '.converge-done') : (lostAll ? '.converge-lost' : '');
    const what = providers.length ? 'acknowledging instances applied' : 'instances applied';
    return h(`div.converge${cls}`,
      h('div.converge-line',
        h('strong', { text: label }),
        h('span.converge-count', { text: `${fmtInt(done)}/${fmtInt(total)} ${what}` }),
        chip),
      h('div.progress', { role: 'progressbar', aria: { valuemin: '0', valuemax: String(total || 0), valuenow: String(done), label } },
        h('div.progress-fill', { vars: { '--pct': `${p}%` } })),
      lost ? h('p.small.lost-note', {
        text: `${fmtInt(lost)} unreachable instance${lost === 1 ? '' : 's'} did not apply it and may still serve an older version: `
          + 'counted as not converged until it reconnects, or is forgotten once known to be gone.',
      }) : null,
      lostProviders ? h('p.small.lost-note', {
        text: `${fmtInt(lostProviders)} unreachable ${plural(lostProviders, 'provider was', 'providers were')} not sent it and may still serve an older version, `
          + 'until it reconnects, or is forgotten once known to be gone.',
      }) : null,
      providers.length ? providerLine(providers, version) : null,
      sub ? h('p.muted.small', { text: sub }) : null);
  }

  function render(r) {
    const inst = r.instances || [];
    const unreachable = inst.filter(isUnreachable).length;
    const providers = inst.filter(isProvider);
    const acking = inst.filter((i) => !isProvider(i));
    clear(summary);
    if (watch) {
      const v = watch.version;
      const done = acking.filter((i) => hasApplied(i, v)).length;
      const lost = acking.filter((i) => isUnreachable(i) && !hasApplied(i, v)).length;
      const lostProviders = providers.filter((i) => isUnreachable(i) && !wasSent(i, v)).length;
      summary.append(progress(done, acking.length, lost, `${watch.label}${watch.label.startsWith('v') ? '' : ` (v${v})`}`,
        watch.by ? `by ${watch.by}` : null, { providers, version: v, lostProviders }));
    }
    // Providers never count as on the version, nor as behind: a stat of their own.
    const total = r.total - providers.length;
    const sentHead = providers.filter((i) => wasSent(i, r.version)).length;
    summary.append(h(`div.fleet-stats${providers.length ? '.fleet-stats-5' : ''}`,
      h('div.stat', h('div.stat-num', { text: `${fmtInt(r.onVersion)}/${fmtInt(total)}` }),
        h('div.stat-label', { text: providers.length ? `acknowledging instances on v${r.version}` : `instances on v${r.version}` })),
      h('div.stat', h('div.stat-num', { text: fmtInt(Math.max(0, total - r.onVersion)) }), h('div.stat-label', { text: 'behind' })),
      providers.length ? h('div.stat.stat-providers', { title: PROVIDER_TIP },
        h('div.stat-num', { text: fmtInt(providers.length) }),
        h('div.stat-label', {
          text: `gRPC ${plural(providers.length, 'provider', 'providers')}, ${sentHead === providers.length ? '' : `${fmtInt(sentHead)} `}sent v${r.version}`,
        })) : null,
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
        const provider = isProvider(i);
        const current = i.appliedVersion === r.version;
        const problems = Array.isArray(i.problems) ? i.problems : [];
        let chip;
        if (lost) chip = h('span.chip.chip-lost', { text: current ? 'unreachable' : 'unreachable, behind' });
        else chip = h(`span.chip.${current ? 'chip-current' : 'chip-behind'}`, { text: current ? 'current' : 'behind' });
        return h(`tr${lost ? '.row-lost' : ''}${provider ? '.row-provider' : ''}`, { dataset: { instance: i.instance } },
          h('td', { dataset: { label: 'Instance' } }, h('code', { text: i.instance, title: i.keyName ? `SDK key: ${i.keyName}` : '' }),
            i.keyName ? h('div.cell-sub', { text: `key ${i.keyName}` }) : null),
          h('td', { dataset: { label: 'SDK' } }, h('span', { text: i.sdk || '—' }),
            provider ? h('div.cell-sub', { text: 'OpenFeature flagd provider (gRPC)', title: PROVIDER_TIP }) : null),
          h('td', { dataset: { label: 'Host' } }, h('span', { text: i.host || '—' })),
          h('td', { dataset: { label: 'Labels' } }, Object.entries(i.labels || {}).map(([k, v]) => h('span.label-chip', { text: `${k}=${v}` }))),
          h('td', { dataset: { label: 'Connection' } }, lost
            ? lostLine(i)
            : h('span', 'connected ', timeEl(i.connectedSince)),
          // With several replicas, which one it streams from (or last did).
          severalReplicas && i.replica ? h('div.cell-sub', { text: `replica ${i.replica}` }) : null),
          h('td', { dataset: { label: 'Applied version' } },
            provider ? providerVersion(i, r.version) : [h('span.vnum', { text: i.appliedVersion == null ? '—' : `v${i.appliedVersion}` }), ' ', chip],
            problems.length ? h('div.cell-sub.problem-note', {
              text: `${problems.length} flag${problems.length === 1 ? '' : 's'} could not load`,
              title: problems.map((p) => `${p.path}: ${p.message}`).join('\n'),
            }) : null,
            i.lastError ? h('div.cell-sub.problem-note', {
              text: provider ? 'could not be sent' : 'could not read an update', title: i.lastError,
            }) : null),
          h('td', { dataset: { label: 'Last ack' } }, provider
            ? h('span.muted', { text: 'never', title: 'this protocol has no acknowledgement' })
            : timeEl(i.lastAck)),
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
