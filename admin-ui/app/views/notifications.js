// Notifications (admins): the channels this environment's changes are announced on,
// a form for a new one, a test message, and each channel's recent deliveries. Secrets
// go in and are never shown again (flagd answers a masked target).
import { api, envPath, enc } from '../api.js';
import { h, clear, field, timeEl, tickTimes } from '../dom.js';
import { errorBox, spinner, envBadge, emptyState, toast, confirmDialog } from '../ui.js';

const KINDS = [
  ['slack', 'Slack (incoming webhook)'],
  ['teams', 'Microsoft Teams (Workflows webhook)'],
  ['feishu', 'Feishu / Lark (custom bot, signed)'],
  ['dingtalk', 'DingTalk (custom robot, signed)'],
  ['wecom', 'WeCom (group robot)'],
  ['webhook', 'Webhook (Standard Webhooks, signed)'],
];
const SIGNED = new Set(['feishu', 'dingtalk', 'webhook']);
const EVENTS = ['kill-switch', 'revert', 'undo', 'automatic', 'rollout', 'refused', 'not-converged', 'plan', 'change', 'approval'];
const DEFAULT_EVENTS = new Set(['kill-switch', 'revert', 'undo', 'automatic', 'refused', 'not-converged', 'plan', 'approval']);

function statusChip(status) {
  const cls = { delivered: 'chip-current', failed: 'chip-lost' }[status] || 'chip-behind';
  return h(`span.chip.${cls}`, { text: status || 'never' });
}

