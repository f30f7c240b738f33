// Requests: the change requests of one environment (proposed changes waiting for other
// people's approvals) and its break-glass reviews (kill switches, reverts and undos that
// applied without approval and wait for someone else to acknowledge them). A request's
// page: its diff, its history, and what the signed-in person may do with it.
// flagd sends no events for requests: each view reads them again after every action
// and on every version event.
import { api, envPath, enc } from '../api.js';
import { h, clear, field, icon, timeEl, tickTimes, nextId } from '../dom.js';
import { errorBox, spinner, envBadge, emptyState, toast, attachDialog, confirmDialog, diffList, jsonBlock } from '../ui.js';
import { protectedBadge, requestsHref, isProtected, envName } from '../approvals.js';

const STATE_CHIP = {
  open: 'chip-open', applied: 'chip-current', rejected: 'chip-lost', stale: 'chip-behind', withdrawn: 'chip-muted',
};

const STATES = ['open', 'stale', 'applied', 'rejected', 'withdrawn'];

function stateChip(state) {
  return h(`span.chip.state-chip.${STATE_CHIP[state] || 'chip-muted'}`, { text: state });
}

function approvalsText(req) {
  return `${(req.approvedBy || []).length} of ${req.approvalsRequired}`;
}

/** What a request changes, in a few words. */
function changeText(change) {
  if (!change) return '';
  if (change.flags) {
    const keys = Object.keys(change.flags);
    const parts = keys.slice(0, 4).map((k) => (change.flags[k] === null ? `delete ${k}` : k));
    return `${parts.join(', ')}${keys.length > 4 ? ` and ${keys.length - 4} more` : ''}`;
  }
  if (change.document) return 'the whole flag set';
  if (change.plan) return `a release plan for ${change.plan.flag}`;
  if (change.schedule) return 'a scheduled change';
  return Object.keys(change).join(', ');
}

const REVIEW_ACTIONS = {
  'flag.disable': 'Kill switch',
  'flagset.revert': 'Revert',
  'flagset.undo': 'Undo',
  'alert.disable': 'Kill switch by an alert',
  'alert.revert': 'Revert by an alert',
  'trigger.fire': 'Kill switch by a trigger',
};

function reviewWhat(r) {
  const label = REVIEW_ACTIONS[r.action] || r.action;
  const onFlag = /^(flag|alert|trigger)\./.test(r.action) && r.action !== 'alert.revert';
  return h('span', { title: r.action },
    h('strong', { text: label }), ' ',
    r.target ? (onFlag ? h('code', { text: r.target }) : h('span.muted', { text: `of ${r.target}` })) : null);
}

/**
 * Wraps a view's load(): a call while one runs makes one more run after it, not a
 * second at once (an action's reload and a version event's often come together).
 */
function coalesced(load) {
  let running = null;
  let again = false;
  const run = async () => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await load();
      } while (again);
    })();
    try {
      await running;
    } finally {
      running = null;
    }
  };
  return run;
}

/** The changes of one version, in History. */
function versionHref(env, v) {
  return `#/${enc(env)}/history/diff?from=${Math.max(0, v - 1)}&to=${v}`;
}

/**
 * A dialog with an optional or required comment; `submit(comment)` runs the action and
 * its error stays in the dialog. Resolves to submit's result, or null.
 */
function commentDialog({ title, lead, label = 'Comment', required = false, confirmLabel, danger = false, submit }) {
  return new Promise((resolve) => {
    const input = h('textarea.input', { name: 'comment', rows: 3, required: required || undefined, aria: { required: required ? 'true' : undefined } });
    const errSlot = h('div.dialog-error');
    const ok = h(`button.btn.${danger ? 'btn-danger' : 'btn-primary'}`, { type: 'submit', text: confirmLabel });
    const cancel = h('button.btn', { type: 'button', text: 'Cancel' });
    const titleId = nextId('dlgt');
    const dlg = h('dialog.dialog', { aria: { labelledby: titleId } });
    const form = h('form', { novalidate: true },
      h('div.dialog-head', h('h2', { id: titleId, text: title })),
      h('div.dialog-body', lead ? h('p.lead', { text: lead }) : null,
        field(required ? `${label} (required)` : `${label} (optional)`, input), errSlot),
      h('div.dialog-foot', cancel, ok));
    dlg.append(form);
    const finish = attachDialog(dlg, cancel, resolve);
    const sync = () => {
      ok.disabled = required && !input.value.trim();
    };
    input.addEventListener('input', sync);
    sync();
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const comment = input.value.trim();
      if (required && !comment) return;
      ok.disabled = true;
      ok.classList.add('busy');
      clear(errSlot);
      try {
        const r = await submit(comment);
        finish(r === undefined ? true : r);
      } catch (err) {
        errSlot.append(errorBox(err));
        ok.classList.remove('busy');
        ok.disabled = false;
        sync();
      }
    });
    dlg.showModal();
    input.focus();
  });
}

