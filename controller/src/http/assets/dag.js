// The pipeline's DAG as SVG: steps laid out in rows by topological level (a step sits one row
// below its deepest parent), ordered within a row by their parents' positions, edges drawn from
// each parent to its children, nodes coloured by status. A dynamic run's driver (the pipeline
// function, which adds the other steps while it runs) is marked; the DAG is drawn again from
// each run event, so added steps appear as they come.
import * as drover from './common.js';
import {STEP_STATUSES} from './contract.js';

const DAG = {W: 200, H: 56, GAP_X: 36, GAP_Y: 54, PAD: 16};
const SVG_NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

/** {positions: name -> {x, y}, width, height} for steps given parents-first. */
function layoutDag(steps) {
  const level = {};
  for (const s of steps) {
    level[s.name] = s.parents.reduce((deepest, p) => Math.max(deepest, (level[p] ?? -1) + 1), 0);
  }
  const rows = [];
  steps.forEach((s, i) => { (rows[level[s.name]] ||= []).push({name: s.name, parents: s.parents, order: i}); });
  const column = {};
  for (const row of rows) {
    // Barycentre of the parents' columns keeps chains straight and crossings few.
    for (const n of row) {
      const cols = n.parents.map((p) => column[p]).filter((c) => c !== undefined);
      n.key = cols.length ? cols.reduce((a, b) => a + b, 0) / cols.length : n.order;
    }
    row.sort((a, b) => a.key - b.key || a.order - b.order);
    row.forEach((n, i) => { column[n.name] = i - (row.length - 1) / 2; });
  }
  const widest = Math.max(1, ...rows.map((r) => r.length));
  const width = widest * DAG.W + (widest - 1) * DAG.GAP_X + 2 * DAG.PAD;
  const height = rows.length * DAG.H + Math.max(0, rows.length - 1) * DAG.GAP_Y + 2 * DAG.PAD;
  const positions = {};
  rows.forEach((row, r) => row.forEach((n) => {
    positions[n.name] = {
      x: width / 2 + column[n.name] * (DAG.W + DAG.GAP_X) - DAG.W / 2,
      y: DAG.PAD + r * (DAG.H + DAG.GAP_Y),
    };
  }));
  return {positions, width, height};
}

/** What a node's second line says. */
function nodeDetail(step) {
  if (step.status === 'cached') return 'cached · cache hit';
  if (step.pending_reason && step.pending_reason.reason === 'waiting_for_callback') return 'pending · waiting for callback';
  if (step.pending_reason && step.pending_reason.reason === 'queue_full') return 'pending · queue full';
  const time = step.started_at ? ` · ${drover.duration(step.started_at, step.ended_at)}` : '';
  const attempt = step.attempt > 1 ? ` · attempt ${step.attempt}` : '';
  return `${step.driver ? 'driver · ' : ''}${step.status}${time}${attempt}`;
}

/** Draws the run's DAG; `onSelect(name)` is called when a node is clicked. */
export function drawDag(run, selected, onSelect) {
  const {positions, width, height} = layoutDag(run.steps);
  const root = svg('svg', {width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `pipeline of ${run.steps.length} steps`});
  root.append(svg('defs', {}, svg('marker', {id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse'},
  svg('path', {d: 'M 0 0 L 10 5 L 0 10 z', fill: '#94a3b8'}))));
  for (const step of run.steps) {
    const to = positions[step.name];
    for (const parent of step.parents) {
      const from = positions[parent];
      if (!from) continue;
      const x1 = from.x + DAG.W / 2, y1 = from.y + DAG.H, x2 = to.x + DAG.W / 2, y2 = to.y;
      const mid = (y1 + y2) / 2;
      root.append(svg('path', {class: 'edge', d: `M ${x1} ${y1} C ${x1} ${mid}, ${x2} ${mid}, ${x2} ${y2 - 2}`,
        'marker-end': 'url(#arrow)', 'data-from': parent, 'data-to': step.name}));
    }
  }
  for (const step of run.steps) {
    const {x, y} = positions[step.name];
    const classes = `node st-${step.status}${step.driver ? ' driver' : ''}${step.name === selected ? ' selected' : ''}`;
    const node = svg('g', {class: classes, transform: `translate(${x},${y})`, 'data-step': step.name,
      'data-status': step.status, 'data-driver': String(Boolean(step.driver)), tabindex: 0},
    svg('title', {}, step.driver ? `${step.name}: the pipeline's driver, ${step.status}` : `${step.name}: ${step.status}`),
    svg('rect', {width: DAG.W, height: DAG.H, rx: 8, fill: `var(--${step.status}, #e5e7eb)`}),
    svg('text', {x: 12, y: 23, 'font-weight': 600}, truncate(step.name, 24)),
    svg('text', {x: 12, y: 42, class: 'sub'}, truncate(nodeDetail(step), 30)));
    node.addEventListener('click', () => onSelect(step.name));
    node.addEventListener('keydown', (e) => { if (e.key === 'Enter') onSelect(step.name); });
    root.append(node);
  }
  return root;
}

function truncate(text, n) { return text.length > n ? `${text.slice(0, n - 1)}…` : text; }

/** The colour key. */
export function dagLegend() {
  return drover.el('div', {class: 'legend'}, STEP_STATUSES.map((s) => drover.badge(s)));
}
