"""Watches a decorator pipeline's run page while its driver adds steps, and prints what it saw as JSON.

usage: growing_dag.py URL TOKEN RUN GO_FILE

RUN's driver prints `driver waiting for the page`, waits for GO_FILE to exist, then adds one
step at a time (each after the previous one's result). The page is opened while the driver is
the run's only step: its DAG and pipeline console are read, an observer is installed that
records every DAG it draws (the step names, statuses and driver marks, with the pipeline
console's text at that moment), a marker is set on `window`, and only then GO_FILE is written.
The script waits for the run to end on the same page, never reloading it; the marker tells
whether the page was loaded again behind its back.

The test in tests/e2e/browser.rs makes the assertions; this script only looks.
"""
import json
import sys

from cdp import Browser

NODES = """Array.from(document.querySelectorAll('#dag .node')).map(n =>
  [n.dataset.step, n.dataset.status, n.dataset.driver === 'true' && n.classList.contains('driver'),
   n.textContent])"""
EDGES = """Array.from(document.querySelectorAll('#dag .edge')).map(e => [e.dataset.from, e.dataset.to])"""
PIPELINE = """(() => { const card = document.getElementById('pipeline');
  return {hidden: card.hidden, title: card.querySelector('h2').textContent,
          console: document.getElementById('pipeline-console').textContent}; })()"""
WATCH = f"""(() => {{
  window.__loadedOnce = true;
  window.__dags = [];
  const record = () => {{
    const nodes = {NODES};
    const names = nodes.map(n => n[0]).join(',');
    const last = window.__dags[window.__dags.length - 1];
    if (last && last.names === names) return;
    window.__dags.push({{names, nodes, at: Date.now(),
      console: document.getElementById('pipeline-console').textContent}});
  }};
  record();
  new MutationObserver(record).observe(document.getElementById('dag'),
    {{childList: true, subtree: true}});
  return true;
}})()"""
ENDED = """(() => { const t = document.getElementById('run-title').textContent;
  return ['succeeded', 'failed', 'aborted'].some(s => t.includes(s)) && t; })()"""


def main():
    base, token, run, go_file = sys.argv[1:5]
    with Browser() as browser:
        # Once with the token: the controller answers with a cookie and a redirect without it.
        browser.navigate(f"{base}/?token={token}")
        browser.wait_for("location.search === ''", "the token to be exchanged for a cookie")
        browser.navigate(f"{base}/runs/{run}")
        browser.wait_for("document.querySelectorAll('#dag .node').length > 0", "the driver's node")
        first = {"nodes": browser.eval(NODES), "edges": browser.eval(EDGES)}
        first["pipeline"] = browser.wait_for(
            f"(() => {{ const p = {PIPELINE}; return p.console.includes('waiting for the page') && p; }})()",
            "the pipeline console to show the driver's first line")
        browser.eval(WATCH)
        with open(go_file, "w"):
            pass  # the driver starts adding steps once this file exists
        title = browser.wait_for(ENDED, "the run to end", timeout=120)
        browser.wait_for("document.getElementById('pipeline-console-status').textContent.startsWith('step ')",
                         "the driver's log stream to end")
        result = {
            "before_go": first,
            "dags": browser.eval("window.__dags"),
            "title": title,
            "last_nodes": browser.eval(NODES),
            "edges": browser.eval(EDGES),
            "pipeline": browser.eval(PIPELINE),
            "same_page": browser.eval("window.__loadedOnce === true"),
            "page_errors": browser.errors,
        }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
