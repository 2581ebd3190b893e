// The tasks page: the tasks registered with the controller (scripts that called Task.init),
// with their connected parameters and their script, refreshed every five seconds.
import * as drover from './common.js';

const el = drover.el;
const content = el('div');
drover.mount(el('div', {}, el('h1', {}, 'Tasks'), content));

function parameters(task) {
  const entries = Object.entries(task.parameters || {});
  if (!entries.length) return '–';
  return entries.map(([k, v]) => el('div', {}, el('code', {}, k), ` = ${v}`));
}

function tasks(doc) {
  if (!doc.tasks.length) {
    return el('p', {class: 'muted'}, 'No task is registered yet. Run a script that calls Task.init with DROVER_URL set to this controller.');
  }
  return el('section', {class: 'card'}, el('table', {id: 'tasks'},
    el('tr', {}, ['task', 'project', 'name', 'type', 'parameters', 'requirements', 'updated'].map((h) => el('th', {}, h))),
    doc.tasks.map((t) => el('tr', {'data-task': t.id},
      el('td', {}, el('details', {}, el('summary', {}, el('code', {}, t.id)),
        el('div', {class: 'muted'}, t.script_name || 'script'), el('pre', {}, t.script))),
      el('td', {}, t.project), el('td', {}, t.name), el('td', {}, t.task_type || '–'),
      el('td', {}, parameters(t)), el('td', {}, (t.requirements || []).join(', ') || '–'),
      el('td', {}, drover.ago(t.updated_at))))));
}

async function load() {
  try {
    const doc = await drover.api('/api/v1/tasks');
    // A script opened for reading stays open: refresh only when nothing is expanded.
    if (!content.querySelector('details[open]')) content.replaceChildren(tasks(doc));
    drover.live(true, '● refreshed every 5s');
  } catch (e) {
    content.replaceChildren(el('div', {class: 'error'}, e.message));
    drover.live(false, '○ error');
  }
}
load();
setInterval(load, 5000);
