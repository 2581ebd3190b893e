// The run page's "New run" form: the pipeline's parameters, prefilled with this run's values;
// submitting it asks the controller to run the pipeline again as it was submitted, with the
// changed values, and opens the new run.
import * as drover from './common.js';

const el = drover.el;

/** The form for run `runId`, whose effective parameters are `params`. */
export function newRunForm(runId, params) {
  const inputs = Object.entries(params).map(([name, value]) =>
    [name, value, el('input', {name, value, id: `param-${name}`, 'aria-label': name})]);
  const status = el('p', {class: 'muted', id: 'new-run-status', role: 'status'});
  const button = el('button', {type: 'submit', id: 'new-run-submit'}, 'Start new run');
  const submit = async (event) => {
    event.preventDefault();
    const changed = {};
    for (const [name, before, input] of inputs) if (input.value !== before) changed[name] = input.value;
    button.disabled = true;
    status.textContent = 'submitting…';
    try {
      const accepted = await drover.api(`/api/v1/runs/${encodeURIComponent(runId)}/rerun`, {
        method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({params: changed}),
      });
      status.textContent = `submitted run ${accepted.run_id}`;
      location.assign(`/runs/${encodeURIComponent(accepted.run_id)}`);
    } catch (e) {
      status.textContent = `not submitted: ${e.message}`;
      button.disabled = false;
    }
  };
  return el('form', {id: 'new-run', onsubmit: submit},
    inputs.length
      ? el('table', {class: 'kv'}, inputs.map(([name, , input]) => el('tr', {}, el('td', {}, el('label', {for: input.id}, name)), el('td', {}, input))))
      : el('p', {class: 'muted'}, 'This pipeline declares no parameters; the new run repeats it as submitted.'),
    el('p', {}, button), status);
}
