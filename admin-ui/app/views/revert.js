// The revert confirmation: reason + the diff that will be applied (head → target).
import { api, envPath, qs } from '../api.js';
import { h } from '../dom.js';
import { reasonDialog, diffList, toast, errorBox } from '../ui.js';
import { breakGlassNote, isProtected } from '../approvals.js';

export async function revertDialog(ctx, version, knownHead) {
  let head = knownHead;
  let diff = null;
  let loadErr = null;
  let dropped = [];
  try {
    const env = await api('GET', envPath(ctx.env));
    head = env.version;
    diff = await api('GET', envPath(ctx.env, `/diff${qs({ from: head, to: version })}`));
    // The versions after the target: a revert throws every one of them away.
    if (head > version) {
      const r = await api('GET', envPath(ctx.env, `/versions${qs({ limit: Math.min(head - version, 20) })}`));
      dropped = (r.versions || []).filter((v) => v.version > version);
    }
  } catch (err) {
    loadErr = err;
  }
  const envName = ctx.envInfo.name || ctx.env;
  const n = diff ? diff.changes.length : 0;
  // A revert that removes every flag it changes may empty the environment: flagd takes
  // it only when asked explicitly ("empty": true), which this reviewed dialog is.
  const removesAll = n > 0 && diff.changes.every((c) => c.change === 'removed');
  const body = h('div.revert-preview',
    breakGlassNote(ctx.envInfo),
    h('div.revert-summary',
      h('span.vnum.vnum-lg', { text: `v${head}` }), h('span.arrow', { text: '→' }),
      h('span', { text: 'new version with the content of ' }), h('span.vnum.vnum-lg', { text: `v${version}` })),
    loadErr ? errorBox(loadErr, { title: 'Could not compute the diff' }) : null,
    diff ? h('p.small', { text: n ? `${n} flag${n > 1 ? 's' : ''} will change:` : 'Nothing differs: the revert would make no new version.' }) : null,
    removesAll ? h('p.small.warn', { text: `Every change removes a flag: ${envName} may be left with no flags.` }) : null,
    dropped.length ? h('div.warn.revert-drops',
      h('p.small', { text: `This also undoes every change after v${version}${head - version > dropped.length ? ` (${head - version} versions; the last ${dropped.length} shown)` : ''}:` }),
      h('ul.small', dropped.map((v) => h('li', { text: `v${v.version} by ${v.author}${v.reason ? `: ${v.reason}` : ''} (${(v.changedFlags || []).join(', ') || v.kind})` }))),
      h('p.small', { text: 'To take back one change alone, use "Undo this change" on its row.' })) : null,
    diff ? h('div.revert-diff', diffList(diff, { emptyText: 'No flag differs between the head and this version.' })) : null);
  return reasonDialog({
    title: `Revert ${envName} to v${version}?`,
    lead: 'This makes a new version whose flags equal those of the chosen version. It can itself be reverted.',
    env: ctx.envInfo,
    danger: true,
    body,
    confirmCheck: 'I have reviewed the changes above',
    confirmLabel: `Revert ${envName} to v${version}`,
    submit: async (reason) => {
      const r = await api('POST', envPath(ctx.env, '/revert'), { body: { version, reason, empty: removesAll }, ifMatch: head });
      const review = r.changed && isProtected(ctx.envInfo) ? ' (a review is open)' : '';
      toast(r.changed ? `Reverted ${envName} to v${version}: now v${r.version}${review}` : 'Nothing changed: already equal', 'success');
      return r;
    },
  });
}