export function mount(root, ctx) {
  ctx.setTitle('Notifications');
  let destroyed = false;
  const errSlot = h('div');
  const list = h('div.list-wrap', spinner());
  const history = h('div.deliveries');
  root.append(
    h('div.page-head',
      h('div.page-title', h('h1', { text: 'Notifications' }), envBadge(ctx.envInfo),
        h('span.count', { text: 'channels told of this environment’s changes' }))),
    errSlot);
  if (!ctx.can.admin) {
    root.append(emptyState('Admins only', 'Notification channels are managed by admins.'));
    return { destroy: () => {} };
  }

  const kind = h('select.input', { name: 'kind' }, KINDS.map(([v, l]) => h('option', { value: v, text: l })));
  const url = h('input.input', { name: 'url', type: 'url', required: true, placeholder: 'https://hooks.slack.com/services/…', autocomplete: 'off' });
  const secret = h('input.input', { name: 'secret', type: 'password', autocomplete: 'off', placeholder: 'signing secret' });
  const name = h('input.input', { name: 'name', placeholder: 'incidents' });
  const boxes = EVENTS.map((e) => h('label.check', h('input', { type: 'checkbox', value: e, checked: DEFAULT_EVENTS.has(e) }), h('span', { text: e })));
  const secretField = field('Secret', secret, 'Required for Feishu, DingTalk and webhooks (whsec_…); never shown again.');
  const syncSecret = () => { secretField.hidden = !SIGNED.has(kind.value); };
  kind.addEventListener('change', syncSecret);
  syncSecret();
  const form = h('form.card.channel-form', { aria: { label: 'New channel' } },
    h('h2', { text: 'New channel' }),
    h('div.toolbar', field('Kind', kind), field('Name', name)),
    field('Webhook URL', url, 'It carries a secret for most vendors: flagd shows only its host and last characters.'),
    secretField,
    h('fieldset.fieldset.events', h('legend', { text: 'Events' }), boxes),
    h('button.btn.btn-primary', { type: 'submit', text: 'Create channel' }));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = {
      kind: kind.value,
      url: url.value.trim(),
      events: boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value),
    };
    if (name.value.trim()) body.name = name.value.trim();
    if (SIGNED.has(kind.value) && secret.value) body.secret = secret.value;
    try {
      await api('POST', envPath(ctx.env, '/channels'), { body });
      url.value = '';
      secret.value = '';
      name.value = '';
      clear(errSlot);
      toast('Channel created', 'success');
      load();
    } catch (err) {
      clear(errSlot).append(errorBox(err, { title: 'Could not create the channel' }));
    }
  });
  root.append(list, form, history);

  async function showDeliveries(c) {
    clear(history).append(h('h2', { text: `Recent deliveries: ${c.name}` }), spinner());
    try {
      const r = await api('GET', envPath(ctx.env, `/channels/${enc(c.id)}/deliveries?limit=20`));
      if (destroyed) return;
      clear(history).append(h('h2', { text: `Recent deliveries: ${c.name}` }));
      const rows = r.deliveries || [];
      if (!rows.length) {
        history.append(h('p.muted', { text: 'Nothing sent yet.' }));
        return;
      }
      history.append(h('table.table.deliveries-table', { aria: { label: `Deliveries of ${c.name}` } },
        h('thead', h('tr', ['When', 'Event', 'Status', 'Attempts', 'Last answer', 'Message'].map((t) => h('th', { scope: 'col', text: t })))),
        h('tbody', rows.map((d) => {
          const lastAttempt = (d.attemptLog || [])[(d.attemptLog || []).length - 1];
          const answer = lastAttempt
            ? [lastAttempt.status ? String(lastAttempt.status) : null, lastAttempt.error || null].filter(Boolean).join(': ')
            : '—';
          return h('tr', { dataset: { delivery: d.id } },
            h('td', { dataset: { label: 'When' } }, timeEl(d.createdAt)),
            h('td', { dataset: { label: 'Event' } }, h('code', { text: d.event })),
            h('td', { dataset: { label: 'Status' } }, statusChip(d.status)),
            h('td', { dataset: { label: 'Attempts' } }, h('span', { text: String(d.attempts) })),
            h('td', { dataset: { label: 'Last answer' } }, h('span', { text: answer, title: lastAttempt && lastAttempt.body ? lastAttempt.body : '' })),
            h('td', { dataset: { label: 'Message' } }, h('span', { text: (d.payload && d.payload.title) || '' })));
        }))));
      tickTimes(history);
    } catch (err) {
      clear(history).append(errorBox(err, { title: 'Could not load the deliveries' }));
    }
  }

  async function test(c) {
    try {
      const r = await api('POST', envPath(ctx.env, `/channels/${enc(c.id)}/test`), { body: {} });
      if (r.ok) toast(`Test delivered to ${c.name} (${r.status})`, 'success');
      else toast(`Test not delivered to ${c.name}: ${r.error || r.status}`, 'error', 8000);
      load();
      showDeliveries(c);
    } catch (err) {
      clear(errSlot).append(errorBox(err, { title: 'Could not send the test' }));
    }
  }

  async function remove(c) {
    const done = await confirmDialog({
      title: `Delete channel ${c.name}?`,
      lead: ['Its messages not yet sent are given up; its history stays readable through the API.'],
      confirmLabel: 'Delete',
      danger: true,
      submit: () => api('DELETE', envPath(ctx.env, `/channels/${enc(c.id)}`)),
    });
    if (!done || destroyed) return;
    toast(`Deleted ${c.name}`, 'success');
    clear(history);
    load();
  }

  async function load() {
    try {
      const r = await api('GET', envPath(ctx.env, '/channels'));
      if (destroyed) return;
      render(r.channels || []);
    } catch (err) {
      if (!destroyed) clear(list).append(errorBox(err, { title: 'Could not load the channels' }));
    }
  }

  function render(channels) {
    clear(list);
    if (!channels.length) {
      list.append(emptyState('No channel', `Nothing announces the changes of ${ctx.envInfo.name || ctx.env} yet: add a channel below.`));
      return;
    }
    list.append(h('table.table.channels-table', { aria: { label: `Notification channels of ${ctx.env}` } },
      h('thead', h('tr', ['Name', 'Kind', 'Target', 'Events', 'Last delivery', 'Actions'].map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', channels.map((c) => h('tr', { dataset: { channel: c.id } },
        h('td', { dataset: { label: 'Name' } }, h('strong', { text: c.name })),
        h('td', { dataset: { label: 'Kind' } }, h('span', { text: c.kind }), c.hasSecret ? h('div.cell-sub', { text: 'signed' }) : null),
        h('td', { dataset: { label: 'Target' } }, h('code', { text: c.target })),
        h('td', { dataset: { label: 'Events' } }, c.events.map((e) => h('span.label-chip', { text: e }))),
        h('td', { dataset: { label: 'Last delivery' } }, c.lastDelivery
          ? h('span', statusChip(c.lastDelivery.status), ' ', h('code', { text: c.lastDelivery.event }), ' ', timeEl(c.lastDelivery.at))
          : statusChip(null)),
        h('td', { dataset: { label: 'Actions' } },
          h('button.btn.btn-sm', { type: 'button', text: 'Send test', aria: { label: `Send a test to ${c.name}` }, onclick: () => test(c) }), ' ',
          h('button.btn.btn-sm', { type: 'button', text: 'Deliveries', aria: { label: `Deliveries of ${c.name}` }, onclick: () => showDeliveries(c) }), ' ',
          h('button.btn.btn-sm', { type: 'button', text: 'Delete', aria: { label: `Delete ${c.name}` }, onclick: () => remove(c) })))))));
    tickTimes(list);
  }

  load();
  return {
    onChange: (evt) => {
      // A change may have been announced: refresh the last-delivery column shortly.
      if (evt.environment === ctx.env) setTimeout(() => { if (!destroyed) load(); }, 1500);
    },
    destroy: () => {
      destroyed = true;
    },
  };
}
