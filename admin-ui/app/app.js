// The shell: session, header, hash router and live updates.
import { api, ApiError, setCsrfToken, setUnauthorizedHandler } from './api.js';
import { h, clear, field, icon, tickTimes, absTime, nextId } from './dom.js';
import { errorBox, toast, spinner, attachDialog } from './ui.js';
import { startLive, stopLive } from './live.js';
import { protectedBadge, policyDialog } from './approvals.js';
import * as flagsView from './views/flags.js';
import * as flagView from './views/flag.js';
import * as historyView from './views/history.js';
import * as diffView from './views/diff.js';
import * as fleetView from './views/fleet.js';
import * as auditView from './views/audit.js';
import * as notificationsView from './views/notifications.js';
import * as peopleView from './views/people.js';
import * as requestsView from './views/requests.js';

const root = document.getElementById('app');

const state = {
  session: null,
  methods: null, // GET /session/methods: {token, password, oidc}
  signinError: null, // ?signin_error= from a refused single sign-on, shown once
  envs: [],
  liveStatus: 'off',
  view: null, // {destroy, onChange, dirty}
  route: null,
  shell: null,
  lastHash: '',
  // Change requests per environment, {open, total}: the Requests link shows the open
  // ones. flagd sends no events for requests, so this is read again on each route,
  // after each version event and every 30 s.
  requestCounts: new Map(),
  navShown: null, // the counts the navigation was last rendered with (JSON)
};

const NAV = [
  { id: 'flags', label: 'Flags', icon: 'flag' },
  { id: 'history', label: 'History', icon: 'history' },
  { id: 'fleet', label: 'Fleet', icon: 'fleet' },
  { id: 'requests', label: 'Requests', icon: 'request', requests: true },
  { id: 'notifications', label: 'Notifications', icon: 'bell', admin: true },
  { id: 'people', label: 'People', icon: 'people', admin: true },
  { id: 'audit', label: 'Audit', icon: 'audit' },
];

// ---- routing ----------------------------------------------------------------------

