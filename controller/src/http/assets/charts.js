// Line charts of the scalars steps report: one chart per title, one line per series, drawn with
// uPlot and kept current by the run's scalars stream. Each chart's element carries the points it
// draws in `data-points` ({series: [[iteration, value], ...]}), so what is drawn can be checked.
import * as drover from './common.js';
import uPlot from './uplot.js';

const el = drover.el;
const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];
const HEIGHT = 220;

let styled = false;
/** uPlot's stylesheet, linked once by the first page that draws a chart. */
function linkStyle() {
  if (styled) return;
  styled = true;
  document.head.append(el('link', {rel: 'stylesheet', href: '/assets/uplot.css'}));
}

/**
 * One scalars stream per run, shared by every view of the page (the run's charts and the step
 * panel's), so charts cost a browser one connection however many views follow the run.
 * `listener(step)` is called for each step whose scalars changed; returns an unsubscribe.
 */
const streams = new Map();
function subscribe(runId, listener) {
  let stream = streams.get(runId);
  if (!stream) {
    const source = new EventSource(`/api/v1/runs/${encodeURIComponent(runId)}/scalars/stream`);
    stream = {source, listeners: new Set(), changed: new Set()};
    const current = stream;
    source.addEventListener('scalars', (e) => {
      const step = JSON.parse(e.data).step;
      current.changed.add(step);
      for (const l of current.listeners) l(step);
    });
    // The run ended: nothing more can change, and a reconnect would only replay the same steps.
    source.addEventListener('end', () => { source.close(); });
    streams.set(runId, stream);
  } else {
    // A view that joins late hears of what already changed.
    for (const step of stream.changed) setTimeout(() => listener(step), 0);
  }
  stream.listeners.add(listener);
  const joined = stream;
  return () => {
    joined.listeners.delete(listener);
    if (!joined.listeners.size && streams.get(runId) === joined) {
      joined.source.close();
      streams.delete(runId);
    }
  };
}

/** uPlot's columns: the iterations of every series, then each series' value there (or null). */
export function columns(lines) {
  const xs = [...new Set(lines.flatMap((l) => l.points.map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = lines.map((l) => {
    const column = new Array(xs.length).fill(null);
    for (const [x, y] of l.points) column[index.get(x)] = y;
    return column;
  });
  return [xs, ...ys];
}

/** One chart: a title's series of one step. */
class Chart {
  constructor(step, title) {
    this.root = el('div', {class: 'scalar-chart', 'data-step': step, 'data-title': title});
    this.title = title;
    this.names = null;
    this.plot = null;
  }

  draw(lines, width) {
    // A thinned series may not hold its latest point; it is drawn all the same.
    lines = lines.map((l) => {
      const end = l.points[l.points.length - 1];
      const latest = l.last && (!end || end[0] !== l.last[0] || end[1] !== l.last[1]);
      return latest ? Object.assign({}, l, {points: [...l.points, l.last]}) : l;
    });
    const points = Object.fromEntries(lines.map((l) => [l.series, l.points]));
    this.root.dataset.points = JSON.stringify(points);
    const sampled = lines.filter((l) => l.stride > 1).map((l) => `${l.series}: every ${l.stride}`);
    this.root.title = sampled.length ? `downsampled (${sampled.join(', ')})` : '';
    const names = lines.map((l) => l.series);
    const data = columns(lines);
    if (this.plot && JSON.stringify(names) === JSON.stringify(this.names)) {
      this.plot.setData(data);
      return;
    }
    if (this.plot) this.plot.destroy();
    this.names = names;
    const options = {
      title: this.title,
      width,
      height: HEIGHT,
      scales: {x: {time: false}},
      series: [{label: 'iteration'}, ...names.map((name, i) => ({
        label: name, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true,
      }))],
    };
    this.plot = new uPlot(options, data, this.root);
  }

  destroy() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

/**
 * Follows the scalars of `runId` (of `step` only, when given), drawing them in `box`: under a
 * heading per step unless one step is followed. `onShown(any)` tells whether there is anything
 * to see. Returns `{close()}`.
 */
export function followScalars(runId, step, box, onShown) {
  linkStyle();
  const enc = encodeURIComponent(runId);
  const groups = new Map(); // step -> {root, charts: Map(title -> Chart)}
  const loading = new Set();
  const again = new Set();
  let closed = false;

  const groupOf = (name) => {
    let group = groups.get(name);
    if (!group) {
      const charts = el('div', {class: 'scalar-charts'});
      const root = el('div', {class: 'scalar-step', 'data-step': name}, step ? null : el('h3', {}, name), charts);
      group = {root, box: charts, charts: new Map()};
      groups.set(name, group);
      box.append(root);
    }
    return group;
  };

  const width = () => Math.max(280, Math.min(640, (box.clientWidth || 480) - 8));

  async function load(name) {
    if (loading.has(name)) { again.add(name); return; }
    loading.add(name);
    try {
      const list = await drover.api(`/api/v1/runs/${enc}/scalars?step=${encodeURIComponent(name)}`);
      if (closed) return;
      const byTitle = new Map();
      for (const s of list.series) {
        if (!byTitle.has(s.title)) byTitle.set(s.title, []);
        byTitle.get(s.title).push(s);
      }
      const group = groupOf(name);
      for (const [title, lines] of byTitle) {
        let chart = group.charts.get(title);
        if (!chart) {
          chart = new Chart(name, title);
          group.charts.set(title, chart);
          group.box.append(chart.root);
        }
        chart.draw(lines, width());
      }
      if (onShown) onShown(groups.size > 0);
    } catch (_) {
      // The next change event loads again.
    } finally {
      loading.delete(name);
      if (again.delete(name) && !closed) load(name);
    }
  }

  const unsubscribe = subscribe(runId, (changed) => { if (!step || changed === step) load(changed); });
  if (onShown) onShown(false);
  return {
    close() {
      closed = true;
      unsubscribe();
      for (const group of groups.values()) for (const chart of group.charts.values()) chart.destroy();
      box.replaceChildren();
    },
  };
}
