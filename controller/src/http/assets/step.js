// The step panel of the run page: status, attempts, inputs, outputs, cache, the step's scalars
// as live charts, then the live console and the code (function source and requirements, or the
// command).
import * as drover from './common.js';
import {followLog} from './console.js';
import {followScalars} from './charts.js';
import {TERMINAL_STEP_STATUSES} from './contract.js';

/** Quotes an argv for display the way a POSIX shell would need it. */
function shellQuote(argv) {
  return argv.map((a) => (/^[\w@%+=:,./${}-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

function kvTable(rows) {
  return drover.el('table', {class: 'kv'}, rows.filter(Boolean).map(([k, v]) =>
    drover.el('tr', {}, drover.el('td', {}, k), drover.el('td', {}, v))));
}

export class StepPanel {
  constructor(runId, onClose) {
    this.runId = runId;
    this.onClose = onClose;
    this.name = null;
    this.follower = null;
    this.scalars = null;
    this.tab = 'console';
    this.root = drover.el('section', {class: 'card', id: 'step-panel'});
  }

  /** Shows `name` of `run`, keeping the console connected across updates of the same step. */
  show(run, name) {
    const step = run.steps.find((s) => s.name === name);
    if (!step) return;
    if (name !== this.name) this.rebuild(run, step);
    this.info.replaceChildren(...this.details(run, step));
  }

  rebuild(run, step) {
    this.close();
    this.name = step.name;
    this.info = drover.el('div');
    this.console = drover.el('pre', {class: 'console', id: 'console', 'aria-label': 'console'});
    this.consoleStatus = drover.el('div', {class: 'console-status', id: 'console-status'});
    this.consoleBox = drover.el('div', {}, this.console, this.consoleStatus);
    this.codeBox = drover.el('div', {id: 'code', hidden: true}, ...this.code(step));
    const tab = (key, label) => drover.el('button', {'data-tab': key, role: 'tab',
      'aria-selected': String(this.tab === key), onclick: () => this.select(key)}, label);
    this.tabs = drover.el('div', {class: 'tabs', role: 'tablist'}, tab('console', 'Console'), tab('code', 'Code'));
    const charts = drover.el('div');
    this.scalarsBox = drover.el('div', {id: 'step-scalars', hidden: true}, drover.el('h3', {}, 'Scalars'), charts);
    this.root.replaceChildren(this.info, this.scalarsBox, this.tabs, this.consoleBox, this.codeBox);
    this.select(this.tab);
    this.follower = followLog(this.runId, step.name, this.console, this.consoleStatus);
    this.scalars = followScalars(this.runId, step.name, charts, (any) => { this.scalarsBox.hidden = !any; });
  }

  select(key) {
    this.tab = key;
    for (const b of this.tabs.querySelectorAll('button')) b.setAttribute('aria-selected', String(b.dataset.tab === key));
    this.consoleBox.hidden = key !== 'console';
    this.codeBox.hidden = key !== 'code';
  }

  close() {
    if (this.follower) this.follower.close();
    if (this.scalars) this.scalars.close();
    this.follower = null;
    this.scalars = null;
    this.name = null;
  }

  details(run, step) {
    const el = drover.el;
    const live = run.status === 'running' && !TERMINAL_STEP_STATUSES.includes(step.status);
    const current = step.attempts.find((a) => a.attempt === step.attempt) || {};
    const cache = step.cache_key
      ? `${step.cache_hit ? 'hit' : 'miss'} · key ${step.cache_key.slice(0, 16)}…`
      : 'off (cache = false)';
    const head = el('h2', {}, step.name, ' ', drover.badge(step.status),
      el('button', {class: 'close', title: 'close', onclick: () => this.onClose()}, '×'),
      live ? el('button', {class: 'danger', style: 'margin-left:8px',
        onclick: (e) => abortRun(this.runId, step.name, e.target)}, 'Abort step') : null);
    const summary = kvTable([
      ['queue', step.queue],
      ['attempt', step.attempt ? `${step.attempt} of ${step.retries + 1}` : '–'],
      ['agent', current.agent || '–'],
      ['started', drover.time(step.started_at)],
      ['ended', drover.time(step.ended_at)],
      ['duration', drover.duration(step.started_at, step.ended_at)],
      step.exit_code !== null && step.exit_code !== undefined ? ['exit code', String(step.exit_code)] : null,
      step.pending_reason ? ['waiting', step.pending_reason.reason === 'waiting_for_callback'
        ? "for its pre_execute_callback's answer from the process running the pipeline's logic"
        : `for room on queue ${step.pending_reason.queue}`] : null,
      step.message ? ['message', step.message] : null,
      ['cache', el('span', {title: step.cache_key || ''}, cache)],
    ]);
    return [head, summary, ...this.attempts(step), ...this.inputs(run, step), ...this.outputs(step)];
  }

  attempts(step) {
    if (!step.attempts.length) return [];
    const el = drover.el;
    const rows = step.attempts.map((a) => el('tr', {},
      el('td', {}, String(a.attempt)), el('td', {}, a.agent || '–'),
      el('td', {}, drover.time(a.queued_at)), el('td', {}, drover.time(a.started_at)),
      el('td', {}, drover.time(a.ended_at)), el('td', {}, a.start || '–'),
      el('td', {}, a.exit_code === null || a.exit_code === undefined ? '–' : String(a.exit_code)),
      el('td', {}, a.outcome || (a.started_at ? 'running' : 'queued'), a.message ? el('div', {class: 'muted'}, a.message) : null)));
    return [el('h3', {}, 'Attempts'), el('table', {}, el('tr', {}, ['#', 'agent', 'queued', 'started', 'ended', 'start', 'exit', 'why it ended'].map((h) => el('th', {}, h))), rows)];
  }

  inputs(run, step) {
    const el = drover.el;
    const link = (ref) => {
      const [from, output] = ref.split('.');
      return el('a', {href: drover.artifactUrl(run.run_id, from, output)}, ref);
    };
    const rows = [];
    if (step.function) {
      for (const [name, value] of Object.entries(step.function.kwargs)) {
        const m = /^"\$\{([^.}]+\.[^}]+)\}"$/.exec(value);
        rows.push([name, m ? link(m[1]) : el('code', {}, value)]);
      }
    }
    const linked = new Set(rows.map(([, v]) => v.textContent));
    for (const ref of step.inputs) if (!linked.has(ref)) rows.push([ref, link(ref)]);
    if (step.command) rows.push(['command', el('code', {}, shellQuote(step.command))]);
    if (!rows.length) return [];
    return [el('h3', {}, 'Inputs'), kvTable(rows)];
  }

  outputs(step) {
    const el = drover.el;
    const entries = Object.entries(step.outputs);
    if (!entries.length) return [];
    return [el('h3', {}, 'Outputs'), el('table', {}, entries.map(([name, o]) => el('tr', {},
      el('td', {}, el('a', {href: drover.artifactUrl(this.runId, step.name, name), download: o.file_name}, name)),
      el('td', {}, o.file_name), el('td', {}, drover.bytes(o.size)),
      el('td', {title: o.digest}, el('code', {}, o.digest.replace(/^sha256:/, '').slice(0, 12))))))];
  }

  code(step) {
    const el = drover.el;
    if (step.function) {
      const f = step.function;
      return [
        el('h3', {}, `function ${f.entry}${f.python ? ` · python ${f.python}` : ''}`),
        el('pre', {class: 'code', id: 'code-source'}, f.source),
        el('h3', {}, 'Requirements'),
        f.requirements.length ? el('pre', {class: 'code'}, f.requirements.join('\n')) : el('p', {class: 'muted'}, 'none'),
      ];
    }
    const env = Object.entries(step.env || {});
    return [
      el('h3', {}, 'Command'),
      el('pre', {class: 'code', id: 'code-source'}, shellQuote(step.command || [])),
      env.length ? el('h3', {}, 'Environment') : null,
      env.length ? kvTable(env.map(([k, v]) => [k, el('code', {}, v)])) : null,
      step.timeout_ms ? el('p', {class: 'muted'}, `timeout ${drover.span(step.timeout_ms)}`) : null,
    ];
  }
}

/** Asks the controller to abort the run (or one step of it). */
export async function abortRun(runId, step, button) {
  const what = step ? `step ${step} of this run` : 'this run';
  if (!window.confirm(`Abort ${what}?`)) return;
  button.disabled = true;
  const query = step ? `?step=${encodeURIComponent(step)}` : '';
  try {
    await drover.api(`/api/v1/runs/${encodeURIComponent(runId)}/abort${query}`, {method: 'POST'});
    button.textContent = 'abort requested';
  } catch (e) {
    button.disabled = false;
    window.alert(`abort failed: ${e.message}`);
  }
}