export function parseHash(hash) {
  const raw = (hash || '').replace(/^#/, '');
  const [path, q = ''] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const query = Object.fromEntries(new URLSearchParams(q));
  if (parts[0] === 'audit') return { view: 'audit', env: null, query };
  if (parts[0] === 'people') return { view: 'people', env: null, query };
  const env = parts[0] || null;
  const section = parts[1] || 'flags';
  if (section === 'flags' && parts[2]) return { view: 'flag', env, key: parts.slice(2).join('/'), query };
  if (section === 'history' && parts[2] === 'diff') return { view: 'diff', env, query };
  if (section === 'requests' && parts[2]) return { view: 'request', env, id: parts.slice(2).join('/'), query };
  if (['flags', 'history', 'fleet', 'notifications', 'requests'].includes(section)) return { view: section, env, query };
  return { view: 'flags', env, query };
}

export function navigate(hash, { replace = false } = {}) {
  const target = hash.startsWith('#') ? hash : `#${hash}`;
  if (replace) {
    history.replaceState(null, '', target);
    route();
  } else if (location.hash === target) {
    route();
  } else {
    location.hash = target;
  }
}

/** Views of the whole server, not of one environment. */
function serverWide(view) {
  return view === 'audit' || view === 'people';
}

function defaultEnv() {
  const prod = state.envs.find((e) => e.key === 'production');
  return (prod || state.envs.find((e) => e.production) || state.envs[0] || { key: 'production' }).key;
}

function envInfo(key) {
  return state.envs.find((e) => e.key === key) || null;
}

// ---- session ----------------------------------------------------------------------

function applySession(s) {
  state.session = s;
  setCsrfToken(s.csrfToken);
}

async function loadEnvs() {
  const r = await api('GET', '/environments');
  const allowed = state.session && Array.isArray(state.session.environments) ? new Set(state.session.environments) : null;
  // Kept objects are updated in place: an open view's ctx.envInfo then sees a policy
  // changed since (protected or not) when it acts.
  const old = new Map(state.envs.map((e) => [e.key, e]));
  state.envs = (r.environments || []).filter((e) => !allowed || allowed.has(e.key))
    .map((e) => (old.has(e.key) ? Object.assign(old.get(e.key), e) : e));
}

/**
 * Reads the environments again (a policy changed), then the header and, unless it has
 * unsaved edits or `rerender` is false (a view about to propose), the view.
 */
async function refreshEnvs({ rerender = true } = {}) {
  try {
    await loadEnvs();
  } catch (err) {
    toast(`Could not refresh environments: ${err.message}`, 'error');
    return;
  }
  renderEnvSwitch();
  renderNav();
  if (rerender && !(state.view && state.view.dirty && state.view.dirty())) route();
}

async function editPolicy(env) {
  const policy = await policyDialog(env);
  if (policy) await refreshEnvs();
}

let countSeq = 0;
/** Counts the environment's change requests for the Requests link; re-renders the nav when they change. */
async function refreshRequestCount(env) {
  if (!env || !state.session) return;
  const seq = ++countSeq;
  try {
    const r = await api('GET', `/environments/${encodeURIComponent(env)}/change-requests`);
    const list = r.requests || [];
    const next = { open: list.filter((q) => q.state === 'open').length, total: list.length };
    state.requestCounts.set(env, next);
    // Re-rendered only when what the link shows changes (a focused link keeps its focus).
    if (seq === countSeq && state.shell && state.route && state.route.env === env && state.navShown !== JSON.stringify(next)) renderNav();
  } catch {
    /* the link keeps its last count; the Requests view shows its own errors */
  }
}

/**
 * A refused single sign-on comes back as /?signin_error=…: keep the message for the
 * sign-in page and take it out of the address bar (a reload must not show it again).
 */
function takeSigninError() {
  const params = new URLSearchParams(location.search);
  if (!params.has('signin_error')) return;
  state.signinError = params.get('signin_error') || 'Single sign-on failed.';
  params.delete('signin_error');
  const rest = params.toString();
  history.replaceState(null, '', `${location.pathname}${rest ? `?${rest}` : ''}${location.hash}`);
}

async function loadMethods() {
  if (state.methods) return state.methods;
  try {
    const m = await api('GET', '/session/methods', { noAuthRedirect: true });
    state.methods = { token: m.token !== false, password: !!m.password, oidc: m.oidc || null };
  } catch {
    // An older flagd, or one that cannot answer now: the token form always works.
    return { token: true, password: false, oidc: null };
  }
  return state.methods;
}

async function boot() {
  takeSigninError();
  setUnauthorizedHandler(() => {
    if (state.session) {
      toast('Your session ended. Sign in again.', 'error');
      signedOut();
    }
  });
  clear(root).append(h('div.boot', spinner('Loading flagd…')));
  try {
    const s = await api('GET', '/session', { noAuthRedirect: true });
    applySession(s);
    if (state.signinError) {
      toast(`Single sign-on failed: ${state.signinError}`, 'error', 10000);
      state.signinError = null;
    }
    await signedIn();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) await renderSignIn();
    else renderFatal(err);
  }
}

function renderFatal(err) {
  clear(root).append(h('main.signin-wrap', h('div.signin-card',
    h('div.brand.brand-lg', logo(), h('span', { text: 'flagd' })),
    errorBox(err, { title: 'flagd could not be reached' }),
    h('button.btn.btn-primary', { type: 'button', text: 'Try again', onclick: boot }))));
}

function logo() {
  return h('span.logo', { aria: { hidden: 'true' } }, icon('flag'));
}

/** A form's error slot: a plain message, or the server's error in full. */
function showError(slot, msg) {
  clear(slot).append(typeof msg === 'string' ? h('p.form-error', { role: 'alert', text: msg }) : msg);
}

/** What a refused password sign-in says: wrong, or locked until a time. */
function passwordError(ex) {
  if (ex.status !== 401) return errorBox(ex, { title: 'Sign-in failed' });
  const locked = /locked until (\S+)/.exec(ex.message || '');
  if (locked) {
    return `This account is locked after too many wrong passwords. Try again after ${absTime(locked[1].replace(/[.,;]$/, ''))}, or ask an admin.`;
  }
  return 'Wrong login or password. Check both and try again.';
}

