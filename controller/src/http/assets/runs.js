// The runs list: newest first, a page at a time, filtered by status and project (kept in the
// URL), refreshed as runs change.
import * as drover from './common.js';
import {RUN_STATUSES} from './contract.js';

const el = drover.el;
const query = new URLSearchParams(location.search);
const statuses = ['', ...RUN_STATUSES];
const statusSelect = el('select', {id: 'filter-status', onchange: changed},
  statuses.map((s) => el('option', {value: s, selected: s === (query.get('status') || '')}, s || 'any status')));
const projectSelect = el('select', {id: 'filter-project', onchange: changed}, el('option', {value: ''}, 'any project'));
const body = el('tbody');
const problem = el('div', {class: 'error', hidden: true});
const empty = el('p', {class: 'muted', hidden: true}, 'No runs match. Submit one with `drover run FILE`.');
const pager = el('p', {id: 'pager'});
let runs = [];
let projects = new Set(query.get('project') ? [query.get('project')] : []);

drover.mount(el('div', {},
  el('h1', {}, 'Runs'), problem,
  el('div', {class: 'filters'}, el('label', {}, 'Status ', statusSelect), el('label', {}, 'Project ', projectSelect)),
  el('section', {class: 'card'}, el('table', {id: 'runs'},
    el('thead', {}, el('tr', {}, ['name', 'project', 'version', 'status', 'steps', 'started', 'duration', 'run'].map((h) => el('th', {}, h)))),
    body), empty, pager)));

/** This page's query with `after` set (or dropped when null). */
function pageLink(after) {
  const q = new URLSearchParams(location.search);
  if (after) q.set('after', after); else q.delete('after');
  return q.toString() ? `?${q}` : location.pathname;
}

function changed() {
  const q = new URLSearchParams();
  if (statusSelect.value) q.set('status', statusSelect.value);
  if (projectSelect.value) q.set('project', projectSelect.value);
  history.replaceState(null, '', q.toString() ? `?${q}` : location.pathname);
  load();
}

function renderProjects() {
  const current = projectSelect.value || query.get('project') || '';
  projectSelect.replaceChildren(el('option', {value: ''}, 'any project'),
    ...[...projects].sort().map((p) => el('option', {value: p, selected: p === current}, p)));
}

function render() {
  body.replaceChildren(...runs.map((r) => {
    const steps = Object.entries(r.steps).map(([s, n]) => `${n} ${s}`).join(', ');
    return el('tr', {'data-run': r.run_id},
      el('td', {}, el('a', {href: `/runs/${encodeURIComponent(r.run_id)}`}, r.name)),
      el('td', {}, r.project), el('td', {}, r.version), el('td', {}, drover.badge(r.status)),
      el('td', {class: 'muted'}, steps), el('td', {}, drover.time(r.started_at || r.created_at)),
      el('td', {}, drover.duration(r.started_at, r.ended_at)), el('td', {}, el('code', {class: 'muted'}, r.run_id)));
  }));
  empty.hidden = runs.length > 0;
}

async function load() {
  const q = new URLSearchParams();
  if (statusSelect.value) q.set('status', statusSelect.value);
  if (projectSelect.value) q.set('project', projectSelect.value);
  const after = new URLSearchParams(location.search).get('after');
  if (after) q.set('after', after);
  try {
    const list = await drover.api(`/api/v1/runs?${q}`);
    runs = list.runs;
    pager.replaceChildren(...[
      after && el('a', {href: pageLink(null)}, '← newest runs'), after && list.next && ' · ',
      list.next && el('a', {href: pageLink(list.next), id: 'older'}, 'older runs →')].filter(Boolean));
    const before = projects.size;
    for (const r of runs) projects.add(r.project);
    if (projects.size !== before || projectSelect.options.length === 1) renderProjects();
    render();
    problem.hidden = true;
  } catch (e) {
    problem.textContent = `cannot list runs: ${e.message}`;
    problem.hidden = false;
  }
}

const reload = drover.throttle(load, 300);
const source = new EventSource('/api/v1/events');
source.addEventListener('hello', () => drover.live(true, '● live'));
source.addEventListener('run', reload);
source.addEventListener('error', () => drover.live(false, '○ reconnecting…'));
setInterval(() => { if (runs.some((r) => r.status === 'running')) render(); }, 1000);
load();
