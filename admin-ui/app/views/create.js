// "New flag": key, variants, default, optional percentage rollout → PUT /flags/{key};
// in a protected environment, a change request creating it (POST /change-requests).
// Resolves to {key} when created, {key, request} when proposed, or null.
import { api, envPath, enc } from '../api.js';
import { h, clear, field, nextId, icon } from '../dom.js';
import { attachDialog, errorBox, toast } from '../ui.js';
import { variantsEditor } from '../editors.js';
import { isProtected } from '../approvals.js';

export function createFlagDialog(ctx, existingKeys) {
  return new Promise((resolve) => {
    const envName = ctx.envInfo.name || ctx.env;
    // Read once: the environment may be protected after the page loaded it, and then
    // flagd's 409 approval_required turns the dialog into a proposal.
    let propose = isProtected(ctx.envInfo);
    let vstate = { type: 'boolean', variants: { on: true, off: false }, defaultVariant: 'off' };
    const key = h('input.input.mono', { name: 'key', required: true, placeholder: 'new-checkout', autocomplete: 'off', spellcheck: 'false', pattern: '[A-Za-z0-9_.:\\-]+' });
    const stateSel = h('select.input', h('option', { value: 'ENABLED', text: 'Enabled' }), h('option', { value: 'DISABLED', text: 'Disabled' }));
    const ve = variantsEditor(vstate, (s) => {
      vstate = s;
      syncRollout();
    }, { allowType: true });
    const tRadioName = nextId('tmode');
    const tNone = h('input', { type: 'radio', name: tRadioName, id: nextId('tn'), value: 'none' });
    const tSplit = h('input', { type: 'radio', name: tRadioName, id: nextId('ts'), value: 'split' });
    tNone.checked = true;
    const pctIn = h('input.input.pct-input', { type: 'number', min: '0', max: '100', step: '0.01', value: '5', aria: { label: 'Rollout percent' } });
    const varSel = h('select.input', { aria: { label: 'Rollout variant' } });
    const reason = h('input.input', { name: 'reason', placeholder: 'e.g. new checkout behind a flag (JIRA-42)' });
    const reasonField = h('div');
    const protectNote = h('div');
    const errSlot = h('div.dialog-error');
    const ok = h('button.btn.btn-primary', { type: 'submit', text: `Create in ${envName}` });
    const syncMode = () => {
      ok.textContent = propose ? `Propose in ${envName}` : `Create in ${envName}`;
      // An empty title proposes “Create <key>”: the placeholder says so as the key is typed.
      reason.placeholder = propose ? `Create ${key.value.trim() || 'new-checkout'}` : 'e.g. new checkout behind a flag (JIRA-42)';
      clear(reasonField).append(field(propose ? 'Title of the change request' : 'Reason (optional, recorded in the audit log)', reason));
      clear(protectNote).append(propose ? h('div.alert.alert-info', { role: 'note' }, h('div.alert-icon', icon('lock')), h('div.alert-body',
        h('strong', { text: `${envName} is protected.` }),
        h('p', { text: `The flag is proposed as a change request and created once ${ctx.envInfo.approvals || 1} other ${(ctx.envInfo.approvals || 1) === 1 ? 'person approves' : 'people approve'} it.` }))) : null);
    };
    const cancel = h('button.btn', { type: 'button', text: 'Cancel' });
    const splitRow = h('div.inline-row', tSplit, h('label', { for: tSplit.id, text: 'Percentage rollout:' }), pctIn, h('span', { text: '% get' }), varSel);

    function syncRollout() {
      const names = Object.keys(vstate.variants);
      const cur = varSel.value;
      clear(varSel);
      for (const n of names) varSel.append(h('option', { value: n, text: n }));
      varSel.value = names.includes(cur) ? cur : (names.find((n) => n !== vstate.defaultVariant) || names[0] || '');
    }
    syncRollout();
    key.addEventListener('input', () => {
      if (propose) reason.placeholder = `Create ${key.value.trim() || 'new-checkout'}`;
    });
    for (const el of [pctIn, varSel]) el.addEventListener('focus', () => { tSplit.checked = true; });

    const dlgTitle = nextId('dt');
    const dlg = h('dialog.dialog.dialog-wide', { aria: { labelledby: dlgTitle } });
    const form = h('form', { novalidate: true },
      ctx.envInfo.production && !propose ? h('div.dialog-prod', h('span', { text: `Creating in ${envName.toUpperCase()}: SDKs receive it at once` })) : null,
      h('div.dialog-head', h('h2', { id: dlgTitle, text: `New flag in ${envName}` })),
      h('div.dialog-body',
        protectNote,
        h('div.grid-2',
          field('Key', key, 'Stable identifier used in code; cannot be renamed.'),
          field('Initial state', stateSel)),
        h('fieldset.fieldset', h('legend', { text: 'Variants' }), ve.el),
        h('fieldset.fieldset', h('legend', { text: 'Targeting' }),
          h('div.inline-row', tNone, h('label', { for: tNone.id, text: 'None: everyone gets the default variant' })),
          splitRow),
        reasonField,
        errSlot),
      h('div.dialog-foot', cancel, ok));
    dlg.append(form);
    syncMode();
    const finish = attachDialog(dlg, cancel, resolve);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      clear(errSlot);
      const k = key.value.trim();
      const problems = [];
      if (!k) problems.push({ path: 'key', message: 'is required' });
      else if (!/^[A-Za-z0-9_.:-]+$/.test(k)) problems.push({ path: 'key', message: 'use letters, digits, “-”, “_”, “.” or “:”' });
      else if (existingKeys.includes(k)) problems.push({ path: 'key', message: `a flag “${k}” already exists in ${envName}` });
      if (!Object.keys(vstate.variants).length) problems.push({ path: 'variants', message: 'add at least one variant' });
      const def = { state: stateSel.value, variants: vstate.variants, defaultVariant: vstate.defaultVariant };
      if (tSplit.checked) {
        const p = Number(pctIn.value);
        if (!(p >= 0 && p <= 100)) problems.push({ path: 'targeting', message: 'the rollout percent is between 0 and 100' });
        const v = varSel.value;
        const others = Object.keys(vstate.variants).filter((n) => n !== v);
        const scale = Number.isInteger(p) ? 1 : 100;
        const mine = Math.round(p * scale);
        const rest = 100 * scale - mine;
        const buckets = [[v, mine]];
        if (others.length) {
          const main = others.includes(vstate.defaultVariant) ? vstate.defaultVariant : others[0];
          buckets.push([main, rest]);
        }
        def.targeting = { fractional: buckets };
      }
      const title = reason.value.trim() || (propose ? `Create ${k}` : '');
      if (problems.length) {
        errSlot.append(errorBox({ message: 'Fix these first:', details: problems }, { title: 'Not ready' }));
        return;
      }
      ok.disabled = true;
      try {
        if (propose) {
          const r = await api('POST', envPath(ctx.env, '/change-requests'), { body: { title, change: { flags: { [k]: def } } } });
          toast(`Proposed “${title}”: it needs ${r.request.approvalsRequired} approval${r.request.approvalsRequired === 1 ? '' : 's'}`, 'success');
          finish({ key: k, request: r.request });
          return;
        }
        const r = await api('PUT', envPath(ctx.env, `/flags/${enc(k)}`), { body: def, reason: title || undefined });
        toast(`Created ${k} in ${envName} (v${r.version})`, 'success');
        finish({ key: k });
      } catch (err) {
        const refused = err.code === 'approval_required' && !propose;
        errSlot.append(errorBox(err, {
          title: propose ? 'Not proposed' : 'The flag was not created',
          actions: refused ? [h('button.btn.btn-sm.btn-primary', {
            type: 'button',
            text: 'Propose this flag instead',
            onclick: () => {
              propose = true;
              clear(errSlot);
              syncMode();
              ctx.refreshEnvs({ rerender: false });
              reason.focus();
            },
          })] : null,
        }));
        ok.disabled = false;
      }
    });
    dlg.showModal();
    key.focus();
  });
}