function passwordForm(primary) {
  const login = h('input.input', {
    type: 'text', name: 'username', autocomplete: 'username', autocapitalize: 'none', spellcheck: 'false',
    required: true, aria: { required: 'true' },
  });
  const password = h('input.input', {
    type: 'password', name: 'password', autocomplete: 'current-password', required: true, aria: { required: 'true' },
  });
  const err = h('div.signin-error', { aria: { live: 'assertive' } });
  const btn = h(`button.btn.btn-block${primary ? '.btn-primary' : ''}`, { type: 'submit', text: 'Sign in' });
  const form = h('form.signin-form', { novalidate: true, aria: { label: 'Sign in with a password' } },
    field('Login', login), field('Password', password), err, btn);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(err);
    const body = { login: login.value.trim(), password: password.value };
    if (!body.login || !body.password) {
      showError(err, 'Enter your login and your password.');
      (body.login ? password : login).focus();
      return;
    }
    btn.disabled = true;
    btn.textContent = 'Signing in…';
    try {
      const s = await api('POST', '/session', { body, noAuthRedirect: true });
      password.value = '';
      applySession(s);
      await signedIn();
    } catch (ex) {
      btn.disabled = false;
      btn.textContent = 'Sign in';
      showError(err, passwordError(ex));
      password.select();
    }
  });
  return { form, focus: () => login.focus() };
}

function tokenForm(primary) {
  const input = h('input.input', {
    type: 'password', name: 'token', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'fd_…', required: true, aria: { required: 'true' },
  });
  const err = h('div.signin-error', { aria: { live: 'assertive' } });
  const btn = h(`button.btn.btn-block${primary ? '.btn-primary' : ''}`, { type: 'submit', text: 'Sign in' });
  const form = h('form.signin-form', { novalidate: true, aria: { label: 'Sign in with an access token' } },
    field('Access token', input, 'Exchanged for a session cookie. The token is not stored in this browser.'),
    err, btn);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(err);
    const token = input.value.trim();
    if (!token) {
      showError(err, 'Enter your access token.');
      input.focus();
      return;
    }
    btn.disabled = true;
    btn.textContent = 'Signing in…';
    try {
      const s = await api('POST', '/session', { body: { token }, noAuthRedirect: true });
      input.value = '';
      applySession(s);
      await signedIn();
    } catch (ex) {
      btn.disabled = false;
      btn.textContent = 'Sign in';
      showError(err, ex.status === 401 ? 'That token is not valid, or it was revoked. Check it and try again.' : errorBox(ex, { title: 'Sign-in failed' }));
      input.select();
    }
  });
  return { form, focus: () => input.focus() };
}

/**
 * The sign-in page offers what flagd accepts, in this order: the identity provider,
 * a login and password, an access token.
 */
async function renderSignIn(message) {
  document.title = 'Sign in · flagd';
  stopLive();
  state.shell = null;
  const methods = await loadMethods();
  if (state.session) return; // signed in meanwhile (another tab's form, a fast boot)
  const notice = h('div.signin-error', { aria: { live: 'assertive' } });
  if (state.signinError) {
    notice.append(errorBox({ message: state.signinError }, { title: 'Single sign-on failed' }));
    state.signinError = null;
  } else if (message) {
    notice.append(h('p.form-error', { role: 'alert', text: message }));
  }
  const parts = [];
  let first = null;
  const or = (text) => h('div.signin-or', h('span', { text }));
  if (methods.oidc) {
    parts.push(h('a.btn.btn-primary.btn-block.btn-sso', { href: methods.oidc.url }, icon('key'), h('span', { text: `Sign in with ${methods.oidc.name}` })));
  }
  if (methods.password) {
    const p = passwordForm(!parts.length);
    if (parts.length) parts.push(or('or'));
    parts.push(p.form);
    first = first || p;
  }
  if (methods.token) {
    const t = tokenForm(!parts.length);
    if (parts.length) parts.push(or(methods.password ? 'or use an access token' : 'or'));
    parts.push(t.form);
    first = first || t;
  }
  const lead = methods.password || methods.oidc
    ? 'Feature flags and code-free rollback. Use your own account, or an access token an admin gave you.'
    : 'Feature flags and code-free rollback. Use the access token an admin gave you.';
  clear(root).append(h('main.signin-wrap',
    h('div.signin-card',
      h('div.brand.brand-lg', logo(), h('span', { text: 'flagd' })),
      h('h1', { text: 'Sign in' }),
      h('p.muted', { text: lead }),
      notice,
      h('div.signin-methods', parts)),
    h('p.signin-foot.muted', { text: 'Admins add people in People; tokens are created with POST /api/v1/tokens.' })));
  if (first) first.focus();
}

// ---- own password ------------------------------------------------------------------

