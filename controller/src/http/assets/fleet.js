// The agents and queues pages: tables refreshed every two seconds (they come from heartbeats and
// broker statistics, which have no event stream).
import * as drover from './common.js';

const el = drover.el;
const page = document.body.dataset.page;
const content = el('div');
drover.mount(el('div', {}, el('h1', {}, page === 'agents' ? 'Agents' : 'Queues'), content));

function agents(doc) {
  if (!doc.agents.length) return el('p', {class: 'muted'}, 'No agent has sent a heartbeat yet. Start one with `drover agent --queue default`.');
  return el('section', {class: 'card'}, el('table', {id: 'agents'},
    el('tr', {}, ['agent', 'host', 'state', 'queues', 'busy / slots', 'current steps', 'last heartbeat', 'version'].map((h) => el('th', {}, h))),
    doc.agents.map((a) => {
      const state = !a.alive ? 'gone' : a.draining ? 'draining' : 'alive';
      const steps = a.current_steps.map((s) => el('div', {},
        el('a', {href: `/runs/${encodeURIComponent(s.run_id)}#step=${encodeURIComponent(s.step)}`}, s.step),
        el('span', {class: 'muted'}, ` attempt ${s.attempt} · ${drover.duration(s.started_at, null)}`)));
      return el('tr', {'data-agent': a.id}, el('td', {}, a.id), el('td', {}, `${a.host} (pid ${a.pid})`),
        el('td', {}, drover.badge(state)), el('td', {}, a.queues.join(', ')), el('td', {}, `${a.busy} / ${a.slots}`),
        el('td', {}, steps.length ? steps : '–'), el('td', {}, drover.ago(a.last_seen)), el('td', {}, a.version));
    })));
}

function queues(doc) {
  const warnings = doc.queues.filter((q) => q.warning).map((q) => el('div', {class: 'warning'}, `⚠ ${q.warning}`));
  const byReason = Object.entries(doc.dead_lettered_by_controller || {}).map(([r, n]) => `${n} ${r}`).join(', ');
  return el('div', {}, warnings,
    el('section', {class: 'card'}, el('table', {id: 'queues'},
      el('tr', {}, ['queue', 'broker queue', 'ready messages', 'consumers', 'waiting steps', ''].map((h) => el('th', {}, h))),
      doc.queues.map((q) => el('tr', {class: q.warning ? 'warn' : '', 'data-queue': q.name},
        el('td', {}, q.name), el('td', {}, el('code', {}, q.broker_queue)), el('td', {}, String(q.messages)),
        el('td', {}, String(q.consumers)), el('td', {}, String(q.waiting_steps)),
        el('td', {}, q.warning ? 'no consumer' : q.exists ? '' : 'not declared yet'))))),
    el('section', {class: 'card', id: 'dead-letters'}, el('h2', {}, 'Dead letters'),
      el('p', {}, `${doc.dead_letters} message(s) in the dead-letter queue`,
        byReason ? ` · dead-lettered by this controller since it started: ${byReason}` : '')));
}

async function load() {
  try {
    const doc = await drover.api(page === 'agents' ? '/api/v1/agents' : '/api/v1/queues');
    content.replaceChildren(page === 'agents' ? agents(doc) : queues(doc));
    drover.live(true, '● refreshed every 2s');
  } catch (e) {
    content.replaceChildren(el('div', {class: 'error'}, e.message));
    drover.live(false, '○ error');
  }
}
load();
setInterval(load, 2000);
