// The run page: the DAG, parameters, outputs, the steps' scalars, timings, the controller's log
// and the step panel,
// kept current by the run's event stream without reloading. A dynamic run's DAG grows as its
// driver adds steps, and the driver's log is shown as the pipeline's own console.
import * as drover from './common.js';
import {followLog} from './console.js';
import {followScalars} from './charts.js';
import {dagLegend, drawDag} from './dag.js';
import {StepPanel, abortRun} from './step.js';
import {newRunForm} from './newrun.js';

const el = drover.el;
const runId = document.body.dataset.run;
const enc = encodeURIComponent(runId);
let run = null;
let selected = new URLSearchParams(location.hash.slice(1)).get('step');

const title = el('h1', {id: 'run-title'});
const meta = el('p', {class: 'meta'});
const error = el('div', {class: 'error', hidden: true});
const dag = el('div', {class: 'dag', id: 'dag'});
const params = el('div', {id: 'params'});
const outputs = el('div', {id: 'outputs'});
const hint = el('section', {class: 'card muted', id: 'hint'}, 'Click a step to see its status, attempts, inputs, outputs, console and code.');
const panel = new StepPanel(runId, () => select(null));
const side = el('div', {id: 'side'});
const timings = el('div', {id: 'timings'});
const controllerLog = el('pre', {class: 'console', id: 'controller-log'});
const origin = el('p', {class: 'meta', id: 'rerun-of', hidden: true});
const firedBy = el('p', {class: 'meta', id: 'fired-by', hidden: true});
const external = el('p', {class: 'meta', id: 'external', hidden: true},
  'executed by the process that submitted it (run_locally or start_locally), not by agents');
const newRun = el('details', {id: 'new-run-card'}, el('summary', {}, el('h2', {style: 'display:inline'}, 'New run')),
  el('p', {class: 'muted'}, 'Run this pipeline again as it was submitted, with the parameters below.'));
const pipelineLog = el('pre', {class: 'console', id: 'pipeline-console', 'aria-label': 'pipeline console'});
const pipelineStatus = el('div', {class: 'console-status', id: 'pipeline-console-status'});
const pipelineTitle = el('h2', {style: 'display:inline'}, 'Pipeline console');
const pipelineCard = el('section', {class: 'card', id: 'pipeline', hidden: true},
  el('details', {open: true}, el('summary', {}, pipelineTitle),
    el('p', {class: 'muted'}, "What the pipeline function printed: the log of the run's driver step."),
    pipelineLog, pipelineStatus));
let pipelineFollower = null;
const scalarCharts = el('div');
const scalarsCard = el('section', {class: 'card', id: 'run-scalars', hidden: true},
  el('h2', {}, 'Scalars'), el('p', {class: 'muted'}, 'What the steps reported with Logger.report_scalar, one chart per title.'),
  scalarCharts);

drover.mount(el('div', {},
  title, meta, origin, firedBy, external, error,
  el('div', {class: 'grid'},
    el('div', {},
      el('section', {class: 'card'}, el('h2', {}, 'Pipeline'), dagLegend(), dag),
      el('section', {class: 'card'}, el('div', {class: 'grid', style: 'grid-template-columns: 1fr 1fr'},
        el('div', {}, el('h2', {}, 'Parameters'), params), el('div', {}, el('h2', {}, 'Outputs'), outputs)))),
    side),
  el('section', {class: 'card'}, newRun),
  pipelineCard,
  scalarsCard,
  el('section', {class: 'card'}, el('h2', {}, 'Timings'), timings),
  el('section', {class: 'card'}, el('details', {open: true}, el('summary', {}, el('h2', {style: 'display:inline'}, 'Controller log')),
    el('p', {class: 'muted'}, 'What the controller did with this run, from its durable record.'), controllerLog))));

function select(name) {
  selected = name;
  history.replaceState(null, '', name ? `#step=${encodeURIComponent(name)}` : location.pathname);
  if (!name) panel.close();
  render();
}

function render() {
  if (!run) return;
  document.title = `${run.name} ${run.status} · drover`;
  const running = run.status === 'running';
  title.replaceChildren(...[run.name, ' ', drover.badge(run.status),
    running && el('button', {class: 'danger', id: 'abort', onclick: (e) => abortRun(runId, null, e.target)}, 'Abort run')].filter(Boolean));
  meta.replaceChildren(`run ${run.run_id} · project ${run.project || '–'} · version ${run.version || '–'}`
    + ` · submitted by ${run.submitted_by || '–'} · created ${drover.time(run.created_at)}`
    + ` · started ${drover.time(run.started_at)} · ended ${drover.time(run.ended_at)}`
    + ` · duration ${drover.duration(run.started_at, run.ended_at)}`);
  origin.hidden = !run.rerun_of;
  if (run.rerun_of) {
    origin.replaceChildren('rerun of ', el('a', {href: `/runs/${encodeURIComponent(run.rerun_of)}`}, run.rerun_of));
  }
  const by = run.fired_by;
  firedBy.hidden = !by;
  if (by && by.kind === 'schedule') {
    firedBy.replaceChildren('fired by schedule ', el('a', {href: '/schedules'}, by.name),
      by.slot ? ` for its slot at ${drover.time(by.slot)}` : ' (run now)');
  } else if (by) {
    firedBy.replaceChildren('fired by trigger ', el('a', {href: '/schedules'}, by.name), ' after run ',
      el('a', {href: `/runs/${encodeURIComponent(by.upstream)}`}, by.upstream));
  }
  external.hidden = !run.external;
  error.hidden = !run.error;
  error.textContent = run.error || '';
  dag.replaceChildren(run.steps.length ? drawDag(run, selected, select) : el('p', {class: 'muted'}, 'no steps'));
  renderParams();
  renderOutputs();
  renderTimings();
  renderPipelineConsole();
  if (selected && run.steps.some((s) => s.name === selected)) {
    panel.show(run, selected);
    // Re-attaching would reset the console's scroll position.
    if (side.firstChild !== panel.root) side.replaceChildren(panel.root);
  } else if (side.firstChild !== hint) {
    side.replaceChildren(hint);
  }
}

