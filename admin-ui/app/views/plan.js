// The flag page's release plan: the active plan of this flag (its steps, the current
// one, the next action's time, why it is held, what its gates saw last) and what the
// caller's role may do to it: pause, resume, skip the hold, approve, abort.
import { api, envPath, enc, qs } from '../api.js';
import { h, clear, timeEl } from '../dom.js';
import { errorBox, reasonDialog, toast, spinner } from '../ui.js';

function stepText(plan, step) {
  if (typeof step.percent === 'number') return `${step.percent}% ${plan.variant || ''}`.trim();
  return 'a new definition';
}

function holdText(step) {
  if (!step.hold) return 'no hold';
  return step.hold === 'approval' ? 'until approved' : `hold ${step.hold}`;
}

// A card that shows the flag's active release plan; `changed()` after a move.
export function planCard(ctx, key, changed) {
  const slot = h('div', spinner());
  const card = h('section.card.plan-card', { aria: { labelledby: 'sec-plan' } },
    h('div.card-head', h('h2', { id: 'sec-plan', text: 'Release plan' })), slot);

  async function move(plan, action, label, extra = {}) {
    await reasonDialog({
      title: `${label} the release plan of ${key}?`,
      lead: action === 'abort' && extra.rollback ? 'The flag goes back to its definition before the plan.' : `Plan ${plan.id}, step ${plan.step + 1} of ${plan.steps.length}.`,
      env: ctx.envInfo,
      required: false,
      confirmLabel: label,
      submit: async (reason) => {
        await api('POST', envPath(ctx.env, `/plans/${enc(plan.id)}/${action}`), { body: { ...extra, ...(reason ? { reason } : {}) } });
        toast(`${key}: plan ${action === 'abort' ? 'aborted' : action + 'd'}`, 'success');
        changed();
      },
    });
  }

  function render(plan) {
    clear(slot);
    // Shown only while the flag has an active plan.
    card.hidden = !plan;
    if (!plan) return;
    const state = plan.awaitingApproval ? 'waiting for an approval' : plan.state;
    const steps = h('ol.plan-steps');
    plan.steps.forEach((s, i) => {
      const cls = i < plan.step ? 'done' : i === plan.step ? 'current' : 'next';
      steps.append(h(`li.plan-step.${cls}`, { aria: { current: i === plan.step ? 'step' : undefined } },
        h('span', { text: stepText(plan, s) }), h('span.muted', { text: ` · ${holdText(s)}` })));
    });
    const gates = (plan.gateValues || []).map((g) => h('li', {
      text: g.value === null ? `${g.gate}: no data (${g.noData})` : `${g.gate}: ${g.value}${g.passed ? '' : ' (failed)'}`,
    }));
    const can = ctx.can.rollout;
    const running = plan.state === 'running';
    // The DOM's own append writes null as text: what is absent is left out first.
    slot.append(...[
      h('p.plan-state', h('strong', { text: `Step ${plan.step + 1} of ${plan.steps.length}: ${state}` }),
        plan.nextActionAt && running && !plan.awaitingApproval ? h('span', ' · next step ', timeEl(plan.nextActionAt)) : null),
      plan.held ? h('div.alert.alert-warn', { role: 'status' }, h('div.alert-body', h('strong', { text: 'Held: ' }), h('span', { text: plan.held }))) : null,
      steps,
      gates.length ? h('div', h('span.muted', { text: 'Gates, last check:' }), h('ul.plan-gates', ...gates)) : null,
      can ? h('div.tl-actions',
        running ? h('button.btn.btn-sm', { type: 'button', text: 'Pause', onclick: () => move(plan, 'pause', 'Pause') }) : null,
        plan.state === 'paused' ? h('button.btn.btn-sm.btn-primary', { type: 'button', text: 'Resume', onclick: () => move(plan, 'resume', 'Resume') }) : null,
        plan.awaitingApproval ? h('button.btn.btn-sm.btn-primary', { type: 'button', text: 'Approve', onclick: () => move(plan, 'approve', 'Approve') }) : null,
        running && !plan.awaitingApproval ? h('button.btn.btn-sm', { type: 'button', text: 'Skip the hold', onclick: () => move(plan, 'skip', 'Skip the hold of') }) : null,
        h('button.btn.btn-sm.btn-danger', { type: 'button', text: 'Abort and roll back', onclick: () => move(plan, 'abort', 'Abort', { rollback: true }) })) : null,
    ].filter(Boolean));
  }

  async function load() {
    try {
      const r = await api('GET', envPath(ctx.env, `/plans${qs({ flag: key, active: 'true' })}`));
      render((r.plans || [])[0] || null);
    } catch (err) {
      clear(slot).append(errorBox(err, { title: 'Could not load the release plan' }));
    }
  }

  return { card, load };
}