/** "Change password" for a person: current, new (twice) → POST /session/password. */
function changePasswordDialog() {
  return new Promise((resolve) => {
    const input = (autocomplete) => h('input.input', { type: 'password', autocomplete, required: true, aria: { required: 'true' } });
    const current = input('current-password');
    const next = input('new-password');
    const again = input('new-password');
    const fields = { current: field('Current password', current), new: field('New password', next, 'At least 12 characters.') };
    const errSlot = h('div.dialog-error');
    const ok = h('button.btn.btn-primary', { type: 'submit', text: 'Change password' });
    const cancel = h('button.btn', { type: 'button', text: 'Cancel' });
    const titleId = nextId('dlgt');
    const dlg = h('dialog.dialog', { aria: { labelledby: titleId } });
    const form = h('form', { novalidate: true },
      h('div.dialog-head', h('h2', { id: titleId, text: 'Change your password' })),
      h('div.dialog-body', fields.current, fields.new, field('Repeat the new password', again), errSlot),
      h('div.dialog-foot', cancel, ok));
    dlg.append(form);
    const finish = attachDialog(dlg, cancel, resolve);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      clear(errSlot);
      for (const el of [current, next, again]) el.removeAttribute('aria-invalid');
      const problems = [];
      if (!current.value) problems.push({ path: 'current', message: 'is required' });
      if (next.value.length < 12) problems.push({ path: 'new', message: `is ${next.value.length} characters long; at least 12 are required` });
      else if (next.value !== again.value) problems.push({ path: 'new', message: 'and its repetition differ' });
      if (problems.length) {
        errSlot.append(errorBox({ message: 'Fix these first:', details: problems }, { title: 'Not changed' }));
        for (const p of problems) (p.path === 'current' ? current : next).setAttribute('aria-invalid', 'true');
        return;
      }
      ok.disabled = true;
      try {
        await api('POST', '/session/password', { body: { current: current.value, new: next.value } });
        toast('Password changed', 'success');
        finish(true);
      } catch (err) {
        errSlot.append(errorBox(err, { title: 'The password was not changed' }));
        for (const d of err.details || []) if (d.path === 'current' || d.path === 'new') (d.path === 'current' ? current : next).setAttribute('aria-invalid', 'true');
        ok.disabled = false;
      }
    });
    dlg.showModal();
    current.focus();
  });
}

async function signedIn() {
  try {
    await loadEnvs();
  } catch (err) {
    renderFatal(err);
    return;
  }
  renderShell();
  startLive({
    status: setLive,
    change: onLiveChange,
    resync: async () => {
      try {
        await loadEnvs();
      } catch {
        /* shown by the view's own reload */
      }
      if (!(state.view && state.view.dirty && state.view.dirty())) route();
    },
    environments: async () => {
      try {
        await loadEnvs();
        renderEnvSwitch();
        renderNav();
      } catch (err) {
        toast(`Could not refresh environments: ${err.message}`, 'error');
      }
    },
  });
  if (!location.hash || location.hash === '#' || location.hash === '#/') navigate(`#/${defaultEnv()}/flags`, { replace: true });
  else route();
}

function signedOut(message) {
  if (state.view && state.view.destroy) state.view.destroy();
  state.view = null;
  state.session = null;
  setCsrfToken(null);
  renderSignIn(message).catch(renderFatal);
}

async function signOut() {
  if (state.view && state.view.dirty && state.view.dirty() && !window.confirm('You have unsaved changes. Sign out anyway?')) return;
  try {
    await api('DELETE', '/session', { noAuthRedirect: true });
  } catch (err) {
    if (err.status !== 401) {
      toast(`Sign-out failed: ${err.message}`, 'error');
      return;
    }
  }
  stopLive();
  signedOut();
  history.replaceState(null, '', '#/');
}

// ---- shell ------------------------------------------------------------------------

