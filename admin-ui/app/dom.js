// Small DOM helpers. Everything is built with createElement + textContent: no
// innerHTML, no style attributes (the server's Content-Security-Policy forbids them).

/**
 * h('button.btn.primary', {type: 'button', onclick: fn, aria: {label: 'x'}}, 'Text', child)
 * Attributes: class, text, dataset, aria, on<event> (addEventListener), props (assigned
 * as properties), anything else via setAttribute. `style` is refused on purpose.
 */
export function h(tag, attrs, ...children) {
  const [name, ...classes] = tag.split('.');
  const el = document.createElement(name || 'div');
  if (classes.length) el.classList.add(...classes);
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') {
      for (const c of String(v).split(/\s+/).filter(Boolean)) el.classList.add(c);
    } else if (k === 'text') {
      el.textContent = String(v);
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else if (k === 'aria') {
      for (const [a, av] of Object.entries(v)) if (av !== undefined && av !== null) el.setAttribute(`aria-${a}`, String(av));
    } else if (k === 'props') {
      Object.assign(el, v);
    } else if (k === 'vars') {
      for (const [cv, val] of Object.entries(v)) el.style.setProperty(cv, String(val));
    } else if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'style') {
      throw new Error('style attributes are not allowed (CSP); use a class or vars');
    } else if (v === true) {
      el.setAttribute(k, '');
    } else {
      el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

let uid = 0;
export function nextId(prefix = 'id') {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled form field: returns {wrap, input}. */
export function field(label, input, hint) {
  if (!input.id) input.id = nextId('f');
  const wrap = h('div.field', h('label', { for: input.id, text: label }), input);
  if (hint) {
    const hid = nextId('hint');
    wrap.append(h('div.hint', { id: hid, text: hint }));
    input.setAttribute('aria-describedby', hid);
  }
  return wrap;
}

// ---- formatting -----------------------------------------------------------------

export function relTime(iso, now = Date.now()) {
  if (!iso) return '';
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return String(iso);
  const s = Math.round((now - t) / 1000);
  if (s < 0 && s > -60) return 'just now';
  if (s < 0) return absTime(iso);
  if (s < 10) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const hr = Math.floor(m / 60);
  if (hr < 24) return `${hr} h ago`;
  const d = Math.floor(hr / 24);
  if (d < 30) return `${d} d ago`;
  return new Date(t).toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
}

export function absTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
}

/** <time> with a relative label and the absolute time as title; refreshed by tickTimes(). */
export function timeEl(iso) {
  return h('time', { datetime: iso || '', title: absTime(iso), text: relTime(iso), class: 'rel-time' });
}

export function tickTimes(root = document) {
  const now = Date.now();
  for (const t of root.querySelectorAll('time.rel-time')) {
    const iso = t.getAttribute('datetime');
    if (iso) t.textContent = relTime(iso, now);
  }
}

export function fmtInt(n) {
  return Number(n).toLocaleString('en-US');
}

export function pretty(v) {
  return JSON.stringify(v, null, 2);
}

export function debounce(fn, ms) {
  let t = null;
  const d = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
  d.cancel = () => clearTimeout(t);
  return d;
}

export function deepEqual(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

export function clone(v) {
  return v === undefined ? undefined : JSON.parse(JSON.stringify(v));
}

/** An inline SVG icon built with the DOM (no innerHTML). */
const ICONS = {
  flag: 'M4 21V4m0 0h11l-1.5 4L15 12H4',
  history: 'M3 12a9 9 0 1 0 3-6.7M3 4v5h5M12 7v5l3 2',
  fleet: 'M4 6h16v5H4zM4 13h16v5H4zM7 8.5h.01M7 15.5h.01',
  bell: 'M6 16V11a6 6 0 1 1 12 0v5l2 2H4zM10 20a2 2 0 0 0 4 0',
  audit: 'M9 4h6l1 2h3v15H5V6h3zM9 11h6M9 15h6',
  people: 'M16 20v-1a4 4 0 0 0-4-4H7a4 4 0 0 0-4 4v1M9.5 11a3.5 3.5 0 1 0 0-7 3.5 3.5 0 0 0 0 7zM21 20v-1a4 4 0 0 0-3-3.9M16 4.1a3.5 3.5 0 0 1 0 6.8',
  key: 'M8 19a4 4 0 1 1 0-8 4 4 0 0 1 0 8zM10.8 12.2 20 3M16.5 6.5l2.5 2.5M14 9l2 2',
  search: 'M11 18a7 7 0 1 0 0-14 7 7 0 0 0 0 14zm9 3-4.5-4.5',
  plus: 'M12 5v14M5 12h14',
  back: 'M15 18l-6-6 6-6',
  revert: 'M9 14L4 9l5-5M4 9h11a5 5 0 0 1 0 10h-3',
  menu: 'M4 7h16M4 12h16M4 17h16',
  close: 'M6 6l12 12M18 6L6 18',
  check: 'M5 12l5 5 9-10',
  alert: 'M12 9v4m0 4h.01M10.3 3.9 2.4 18a2 2 0 0 0 1.7 3h15.8a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z',
  logout: 'M15 17l5-5-5-5M20 12H9M12 21H5a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1h7',
  diff: 'M12 3v18M5 8h4M7 6v4M15 16h4',
  chevron: 'M9 6l6 6-6 6',
  chevronDown: 'M6 9l6 6 6-6',
  lock: 'M7 11V8a5 5 0 0 1 10 0v3M5 11h14v10H5zM12 15v2',
  request: 'M6 3v12M6 15a3 3 0 1 0 0 6 3 3 0 0 0 0-6zM18 21V9a4 4 0 0 0-4-4h-4M12 2 9 5l3 3',
};
const SVGNS = 'http://www.w3.org/2000/svg';
export function icon(name, cls = '') {
  const svg = document.createElementNS(SVGNS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', `icon ${cls}`.trim());
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const p = document.createElementNS(SVGNS, 'path');
  p.setAttribute('d', ICONS[name] || '');
  svg.append(p);
  return svg;
}