/** Follows the driver's log once the run shows one (its stream spans the driver's attempts). */
function renderPipelineConsole() {
  const driver = run.steps.find((s) => s.driver);
  pipelineCard.hidden = !driver;
  if (!driver || pipelineFollower) return;
  pipelineTitle.textContent = `Pipeline console (driver ${driver.name})`;
  pipelineFollower = followLog(runId, driver.name, pipelineLog, pipelineStatus);
}

function renderParams() {
  const entries = Object.entries(run.params);
  params.replaceChildren(entries.length
    ? el('table', {class: 'kv'}, entries.map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', {}, el('code', {}, v)))))
    : el('p', {class: 'muted'}, 'none'));
}

function renderOutputs() {
  const rows = [];
  for (const s of run.steps) {
    for (const [name, o] of Object.entries(s.outputs)) {
      rows.push(el('tr', {}, el('td', {}, `${s.name}.`, el('a', {href: drover.artifactUrl(runId, s.name, name), download: o.file_name}, name)),
        el('td', {}, drover.bytes(o.size))));
    }
  }
  outputs.replaceChildren(rows.length ? el('table', {}, rows) : el('p', {class: 'muted'}, 'none yet'));
}

function renderTimings() {
  const queuedOf = (s) => (s.attempts.length ? s.attempts[0].queued_at : null);
  const times = run.steps.flatMap((s) => [queuedOf(s), s.started_at, s.ended_at]).filter(Boolean);
  const start = Math.min(run.started_at || Infinity, ...times);
  const end = Math.max(run.ended_at || Date.now(), ...times);
  const scale = (t) => `${((t - start) / Math.max(1, end - start)) * 100}%`;
  const bar = (s) => {
    const q = queuedOf(s);
    const parts = [];
    if (q && (s.started_at || running(s))) parts.push(el('span', {class: 'wait', style: `left:${scale(q)};width:calc(${scale(s.started_at || Date.now())} - ${scale(q)})`}));
    if (s.started_at) parts.push(el('span', {style: `left:${scale(s.started_at)};width:calc(${scale(s.ended_at || Date.now())} - ${scale(s.started_at)})`}));
    return el('div', {class: 'gantt', title: 'yellow: waiting for an agent · blue: running'}, parts);
  };
  const running = (s) => s.status === 'running' || s.status === 'queued';
  const head = el('tr', {}, ['step', 'status', 'queued', 'started', 'ended', 'waited', 'ran', 'attempts', ''].map((h) => el('th', {}, h)));
  timings.replaceChildren(el('table', {}, head, run.steps.map((s) => {
    const q = queuedOf(s);
    const current = s.attempts.find((a) => a.attempt === s.attempt);
    const waited = current && current.started_at ? drover.span(current.started_at - current.queued_at) : '–';
    return el('tr', {}, el('td', {}, el('a', {href: `#step=${encodeURIComponent(s.name)}`, onclick: (e) => { e.preventDefault(); select(s.name); }}, s.name),
      s.driver ? el('span', {class: 'muted'}, ' (driver)') : null),
      el('td', {}, drover.badge(s.status)), el('td', {}, drover.time(q)), el('td', {}, drover.time(s.started_at)),
      el('td', {}, drover.time(s.ended_at)), el('td', {}, waited), el('td', {}, drover.duration(s.started_at, s.ended_at)),
      el('td', {}, String(s.attempts.length)), el('td', {style: 'width:30%'}, bar(s)));
  })));
}

const refreshLog = drover.throttle(async () => {
  try {
    const response = await fetch(`/api/v1/runs/${enc}/console`, {credentials: 'same-origin'});
    if (response.ok) controllerLog.textContent = await response.text();
  } catch (_) { /* the next update retries */ }
}, 500);

const source = new EventSource(`/api/v1/runs/${enc}/stream`);
source.addEventListener('run', (e) => {
  const first = !run;
  run = JSON.parse(e.data);
  // Built once: later updates must not reset what the user typed.
  if (first) newRun.append(newRunForm(runId, run.params));
  drover.live(true, run.status === 'running' ? '● live' : '● up to date');
  render();
  refreshLog();
});
source.addEventListener('end', () => {
  source.close();
  drover.live(true, '● run ended');
  refreshLog();
});
source.addEventListener('error', () => {
  if (source.readyState !== EventSource.CLOSED) drover.live(false, '○ reconnecting…');
});
followScalars(runId, null, scalarCharts, (any) => { scalarsCard.hidden = !any; });
// Running durations tick without new events.
setInterval(() => { if (run && run.status === 'running') renderTimings(); }, 1000);
