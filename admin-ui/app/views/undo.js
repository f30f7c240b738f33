// Undo one version: what it changed goes back to how it was before it; later changes to
// other flags stay. The dialog shows flagd's own plan (a dry run) and, when a later
// version changed the same flags again, says which and asks before undoing that too.
// In a protected environment only the head is undone at once (break-glass); an older
// version's undo is proposed as a change request holding what the undo would write.
import { api, envPath, enc, qs } from '../api.js';
import { h } from '../dom.js';
import { reasonDialog, toast, errorBox } from '../ui.js';
import { breakGlassNote, isProtected, proposeDialog } from '../approvals.js';

async function flagAt(ctx, key, version) {
  try {
    return await api('GET', envPath(ctx.env, `/flags/${enc(key)}${qs({ version })}`));
  } catch (err) {
    if (err.status === 404) return null;
    throw err;
  }
}

/**
 * The change a proposal of "undo v{version}" holds: each flag it changed as it was
 * before it. Anything else it changed ($evaluators, metadata) needs the whole document:
 * the head's, with those items as they were before.
 */
async function undoChange(ctx, version, changes) {
  if (changes.every((c) => c.kind === 'flag' && c.key)) {
    const flags = {};
    for (const c of changes) flags[c.key] = await flagAt(ctx, c.key, version - 1);
    return { flags };
  }
  const [doc, before] = await Promise.all([
    api('GET', envPath(ctx.env, '/flags')),
    api('GET', envPath(ctx.env, `/flags${qs({ version: version - 1 })}`)),
  ]);
  for (const c of changes) {
    const [top, ...rest] = c.kind === 'flag' && c.key ? ['flags', c.key] : String(c.path).split('.');
    const key = rest.join('.');
    if (!key) {
      if (before[top] === undefined) delete doc[top];
      else doc[top] = before[top];
    } else {
      const was = before[top] && before[top][key];
      if (was === undefined) {
        if (doc[top]) delete doc[top][key];
      } else {
        doc[top] = doc[top] || {};
        doc[top][key] = was;
      }
    }
  }
  return { document: doc };
}

const ACTION_TEXT = { restore: 'back to its definition before', remove: 'removed: it did not exist before', 'add back': 'added back: it existed before' };

export async function undoDialog(ctx, version, knownHead) {
  let plan = null;
  let loadErr = null;
  try {
    plan = await api('POST', envPath(ctx.env, `/versions/${version}/undo`), { body: { dryRun: true } });
  } catch (err) {
    loadErr = err;
  }
  const head = plan ? plan.version : knownHead;
  const envName = ctx.envInfo.name || ctx.env;
  const proposal = isProtected(ctx.envInfo) && version !== head;
  const changes = plan ? plan.changes || [] : [];
  const conflicts = plan ? plan.conflicts || [] : [];
  const later = (c) => (c.laterVersions && c.laterVersions.length ? c.laterVersions.map((v) => `v${v}`).join(', ') : 'a later version');
  const body = h('div.undo-preview',
    proposal
      ? h('div.alert.alert-info', { role: 'note' }, h('div.alert-body',
        h('strong', { text: `${envName} is protected: only its last version (v${head}) is undone without approval.` }),
        h('p', { text: `This undo is proposed as a change request: what v${version} changed, as it was before it.` })))
      : breakGlassNote(ctx.envInfo),
    loadErr ? errorBox(loadErr, { title: 'Could not work out what the undo would change' }) : null,
    plan ? h('p.small', {
      text: changes.length
        ? `${changes.length} item${changes.length > 1 ? 's' : ''} v${version} changed will go back to how ${changes.length > 1 ? 'they were' : 'it was'} before v${version}:`
        : `Nothing to undo: what v${version} changed is already back.`,
    }) : null,
    changes.length ? h('ul.undo-list', changes.map((c) => h('li', { dataset: { path: c.path } },
      h('code', { text: c.path }), ' ',
      h('span', { text: c.action === 'restore' ? `${ACTION_TEXT.restore} v${version}` : ACTION_TEXT[c.action] || c.action }),
      c.changedLater ? h('span.chip.chip-behind', { text: 'changed again later' }) : null))) : null,
    conflicts.length ? h('div.warn.undo-conflicts', conflicts.map((c) => h('p.small', {
      text: `${c.path} was changed again by ${later(c)}: undoing v${version} also throws that change away.`,
    }))) : null,
    plan && head > version ? h('p.small.muted', { text: `Changes made after v${version} to other flags stay as they are (the head is v${head}).` }) : null);
  if (proposal) {
    // The dry run's plan in the words of a change request; the reason becomes its title.
    return reasonDialog({
      title: `Propose undoing v${version} in ${envName}?`,
      lead: `Once approved, only what v${version} changed is put back. Later changes to other flags are kept.`,
      env: null,
      body,
      placeholder: `e.g. Undo v${version}: it broke checkout (INC-1234)`,
      confirmCheck: conflicts.length ? 'Also undo the later changes to these flags' : null,
      confirmLabel: 'Propose the undo',
      submit: async (reason) => {
        const change = await undoChange(ctx, version, changes);
        const r = await api('POST', envPath(ctx.env, '/change-requests'), { body: { title: `Undo v${version}: ${reason}`.slice(0, 200), change } });
        toast(`Proposed the undo of v${version}: it needs ${r.request.approvalsRequired} approvals`, 'success');
        return { request: r.request };
      },
    });
  }
  return reasonDialog({
    title: `Undo v${version} in ${envName}?`,
    lead: `This makes a new version in which only what v${version} changed is put back. Unlike a revert, later changes to other flags are kept.`,
    env: ctx.envInfo,
    danger: true,
    body,
    confirmCheck: conflicts.length ? 'Also undo the later changes to these flags' : 'I have reviewed the changes above',
    confirmLabel: `Undo v${version}`,
    submit: async (reason) => {
      const r = await api('POST', envPath(ctx.env, `/versions/${version}/undo`), { body: { reason, force: conflicts.length > 0 }, ifMatch: head });
      toast(r.changed === false ? 'Nothing changed: already undone' : `Undid v${version}: now v${r.version}`, 'success');
      return r;
    },
  });
}
