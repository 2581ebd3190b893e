// A step's console: raw log bytes rendered like a terminal would (\r rewinds the line, so
// progress bars show their last state; ANSI escapes are dropped; invalid UTF-8 becomes U+FFFD),
// fed live from the log's event stream.
import * as drover from './common.js';

/** Terminal-like text from raw bytes. */
export class Terminal {
  constructor(maxLines) {
    this.maxLines = maxLines || 5000;
    this.lines = [''];
    this.col = 0;
    this.dropped = 0;
    this.decoder = new TextDecoder('utf-8');
    this.escape = '';
  }

  /** Appends raw bytes (a Uint8Array); multi-byte characters may span calls. */
  write(bytes) { this.feed(this.decoder.decode(bytes, {stream: true})); }

  feed(text) {
    let i = 0;
    while (i < text.length) {
      if (this.escape) {
        // Inside ESC [ ... final byte: swallow it; honour "erase line" (K).
        const c = text[i++];
        this.escape += c;
        if (this.escape.length === 2 && c !== '[') this.escape = '';
        else if (this.escape.length > 2 && c >= '@' && c <= '~') {
          if (c === 'K') this.setLine(this.line().slice(0, this.col));
          this.escape = '';
        }
        continue;
      }
      const next = text.slice(i).search(/[\r\n\x1b\b]/);
      const end = next === -1 ? text.length : i + next;
      if (end > i) this.put(text.slice(i, end));
      if (end >= text.length) break;
      const c = text[end];
      if (c === '\n') { this.lines.push(''); this.col = 0; this.trim(); }
      else if (c === '\r') this.col = 0;
      else if (c === '\b') this.col = Math.max(0, this.col - 1);
      else this.escape = c;
      i = end + 1;
    }
  }

  line() { return this.lines[this.lines.length - 1]; }
  setLine(text) { this.lines[this.lines.length - 1] = text; }

  /** Writes plain text at the cursor, overwriting what is there. */
  put(text) {
    let line = this.line();
    if (this.col > line.length) line += ' '.repeat(this.col - line.length);
    line = line.slice(0, this.col) + text + line.slice(this.col + text.length);
    this.col += text.length;
    this.setLine(line);
  }

  trim() {
    const excess = this.lines.length - this.maxLines;
    if (excess > 0) { this.lines.splice(0, excess); this.dropped += excess; }
  }

  text() { return this.lines.join('\n'); }
}

/** How much of a long log the console shows at first: its last bytes. */
export const TAIL_BYTES = 256 * 1024;

/** Bytes of a log shown from `start`, which is past byte 0 when its beginning is not loaded:
 * the partial line at `start` is left out so the first line shown is whole. */
function renderInto(term, chunks, start) {
  let skipping = start > 0;
  for (const data of chunks) {
    if (!skipping) { term.write(data); continue; }
    const newline = data.indexOf(10);
    if (newline === -1) continue;
    skipping = false;
    term.write(data.subarray(newline + 1));
  }
}

/** Follows one step's log into a <pre>, opening at the tail of a long log (the last
 * TAIL_BYTES, with a button that loads earlier bytes); returns {close()}. */
