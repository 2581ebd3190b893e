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

/** Follows one step's log into a <pre>; returns {close()}. */
export function followLog(run, step, pre, status) {
  const term = new Terminal();
  let attempt = null, frame = null, closed = false, bytes = 0;
  const render = () => {
    frame = null;
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
    const head = term.dropped ? `… ${term.dropped} earlier line(s) not shown; see the raw log\n` : '';
    pre.textContent = head + term.text();
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  };
  const schedule = () => { if (!frame) frame = requestAnimationFrame(render); };
  const base = `/api/v1/runs/${encodeURIComponent(run)}/steps/${encodeURIComponent(step)}/log`;
  const source = new EventSource(`${base}/stream`);
  const say = (text) => { status.replaceChildren(...[].concat(text)); };
  say('connecting…');
  source.addEventListener('log', (e) => {
    const chunk = JSON.parse(e.data);
    if (attempt !== chunk.attempt) { attempt = chunk.attempt; }
    const raw = atob(chunk.data);
    const data = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) data[i] = raw.charCodeAt(i);
    bytes = chunk.offset + data.length;
    term.write(data);
    schedule();
    say(['following attempt ', String(attempt), ` · ${drover.bytes(bytes)} · `, rawLink()]);
  });
  source.addEventListener('attempt', (e) => {
    const moved = JSON.parse(e.data);
    attempt = moved.attempt;
    if (moved.previous) { term.feed(`\n──── attempt ${attempt} ────\n`); schedule(); }
  });
  source.addEventListener('end', (e) => {
    const end = JSON.parse(e.data);
    source.close();
    closed = true;
    if (!bytes) term.feed(end.attempt ? '(no output)' : '(this step ran no job: no output)');
    render();
    say([`step ${end.status || 'gone'} · ${drover.bytes(bytes)} · `, rawLink()]);
  });
  source.addEventListener('error', () => {
    if (!closed) say('connection lost; retrying…');
  });
  function rawLink() {
    const href = attempt ? `${base}?attempt=${attempt}` : base;
    return drover.el('a', {href, target: '_blank'}, 'raw log');
  }
  return {close() { closed = true; source.close(); }, terminal: term};
}
