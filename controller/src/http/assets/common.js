// Shared helpers for drover's pages: building DOM, formatting times and sizes, calling the API.
// Other modules import them: `import * as drover from './common.js'`.

/** An element: el('a', {href: '/x', class: 'y', onclick: f}, 'text', child, ...). */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'class') node.className = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** The CSRF token a write carries (GET /api/v1/csrf also sets its cookie); fetched once. */
let csrf = null;
async function csrfToken(fresh) {
  if (fresh || !csrf) {
    const response = await fetch('/api/v1/csrf', {credentials: 'same-origin', cache: 'no-store'});
    if (!response.ok) throw new Error(`cannot get a CSRF token: ${response.status}`);
    csrf = (await response.json()).token;
  }
  return csrf;
}

/**
 * GET (or other) a JSON document; throws an Error with the server's message. Writes carry the
 * CSRF token (`x-drover-csrf`), fetched again once if the controller refuses it (a restart).
 */
export async function api(path, options, retried) {
  const opts = Object.assign({credentials: 'same-origin'}, options);
  const method = (opts.method || 'GET').toUpperCase();
  const writes = method !== 'GET' && method !== 'HEAD';
  if (writes) opts.headers = Object.assign({}, opts.headers, {'x-drover-csrf': await csrfToken(retried)});
  const response = await fetch(path, opts);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (writes && !retried && response.status === 403 && body && /CSRF/.test(body.message || '')) {
    return api(path, options, true);
  }
  if (!response.ok) {
    const message = body && body.message ? body.message : `${response.status} ${text}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

export function pad(n) { return String(n).padStart(2, '0'); }

/** Local date and time of a ms timestamp. */
export function time(ms) {
  if (!ms) return '–';
  const d = new Date(ms), p = pad;
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** A duration in ms as 850ms, 4.2s, 3m 04s or 2h 05m. */
export function span(ms) {
  if (ms === null || ms === undefined || ms < 0) return '–';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${pad(Math.floor(s % 3600 / 60))}m`;
}

/** The time from start to end (or to now while it is still going). */
export function duration(start, end) {
  if (!start) return '–';
  return span((end || Date.now()) - start);
}

export function ago(ms) { return ms ? `${span(Date.now() - ms)} ago` : '–'; }

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = n / 1024, i = 0;
  while (value >= 1024 && i < units.length - 1) { value /= 1024; i++; }
  return `${value.toFixed(1)} ${units[i]}`;
}

export function badge(status) { return el('span', {class: `badge s-${status}`}, status); }

/** The header's live indicator. */
export function live(on, text) {
  const node = document.getElementById('live');
  if (!node) return;
  node.textContent = text;
  node.className = on ? 'live on' : 'live';
}

/** Replaces the content of #app (or another node). */
export function mount(node, target) {
  const app = target || document.getElementById('app');
  app.replaceChildren(node);
}

export function artifactUrl(run, step, output) {
  return `/api/v1/runs/${encodeURIComponent(run)}/steps/${encodeURIComponent(step)}/artifacts/${encodeURIComponent(output)}`;
}

/** Calls f at most once per `ms`, the last call winning. */
export function throttle(f, ms) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; f(); }, ms);
  };
}