export function followLog(run, step, pre, status, tailBytes = TAIL_BYTES) {
  let term = new Terminal();
  // Raw bytes shown, in order: those of `startAttempt` from `start`, then later attempts'.
  const chunks = [];
  let start = 0, startAttempt = null;
  let attempt = null, frame = null, closed = false, bytes = 0, source = null, line = [];
  const render = () => {
    frame = null;
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
    const cut = start > 0 ? `… ${drover.bytes(start)} earlier not shown: load earlier bytes below\n` : '';
    const head = term.dropped ? `… ${term.dropped} earlier line(s) not shown; see the raw log\n` : '';
    pre.textContent = cut + head + term.text();
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  };
  const schedule = () => { if (!frame) frame = requestAnimationFrame(render); };
  const base = `/api/v1/runs/${encodeURIComponent(run)}/steps/${encodeURIComponent(step)}/log`;
  const say = (text) => {
    line = [].concat(text);
    status.replaceChildren(...line, ...(start > 0 ? [' · ', earlier] : []));
  };
  const earlier = drover.el('button', {type: 'button', id: 'console-earlier', onclick: loadEarlier},
    'load earlier bytes');
  say('connecting…');

  // Until the first newline after `start`, bytes belong to a line shown only in part.
  let skipping = false;
  function append(data) {
    chunks.push(data);
    if (!skipping) { term.write(data); return; }
    const newline = data.indexOf(10);
    if (newline === -1) return;
    skipping = false;
    term.write(data.subarray(newline + 1));
  }

  async function loadEarlier() {
    if (start === 0 || earlier.disabled) return;
    earlier.disabled = true;
    const from = Math.max(0, start - tailBytes);
    try {
      const response = await fetch(`${base}?attempt=${startAttempt}&offset=${from}&limit=${start - from}`,
        {credentials: 'same-origin'});
      if (!response.ok) throw new Error(`${response.status}`);
      chunks.unshift(new Uint8Array(await response.arrayBuffer()));
      start = from;
      term = new Terminal(Infinity);
      renderInto(term, chunks, start);
      render();
      say(line);
    } catch (e) {
      say([...line, ` · cannot load earlier bytes (${e.message})`]);
    } finally {
      earlier.disabled = false;
    }
  }

  function open(offset) {
    if (closed) return;
    skipping = offset > 0;
    source = new EventSource(offset ? `${base}/stream?offset=${offset}` : `${base}/stream`);
    source.addEventListener('log', (e) => {
      const chunk = JSON.parse(e.data);
      if (attempt !== chunk.attempt) { attempt = chunk.attempt; }
      if (startAttempt === null) startAttempt = chunk.attempt;
      const raw = atob(chunk.data);
      const data = new Uint8Array(raw.length);
      for (let i = 0; i < raw.length; i++) data[i] = raw.charCodeAt(i);
      bytes = chunk.offset + data.length;
      append(data);
      schedule();
      say(['following attempt ', String(attempt), ` · ${drover.bytes(bytes)} · `, rawLink()]);
    });
    source.addEventListener('attempt', (e) => {
      const moved = JSON.parse(e.data);
      attempt = moved.attempt;
      if (startAttempt === null) startAttempt = attempt;
      if (moved.previous) {
        append(new TextEncoder().encode(`\n──── attempt ${attempt} ────\n`));
        schedule();
      }
    });
    source.addEventListener('end', (e) => {
      const end = JSON.parse(e.data);
      source.close();
      closed = true;
      if (!bytes) term.feed(end.attempt ? '(no output)' : '(this step ran no job: no output)');
      render();
      const missing = end.missing ? ` · ${drover.bytes(end.missing)} did not arrive (reload later)` : '';
      say([`step ${end.status || 'gone'} · ${drover.bytes(bytes)}${missing} · `, rawLink()]);
    });
    source.addEventListener('error', () => {
      if (!closed) say('connection lost; retrying…');
    });
  }

  // A long log opens at its tail: its size first, then the stream from there.
  fetch(base, {method: 'HEAD', credentials: 'same-origin'})
    .then((response) => {
      const size = Number(response.headers.get('x-drover-log-size') || 0);
      const current = Number(response.headers.get('x-drover-log-attempt') || 0);
      if (response.ok && size > tailBytes && current) {
        start = size - tailBytes;
        startAttempt = current;
        attempt = current;
      }
    })
    .catch(() => {})
    .finally(() => open(start));

  function rawLink() {
    const href = attempt ? `${base}?attempt=${attempt}` : base;
    return drover.el('a', {href, target: '_blank'}, 'raw log');
  }
  return {close() { closed = true; if (source) source.close(); }, get terminal() { return term; }};
}