function renderShell() {
  const s = state.session;
  const stripe = h('div.env-stripe');
  const envSlot = h('div.env-switch');
  const nav = h('nav.mainnav', { aria: { label: 'Main' } });
  const live = h('span.live', { role: 'status', title: 'Live updates' }, h('span.live-dot'), h('span.live-text', { text: 'Connecting' }));
  const menuBtn = h('button.icon-btn.menu-btn', { type: 'button', aria: { label: 'Menu', expanded: 'false', controls: 'topbar-menu' } }, icon('menu'));
  // A person signs in as their login; `password: false` (an account with single sign-on
  // only) hides the password change where flagd says so.
  const user = h('div.user',
    h('span.user-name', { text: s.name, title: s.person ? `${s.name}: your account` : `${s.name}: an access token` }),
    h('span.role-chip', { text: s.role }),
    s.person && s.password !== false
      ? h('button.icon-btn', { type: 'button', title: 'Change password', aria: { label: 'Change password' }, onclick: () => changePasswordDialog() }, icon('key'))
      : null,
    h('button.btn.btn-ghost.btn-sm', { type: 'button', onclick: signOut, aria: { label: `Sign out ${s.name}` } }, icon('logout'), h('span', { text: 'Sign out' })));
  const menu = h('div.topbar-menu', { id: 'topbar-menu' }, nav, user);
  nav.addEventListener('click', (e) => {
    if (e.target.closest('a')) {
      menu.classList.remove('open');
      menuBtn.setAttribute('aria-expanded', 'false');
    }
  });
  menuBtn.addEventListener('click', () => {
    const open = menu.classList.toggle('open');
    menuBtn.setAttribute('aria-expanded', String(open));
  });
  const header = h('header.topbar',
    h('a.brand', { href: `#/${defaultEnv()}/flags`, aria: { label: 'flagd home' } }, logo(), h('span', { text: 'flagd' })),
    envSlot, menu, h('div.topbar-right', live, menuBtn));
  const main = h('main.main', { id: 'main', tabindex: '-1' });
  const skip = h('a.skip', { href: '#main', text: 'Skip to content' });
  skip.addEventListener('click', (e) => {
    e.preventDefault();
    main.focus();
  });
  clear(root).append(skip, stripe, header, main);
  state.shell = { stripe, envSlot, nav, live, main, menu, menuBtn };
  setLive(state.liveStatus);
}

function renderEnvSwitch() {
  const sh = state.shell;
  if (!sh) return;
  const r = state.route;
  clear(sh.envSlot);
  const onAudit = r && r.view === 'audit';
  const curKey = onAudit ? r.query.environment : r && r.env;
  const cur = curKey ? envInfo(curKey) : null;
  const sel = h('select.env-select', { aria: { label: 'Current environment' } });
  if (onAudit) sel.append(h('option', { value: '', text: 'All environments' }));
  else if (!cur) sel.append(h('option', { value: '', text: 'Environment…', disabled: true, selected: true }));
  for (const e of state.envs) {
    const o = h('option', { value: e.key, text: e.name || e.key });
    if (cur && e.key === cur.key) o.selected = true;
    sel.append(o);
  }
  sel.addEventListener('change', () => {
    const key = sel.value;
    if (onAudit) {
      navigate(`#/audit${key ? `?environment=${encodeURIComponent(key)}` : ''}`);
      return;
    }
    if (!key) return;
    const view = r && ['flags', 'history', 'fleet', 'requests'].includes(r.view) ? r.view : 'flags';
    navigate(`#/${encodeURIComponent(key)}/${view}`);
  });
  sh.envSlot.append(sel);
  if (cur && cur.production) sh.envSlot.append(h('span.env-badge.env-prod', { text: 'Production' }));
  if (cur && !onAudit) {
    const admin = state.session && state.session.can && state.session.can.admin;
    const badge = protectedBadge(cur, admin ? { compact: true, onEdit: () => editPolicy(cur) } : { compact: true });
    if (badge) sh.envSlot.append(badge);
  }
  if (cur) sh.envSlot.append(h('span.env-version', { title: 'Current flag-set version', text: `v${cur.version}` }));
  document.body.classList.toggle('is-prod', !!(cur && cur.production));
  sh.stripe.className = `env-stripe ${cur ? (cur.production ? 'env-prod' : `env-${cur.key}`) : 'env-none'}`;
}

function renderNav() {
  const sh = state.shell;
  const r = state.route;
  clear(sh.nav);
  const env = (r && r.env) || defaultEnv();
  state.navShown = JSON.stringify(state.requestCounts.get(env) || null);
  for (const n of NAV) {
    if (n.admin && !(state.session && state.session.can && state.session.can.admin)) continue;
    let href = `#/${encodeURIComponent(env)}/${n.id}`;
    if (n.id === 'audit') href = `#/audit${env ? `?environment=${encodeURIComponent(env)}` : ''}`;
    if (n.id === 'people') href = '#/people';
    const active = r && (r.view === n.id || (n.id === 'flags' && r.view === 'flag') || (n.id === 'history' && r.view === 'diff') || (n.id === 'requests' && r.view === 'request'));
    let count = null;
    if (n.requests) {
      // Shown where approvals matter: a protected environment, or one with requests.
      const c = state.requestCounts.get(env);
      const info = envInfo(env);
      if (!active && !(info && info.protected) && !(c && c.total)) continue;
      if (c && c.open) count = h('span.nav-count', { text: String(c.open), title: `${c.open} open change request${c.open === 1 ? '' : 's'}` });
    }
    sh.nav.append(h('a.navlink', { href, aria: { current: active ? 'page' : undefined } }, icon(n.icon), h('span', { text: n.label }), count));
  }
}