/** Why the signed-in caller may not review (approve, reject) this request at all; null when they may. */
function cannotReview(ctx, req) {
  const s = ctx.session;
  if (req.author === s.name) return 'You proposed this: approvals must come from other people.';
  if (!ctx.can.approve) {
    if (!s.person && (s.role === 'editor' || s.role === 'admin')) return 'Approvals come from people: this access token names no one. Sign in with your own account.';
    return `Your role (${s.role}) cannot approve: approvals come from editors and admins, signed in as themselves.`;
  }
  return null;
}

function head(ctx, title, extra) {
  return h('div.page-title', h('h1', { text: title }), envBadge(ctx.envInfo), protectedBadge(ctx.envInfo), extra);
}

export function mount(root, ctx) {
  return ctx.route.view === 'request' ? mountRequest(root, ctx) : mountList(root, ctx);
}

// ---- the list: change requests and break-glass reviews ---------------------------------

function mountList(root, ctx) {
  ctx.setTitle('Requests');
  let destroyed = false;
  let requests = null;
  let reviews = null;
  const filter = h('select.input', { aria: { label: 'Show requests' } },
    h('option', { value: 'all', text: 'All states' }),
    STATES.map((st) => h('option', { value: st, text: st[0].toUpperCase() + st.slice(1) })));
  filter.value = STATES.includes(ctx.route.query.state) ? ctx.route.query.state : 'all';
  filter.addEventListener('change', () => {
    history.replaceState(null, '', `${requestsHref(ctx.env)}${filter.value === 'all' ? '' : `?state=${filter.value}`}`);
    renderRequests();
  });
  const count = h('span.count');
  const errSlot = h('div');
  const reqList = h('div.list-wrap', spinner());
  const reviewSlot = h('div', spinner());
  const policyBtn = ctx.can.admin
    ? h('button.btn', { type: 'button', onclick: () => ctx.editPolicy() }, icon('lock'), h('span', { text: 'Approval setting' }))
    : null;
  // The DOM's own append writes null as text: h() leaves it out.
  root.append(h('div.requests-page',
    h('div.page-head', head(ctx, 'Requests', count), h('div.page-actions', policyBtn)),
    isProtected(ctx.envInfo) ? null : h('p.muted.small.unprotected-note', { text: `${envName(ctx.envInfo)} is not protected: changes apply at once. Requests proposed here still wait for their approvals.` }),
    errSlot,
    h('section.req-section', { aria: { labelledby: 'sec-requests' } },
      h('div.section-head', h('h2', { id: 'sec-requests', text: 'Change requests' }), h('div.toolbar.toolbar-tight', filter)),
      reqList),
    h('section.req-section', { aria: { labelledby: 'sec-reviews' } },
      h('div.section-head', h('h2', { id: 'sec-reviews', text: 'Break-glass reviews' }),
        h('span.muted.small', { text: 'kill switches, reverts and undos that applied without approval' })),
      reviewSlot)));

  const load = coalesced(async () => {
    try {
      const [rq, rv] = await Promise.all([
        api('GET', envPath(ctx.env, '/change-requests')),
        api('GET', envPath(ctx.env, '/reviews')),
      ]);
      if (destroyed) return;
      requests = rq.requests || [];
      reviews = rv.reviews || [];
      clear(errSlot);
      renderRequests();
      renderReviews();
    } catch (err) {
      if (destroyed) return;
      clear(errSlot).append(errorBox(err, { title: 'Could not load the requests' }));
      if (!requests) clear(reqList);
      if (!reviews) clear(reviewSlot);
    }
  });

  function renderRequests() {
    if (!requests) return;
    const open = requests.filter((r) => r.state === 'open').length;
    count.textContent = `${open} open · ${requests.length} in all`;
    clear(reqList);
    const rows = requests.filter((r) => filter.value === 'all' || r.state === filter.value);
    if (!requests.length) {
      reqList.append(emptyState('No change requests yet', isProtected(ctx.envInfo)
        ? 'Changes to this environment’s flags are proposed from the flag pages (“Propose change”) and listed here.'
        : 'This environment is not protected: changes apply at once.'));
      return;
    }
    if (!rows.length) {
      reqList.append(emptyState(`No ${filter.value} request`, 'Choose another state.'));
      return;
    }
    const head = ctx.envInfo && ctx.envInfo.version;
    reqList.append(h('table.table.requests-table', { aria: { label: `Change requests of ${ctx.env}` } },
      h('thead', h('tr', ['State', 'Approvals', 'Title', 'Author', 'Proposed'].map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', rows.map((r) => {
        const moved = r.state === 'open' && typeof head === 'number' && r.baseVersion !== head;
        return h('tr', { dataset: { id: r.id } },
          h('td', { dataset: { label: 'State' } }, stateChip(r.state),
            moved ? h('span.chip.chip-behind', { text: 'needs update', title: `Based on v${r.baseVersion}; the flag set is at v${head}` }) : null),
          h('td', { dataset: { label: 'Approvals' } }, h('span.approvals', { text: approvalsText(r), title: (r.approvedBy || []).length ? `Approved by ${r.approvedBy.join(', ')}` : 'No approval yet' })),
          h('td.cell-key', { dataset: { label: 'Title' } },
            h('a.request-link', { href: requestsHref(ctx.env, r.id), text: r.title }),
            h('div.cell-sub', { text: changeText(r.change) })),
          h('td', { dataset: { label: 'Author' } }, h('span.author', { text: r.author })),
          h('td', { dataset: { label: 'Proposed' } }, timeEl(r.createdAt)));
      }))));
    tickTimes(reqList);
  }

  function renderReviews() {
    if (!reviews) return;
    clear(reviewSlot);
    if (!reviews.length) {
      reviewSlot.append(h('div.list-wrap', emptyState('No break-glass reviews', isProtected(ctx.envInfo)
        ? 'A kill switch, a revert or an undo of the last version made here without approval opens one.'
        : 'Reviews are opened in protected environments only.')));
      return;
    }
    const open = reviews.filter((r) => !r.acknowledgedBy);
    const done = reviews.filter((r) => r.acknowledgedBy);
    const me = ctx.session.name;
    const cells = (r) => [
      h('td', { dataset: { label: 'Who' } }, h('span.author', { text: r.actor })),
      h('td', { dataset: { label: 'What' } }, reviewWhat(r)),
      h('td', { dataset: { label: 'Version' } }, h('a.vnum', { href: versionHref(ctx.env, r.version), text: `v${r.version}`, aria: { label: `The changes of v${r.version}` } })),
      h('td.cell-reason', { dataset: { label: 'Why' } }, r.reason ? h('span', { text: r.reason }) : h('span.muted', { text: '—' })),
      h('td', { dataset: { label: 'When' } }, timeEl(r.createdAt)),
    ];
    reviewSlot.append(h('h3', { text: `To acknowledge (${open.length})` }));
    if (!ctx.can.approve && open.length) {
      reviewSlot.append(h('p.muted.small', { text: 'Reviews are acknowledged by editors and admins other than who acted, signed in as themselves.' }));
    }
    reviewSlot.append(open.length
      ? h('div.list-wrap', h('table.table.reviews-table', { aria: { label: 'Reviews to acknowledge' } },
        h('thead', h('tr', ['Who', 'What', 'Version', 'Why', 'When'].map((t) => h('th', { scope: 'col', text: t })),
          h('th.col-actions', { scope: 'col' }, h('span.sr-only', { text: 'Actions' })))),
        h('tbody', open.map((r) => h('tr', { dataset: { id: r.id } }, cells(r),
          h('td.col-actions', { dataset: { label: 'Actions' } },
            !ctx.can.approve ? null
              : r.actor === me
                ? h('span', h('button.btn.btn-sm', { type: 'button', text: 'Acknowledge', disabled: true, aria: { label: `Acknowledge v${r.version}` } }),
                  h('div.cell-sub', { text: 'you did this: someone else acknowledges it' }))
                : h('button.btn.btn-sm.btn-primary', { type: 'button', text: 'Acknowledge', aria: { label: `Acknowledge v${r.version}` }, onclick: () => acknowledge(r) })))))))
      : h('p.muted.small', { text: 'Nothing waits for acknowledgement.' }));
    if (done.length) {
      reviewSlot.append(h('h3', { text: `Acknowledged (${done.length})` }),
        h('div.list-wrap', h('table.table.reviews-table.reviews-done', { aria: { label: 'Acknowledged reviews' } },
          h('thead', h('tr', ['Who', 'What', 'Version', 'Why', 'When', 'Acknowledged'].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', done.map((r) => h('tr', { dataset: { id: r.id } }, cells(r),
            h('td', { dataset: { label: 'Acknowledged' } },
              h('span', 'by ', h('span.author', { text: r.acknowledgedBy }), ' · ', timeEl(r.acknowledgedAt)),
              r.note ? h('div.cell-sub', { text: r.note, title: r.note }) : null)))))));
    }
    tickTimes(reviewSlot);
  }

  async function acknowledge(r) {
    const done = await commentDialog({
      title: `Acknowledge v${r.version} by ${r.actor}?`,
      lead: `${REVIEW_ACTIONS[r.action] || r.action}${r.target ? ` (${r.target})` : ''}: “${r.reason || 'no reason'}”. Acknowledging records that you looked at it.`,
      label: 'Note',
      confirmLabel: 'Acknowledge',
      submit: (note) => api('POST', envPath(ctx.env, `/reviews/${enc(r.id)}/acknowledge`), { body: note ? { note } : {} }),
    });
    if (!done || destroyed) return;
    toast(`Acknowledged v${r.version}`, 'success');
    load();
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

// ---- one request ---------------------------------------------------------------------

function mountRequest(root, ctx) {
  const id = ctx.route.id;
  ctx.setTitle(`Request ${id}`);
  let destroyed = false;
  let data = null;
  const headSlot = h('div.page-head');
  const errSlot = h('div');
  const body = h('div.request-layout', spinner());
  root.append(h('a.back', { href: requestsHref(ctx.env) }, icon('back'), h('span', { text: 'Requests' })), headSlot, errSlot, body);

  const load = coalesced(async () => {
    try {
      const r = await api('GET', envPath(ctx.env, `/change-requests/${enc(id)}`));
      if (destroyed) return;
      data = r;
      clear(errSlot);
      ctx.setTitle(r.request.title);
      if (typeof r.headVersion === 'number') ctx.setEnvVersion(r.headVersion);
      render();
    } catch (err) {
      if (destroyed) return;
      if (err.status === 404) {
        clear(headSlot);
        clear(body).append(emptyState(`No change request “${id}” in ${envName(ctx.envInfo)}`, 'It may belong to another environment.',
          h('a.btn', { href: requestsHref(ctx.env), text: 'Back to requests' })));
        return;
      }
      clear(errSlot).append(errorBox(err, { title: 'Could not load the change request' }));
    }
  });

  /** Runs an action, then reads the request again (and the Requests link's count). */
  async function done(message) {
    if (destroyed) return;
    if (message) toast(message, 'success');
    ctx.requestsChanged();
    await load();
  }

  function render() {
    const { request: req, diff = [], headVersion, baseMoved } = data;
    const me = ctx.session.name;
    const mine = req.author === me;
    const approved = (req.approvedBy || []).length;
    const needed = req.approvalsRequired;
    clear(headSlot).append(
      head(ctx, req.title, null),
      h('div.page-actions', stateChip(req.state),
        h('span.approvals-big', { text: `${approved} of ${needed} approval${needed === 1 ? '' : 's'}` })));

    const moved = baseMoved && (req.state === 'open' || req.state === 'stale');
    const notices = [];
    if (req.state === 'stale' || moved) {
      notices.push(h('div.alert.alert-warn.stale-note', { role: 'status' },
        h('div.alert-icon', icon('alert')),
        h('div.alert-body',
          h('strong', { text: `The flag set moved since v${req.baseVersion}${typeof headVersion === 'number' ? ` (it is at v${headVersion})` : ''}: its author must update it.` }),
          h('p', { text: req.state === 'stale'
            ? 'This request is stale: its approvals are void until it is based on the current version.'
            : 'It cannot be approved until it is based on the current version; the approvals given so far will not count.' }),
          mine ? h('div.alert-actions', updateButton(req)) : null)));
    }
    if (req.state === 'rejected') {
      const ev = [...(req.events || [])].reverse().find((e) => e.action === 'rejected');
      notices.push(h('div.alert.alert-error', { role: 'status' },
        h('div.alert-icon', icon('alert')),
        h('div.alert-body',
          h('strong', { text: `Rejected${ev ? ` by ${ev.actor}` : ''}.` }),
          ev && ev.comment ? h('p', { text: ev.comment }) : null,
          mine ? h('p', { text: 'Update it to reopen it, or withdraw it.' }) : null,
          mine && !moved ? h('div.alert-actions', updateButton(req)) : null)));
    }
    if (req.state === 'applied') {
      notices.push(h('div.alert.alert-ok', { role: 'status' },
        h('div.alert-icon', icon('check')),
        h('div.alert-body',
          h('strong', { text: `Applied as v${req.appliedVersion}.` }), ' ',
          req.appliedVersion ? h('a', { href: versionHref(ctx.env, req.appliedVersion), text: 'See the changes in History' }) : null)));
    }
    if (req.state === 'withdrawn') {
      notices.push(h('div.alert.alert-info', { role: 'status' }, h('div.alert-body', h('strong', { text: 'Withdrawn by its author.' }))));
    }

    const meta = h('p.request-meta',
      'Proposed by ', h('span.author', { text: req.author }), ' · ', timeEl(req.createdAt),
      ` · revision ${req.revision} · based on `, h('span.vnum', { text: `v${req.baseVersion}` }),
      typeof headVersion === 'number' && headVersion !== req.baseVersion ? h('span', ' · head ', h('span.vnum', { text: `v${headVersion}` })) : null,
      req.approvedBy && req.approvedBy.length ? h('span', ` · approved by ${req.approvedBy.join(', ')}`) : null,
      req.autoApply ? ' · applies itself at the last approval' : ' · its author applies it once approved');

    clear(body).append(
      h('div.request-main',
        meta,
        notices,
        actionsCard(req, { mine, baseMoved: moved }),
        h('section.card', { aria: { labelledby: 'sec-rdiff' } },
          h('div.card-head', h('h2', { id: 'sec-rdiff', text: 'What changes' }), h('span.muted', { text: changeText(req.change) })),
          diffList({ changes: diff.map((d) => ({ kind: 'flag', key: d.key, change: d.before == null ? 'added' : d.after == null ? 'removed' : 'changed', before: d.before, after: d.after })) },
            { emptyText: 'No flag differs from the current definitions.' }),
          h('details.change-json', h('summary', { text: 'The change as proposed (JSON)' }), jsonBlock(req.change)))),
      h('div.request-side',
        h('section.card', { aria: { labelledby: 'sec-revents' } },
          h('div.card-head', h('h2', { id: 'sec-revents', text: 'History' })),
          eventsList(req.events || []))));
    tickTimes(body);
  }

  function eventsList(events) {
    if (!events.length) return h('p.muted', { text: 'No events.' });
    const ol = h('ol.timeline.request-events');
    for (const e of [...events].reverse()) {
      ol.append(h('li.tl-item', { dataset: { action: e.action } },
        h('div.tl-line', h('span.author', { text: e.actor }), h(`span.ev-action.ev-${e.action}`, { text: e.action }),
          h('span.spacer'), h('span.muted.small', { text: `rev. ${e.revision}` })),
        h('div.tl-meta', timeEl(e.at)),
        e.comment ? h('div.tl-reason', { text: e.comment }) : null));
    }
    return ol;
  }

  function updateButton(req) {
    return h('button.btn.btn-sm.btn-primary', { type: 'button', text: 'Update onto the current version', onclick: () => update(req) });
  }

  /** The buttons the signed-in person may use, and why the others are disabled. */
  function actionsCard(req, { mine, baseMoved }) {
    const rows = [];
    const why = [];
    const button = (label, cls, onclick, reason) => {
      const b = h(`button.btn${cls}`, { type: 'button', text: label, onclick, disabled: !!reason });
      if (reason) {
        const hid = nextId('why');
        b.setAttribute('aria-describedby', hid);
        b.title = reason;
        why.push(h('li', { id: hid }, h('strong', { text: `${label}: ` }), h('span', { text: reason })));
      }
      rows.push(b);
    };
    const open = req.state === 'open';
    const who = cannotReview(ctx, req);
    const already = (req.approvedBy || []).includes(ctx.session.name);
    if (open) {
      button('Approve', '.btn-primary', () => approve(req), who
        || (already ? `You approved revision ${req.revision} already.` : null)
        || (baseMoved ? 'The flag set moved since it was proposed: its author must update it before it can be approved.' : null));
      button('Reject', '.btn-danger', () => reject(req), mine ? 'You proposed this: withdraw it instead.' : who);
    }
    if (ctx.can.approve) button('Comment', '', () => comment(req), null);
    const enough = (req.approvedBy || []).length >= req.approvalsRequired;
    if (mine && open && (enough || !req.autoApply)) {
      button('Apply', '.btn-primary', () => apply(req), !enough ? `It has ${(req.approvedBy || []).length} of the ${req.approvalsRequired} approvals it needs.` : baseMoved ? 'Update it onto the current version first.' : null);
    }
    if (mine && (open || req.state === 'stale' || req.state === 'rejected')) button('Withdraw', '', () => withdraw(req), null);
    if (mine && (req.state === 'stale' || req.state === 'rejected' || (open && baseMoved))) {
      rows.push(updateButton(req));
    }
    if (!rows.length) return null;
    return h('section.card.request-actions', { aria: { labelledby: 'sec-ractions' } },
      h('div.card-head', h('h2', { id: 'sec-ractions', text: 'Review' }),
        open && req.autoApply ? h('span.muted', { text: 'the last approval needed applies it' }) : null),
      h('div.tl-actions', rows),
      why.length ? h('ul.why-list.small.muted', why) : null);
  }

  async function approve(req) {
    const last = (req.approvedBy || []).length + 1 >= req.approvalsRequired;
    const r = await commentDialog({
      title: `Approve “${req.title}”?`,
      lead: last && req.autoApply
        ? `Yours is the last approval needed: the change is applied to ${envName(ctx.envInfo)} at once.`
        : `Approval ${(req.approvedBy || []).length + 1} of ${req.approvalsRequired}.`,
      confirmLabel: 'Approve',
      submit: (c) => api('POST', envPath(ctx.env, `/change-requests/${enc(req.id)}/approve`), { body: c ? { comment: c } : {} }),
    });
    if (!r) {
      // A refusal because the base moved makes the request stale: show that.
      if (!destroyed) load();
      return;
    }
    await done(r.request && r.request.state === 'applied' ? `Approved and applied as v${r.request.appliedVersion}` : 'Approved');
  }

  async function reject(req) {
    const r = await commentDialog({
      title: `Reject “${req.title}”?`,
      lead: 'Its author can update it to reopen it.',
      label: 'Why',
      required: true,
      danger: true,
      confirmLabel: 'Reject',
      submit: (c) => api('POST', envPath(ctx.env, `/change-requests/${enc(req.id)}/reject`), { body: { comment: c } }),
    });
    if (r) await done('Rejected');
  }

  async function comment(req) {
    const r = await commentDialog({
      title: `Comment on “${req.title}”`,
      required: true,
      confirmLabel: 'Comment',
      submit: (c) => api('POST', envPath(ctx.env, `/change-requests/${enc(req.id)}/comment`), { body: { comment: c } }),
    });
    if (r) await done('Comment added');
  }

  async function apply(req) {
    const r = await confirmDialog({
      title: `Apply “${req.title}” to ${envName(ctx.envInfo)}?`,
      lead: `Approved by ${(req.approvedBy || []).join(', ')}. It is written as one version in your name.`,
      confirmLabel: 'Apply',
      submit: () => api('POST', envPath(ctx.env, `/change-requests/${enc(req.id)}/apply`), { body: {} }),
    });
    if (r) await done(r.request && r.request.appliedVersion ? `Applied as v${r.request.appliedVersion}` : 'Applied');
    else if (!destroyed) load();
  }

  async function withdraw(req) {
    const r = await commentDialog({
      title: `Withdraw “${req.title}”?`,
      lead: 'Nothing is applied; it cannot be reopened.',
      confirmLabel: 'Withdraw',
      danger: true,
      submit: (c) => api('POST', envPath(ctx.env, `/change-requests/${enc(req.id)}/withdraw`), { body: c ? { comment: c } : {} }),
    });
    if (r) await done('Withdrawn');
  }

  async function update(req) {
    try {
      const r = await api('PUT', envPath(ctx.env, `/change-requests/${enc(req.id)}`), { body: { change: req.change } });
      await done(`Updated onto v${r.request.baseVersion}: revision ${r.request.revision}, approvals start again`);
    } catch (err) {
      clear(errSlot).append(errorBox(err, { title: 'Could not update the request' }));
    }
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
