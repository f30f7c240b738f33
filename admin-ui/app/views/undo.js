// Undo one version: what it changed goes back to how it was before it; later changes to
// other flags stay. The dialog shows flagd's own plan (a dry run) and, when a later
// version changed the same flags again, says which and asks before undoing that too.
import { api, envPath } from '../api.js';
import { h } from '../dom.js';
import { reasonDialog, toast, errorBox } from '../ui.js';

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
  const changes = plan ? plan.changes || [] : [];
  const conflicts = plan ? plan.conflicts || [] : [];
  const later = (c) => (c.laterVersions && c.laterVersions.length ? c.laterVersions.map((v) => `v${v}`).join(', ') : 'a later version');
  const body = h('div.undo-preview',
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
