// The schedules page: every schedule with its last and next firing and its last skipped slot,
// with pause, resume and run-now buttons, and every trigger with what it fired; refreshed every
// two seconds (schedules fire on the controller's clock, which has no event stream).
import * as drover from './common.js';

const el = drover.el;
const content = el('div');
drover.mount(el('div', {}, el('h1', {}, 'Schedules and triggers'), content));

const runLink = (id) => el('a', {href: `/runs/${encodeURIComponent(id)}`}, id);

function firing(f) {
  if (!f) return '–';
  return el('span', {}, runLink(f.run_id), el('span', {class: 'muted'}, ` ${drover.ago(f.at)}`));
}

function next(slot) {
  if (!slot) return '–';
  const wait = slot - Date.now();
  return wait > 0 ? `${drover.time(slot)} (in ${drover.span(wait)})` : 'now';
}

async function act(name, what, button) {
  button.disabled = true;
  try {
    await drover.api(`/api/v1/schedules/${encodeURIComponent(name)}/${what}`, {method: 'POST'});
    await load();
  } catch (e) {
    button.disabled = false;
    alert(`${what} ${name}: ${e.message}`);
  }
}

function schedules(list) {
  if (!list.length) return el('p', {class: 'muted'}, 'No schedule. Add one with `drover schedule add NAME --cron "0 2 * * *" FILE`.');
  return el('table', {id: 'schedules'},
    el('tr', {}, ['schedule', 'cron', 'pipeline', 'state', 'last fired', 'next', 'skipped', ''].map((h) => el('th', {}, h))),
    list.map((s) => {
      const toggle = el('button', {onclick: (e) => act(s.name, s.paused ? 'resume' : 'pause', e.target)}, s.paused ? 'Resume' : 'Pause');
      const now = el('button', {onclick: (e) => act(s.name, 'run-now', e.target)}, 'Run now');
      const skipped = s.last_skipped
        ? el('span', {title: s.last_skipped.reason}, `${s.skipped} · last ${drover.ago(s.last_skipped.at)}: ${s.last_skipped.reason}`)
        : '–';
      return el('tr', {'data-schedule': s.name},
        el('td', {}, s.name), el('td', {}, el('code', {}, s.cron), el('span', {class: 'muted'}, ` ${s.timezone}`)),
        el('td', {}, `${s.project}/${s.pipeline}`), el('td', {}, drover.badge(s.paused ? 'paused' : 'active')),
        el('td', {class: 'last-fired'}, firing(s.last_fired)), el('td', {class: 'next'}, next(s.next_slot)),
        el('td', {class: 'skipped'}, skipped), el('td', {}, toggle, ' ', now));
    }));
}

function triggers(list) {
  if (!list.length) return el('p', {class: 'muted'}, 'No trigger. Add one with `drover trigger add NAME --on-success PROJECT/PIPELINE FILE`.');
  return el('table', {id: 'triggers'},
    el('tr', {}, ['trigger', 'when', 'starts', 'parameter', 'fired', 'last fired'].map((h) => el('th', {}, h))),
    list.map((t) => el('tr', {'data-trigger': t.name},
      el('td', {}, t.name), el('td', {}, `${t.upstream} ${t.on === 'success' ? 'succeeds' : 'fails'}`),
      el('td', {}, t.downstream), el('td', {}, el('code', {}, t.param_name)), el('td', {}, String(t.fired)),
      el('td', {}, firing(t.last_fired)))));
}

async function load() {
  try {
    const [s, t] = await Promise.all([drover.api('/api/v1/schedules'), drover.api('/api/v1/triggers')]);
    content.replaceChildren(
      el('section', {class: 'card'}, el('h2', {}, 'Schedules'), schedules(s.schedules)),
      el('section', {class: 'card'}, el('h2', {}, 'Triggers'), triggers(t.triggers)));
    drover.live(true, '● refreshed every 2s');
  } catch (e) {
    content.replaceChildren(el('div', {class: 'error'}, e.message));
    drover.live(false, '○ error');
  }
}
load();
setInterval(load, 2000);