function setLive(status) {
  state.liveStatus = status;
  const sh = state.shell;
  if (!sh) return;
  const text = { live: 'Live', connecting: 'Connecting', reconnecting: 'Reconnecting', offline: 'Offline', off: 'Off' }[status] || status;
  sh.live.className = `live live-${status}`;
  sh.live.querySelector('.live-text').textContent = text;
  sh.live.title = status === 'live' ? 'Live: changes by anyone appear here at once' : 'Live updates are reconnecting';
}

function onLiveChange(evt) {
  const e = envInfo(evt.environment);
  if (e && typeof evt.version === 'number' && evt.version > e.version) {
    e.version = evt.version;
    if (state.route && state.route.env === evt.environment) renderEnvSwitch();
  }
  const mine = state.session && evt.author === state.session.name;
  if (state.route && state.route.env === evt.environment && !mine) {
    const flags = (evt.changedFlags || []).join(', ');
    toast(`v${evt.version} ${evt.kind} by ${evt.author}${flags ? `: ${flags}` : ''}`, 'info', 4000);
  }
  // A version may be a request applied: its count changes.
  if (state.route && state.route.env === evt.environment) refreshRequestCount(evt.environment);
  if (state.view && state.view.onChange) {
    try {
      state.view.onChange(evt);
    } catch (err) {
      console.warn('live update failed', err);
    }
  }
}

// ---- views ------------------------------------------------------------------------

const VIEWS = {
  flags: flagsView, flag: flagView, history: historyView, diff: diffView, fleet: fleetView, notifications: notificationsView, people: peopleView, audit: auditView,
  requests: requestsView, request: requestsView,
};

function route() {
  if (!state.session || !state.shell) return;
  const r = parseHash(location.hash);
  if (!serverWide(r.view) && (!r.env || !envInfo(r.env))) {
    if (r.env && !envInfo(r.env)) toast(`No environment “${r.env}” (or your token cannot see it).`, 'error');
    navigate(`#/${defaultEnv()}/flags`, { replace: true });
    return;
  }
  if (state.view && state.view.dirty && state.view.dirty() && location.hash !== state.lastHash) {
    if (!window.confirm('You have unsaved changes to this flag. Leave and discard them?')) {
      history.replaceState(null, '', state.lastHash);
      return;
    }
  }
  state.lastHash = location.hash;
  if (state.view && state.view.destroy) state.view.destroy();
  state.view = null;
  state.route = r;
  state.shell.menu.classList.remove('open');
  state.shell.menuBtn.setAttribute('aria-expanded', 'false');
  renderEnvSwitch();
  renderNav();
  if (r.env) refreshRequestCount(r.env);
  const main = clear(state.shell.main);
  const mod = VIEWS[r.view];
  const ctx = {
    route: r,
    env: r.env,
    envInfo: r.env ? envInfo(r.env) : null,
    envs: state.envs,
    session: state.session,
    can: state.session.can || {},
    navigate,
    setTitle: (t) => {
      document.title = `${t} · ${r.env ? `${r.env} · ` : ''}flagd`;
    },
    /** After a change request was proposed, approved, applied…: the Requests link's count. */
    requestsChanged: () => refreshRequestCount(r.env),
    refreshEnvs,
    editPolicy: (env) => editPolicy(env || envInfo(r.env)),
    setEnvVersion: (v) => {
      const e = r.env && envInfo(r.env);
      if (e && typeof v === 'number' && v !== e.version) {
        e.version = v;
        renderEnvSwitch();
      }
    },
  };
  try {
    state.view = mod.mount(main, ctx) || null;
  } catch (err) {
    console.error(err);
    main.append(errorBox(err, { title: 'This view failed to load' }));
  }
}

window.addEventListener('hashchange', route);
window.addEventListener('beforeunload', (e) => {
  if (state.view && state.view.dirty && state.view.dirty()) {
    e.preventDefault();
    e.returnValue = '';
  }
});
setInterval(() => {
  tickTimes();
  if (state.route && state.route.env && !document.hidden) refreshRequestCount(state.route.env);
}, 30000);

boot();
