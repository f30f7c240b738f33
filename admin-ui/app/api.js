// The REST client. The session lives in an HttpOnly cookie the page never sees; the
// CSRF token is kept here, in memory only, and sent on every non-GET request.

let csrfToken = null;
let onUnauthorized = () => {};

export function setCsrfToken(t) {
  csrfToken = t || null;
}

export function getCsrfToken() {
  return csrfToken;
}

/** Called when a request answers 401 (the session expired or was revoked). */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export class ApiError extends Error {
  constructor(status, body, fallback) {
    const e = (body && body.error) || {};
    super(e.message || fallback || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || (status === 0 ? 'network' : `http_${status}`);
    this.details = Array.isArray(e.details) ? e.details : [];
    this.currentVersion = e.currentVersion ?? null;
    this.body = body;
  }
}

/**
 * X-Change-Reason is a header, so ASCII: any other reason (or one with line breaks) is
 * sent as RFC 8187 `UTF-8''` + percent-encoded UTF-8, which flagd decodes.
 */
export function headerReason(s) {
  const r = String(s).trim();
  if (/^[\x20-\x7e]*$/.test(r) && !/^utf-8''/i.test(r)) return r;
  return `UTF-8''${encodeURIComponent(r)}`;
}

/**
 * api('POST', '/environments/production/revert', {body, ifMatch, reason})
 * Resolves to the parsed JSON (with a non-enumerable `_version` from X-Flag-Set-Version),
 * null for 204; rejects with ApiError carrying the server's code, message and details.
 */
export async function api(method, path, opts = {}) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.body);
  }
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  if (opts.ifMatch !== undefined && opts.ifMatch !== null) headers['If-Match'] = String(opts.ifMatch);
  if (opts.reason) headers['X-Change-Reason'] = headerReason(opts.reason);
  if (opts.signal) init.signal = opts.signal;

  let res;
  try {
    res = await fetch(`/api/v1${path}`, init);
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, null, 'Cannot reach flagd. Check your connection; retrying when you act again.');
  }
  let body = null;
  const text = res.status === 204 ? '' : await res.text();
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, body, text ? text.slice(0, 200) : `${res.status} ${res.statusText}`);
    if (res.status === 401 && !opts.noAuthRedirect) onUnauthorized(err);
    throw err;
  }
  const v = res.headers.get('X-Flag-Set-Version');
  if (body && typeof body === 'object' && v !== null) {
    Object.defineProperty(body, '_version', { value: Number(v), enumerable: false });
  }
  return body;
}

export const enc = encodeURIComponent;

export function envPath(env, rest = '') {
  return `/environments/${enc(env)}${rest}`;
}

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') u.set(k, String(v));
  }
  const s = u.toString();
  return s ? `?${s}` : '';
}
