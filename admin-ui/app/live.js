// Server-Sent Events from /api/v1/events: every committed change by anyone.
// EventSource reconnects on its own; if the server closes it for good (e.g. 401),
// we retry with a backoff while the page is signed in.

let es = null;
let retryTimer = null;
let backoff = 2000;
let handlers = { change: () => {}, environments: () => {}, resync: () => {}, status: () => {} };
let wanted = false;

function setStatus(s) {
  handlers.status(s);
}

function open() {
  if (!wanted) return;
  setStatus('connecting');
  es = new EventSource('/api/v1/events');
  es.addEventListener('open', () => {
    backoff = 2000;
    setStatus('live');
  });
  es.addEventListener('error', () => {
    if (!es) return;
    if (es.readyState === EventSource.CLOSED) {
      es = null;
      setStatus('offline');
      clearTimeout(retryTimer);
      retryTimer = setTimeout(open, backoff);
      backoff = Math.min(backoff * 2, 30000);
    } else {
      setStatus('reconnecting');
    }
  });
  es.addEventListener('change', (e) => {
    let data = null;
    try {
      data = JSON.parse(e.data);
    } catch {
      return;
    }
    handlers.change(data);
  });
  es.addEventListener('environments', () => handlers.environments());
  // The server missed events for us (we lagged): reload what is shown.
  es.addEventListener('resync', () => handlers.resync());
}

export function startLive(h) {
  handlers = { ...handlers, ...h };
  wanted = true;
  if (!es) open();
}

export function stopLive() {
  wanted = false;
  clearTimeout(retryTimer);
  if (es) {
    es.close();
    es = null;
  }
  setStatus('off');
}
