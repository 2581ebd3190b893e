"""Drives drover's run page in headless Chromium and prints what a user would see, as JSON.

usage: run_page.py URL TOKEN SEED_RUN LIVE_RUN SCREENSHOT GO_FILE

- LIVE_RUN is a running run whose `tick` step prints `waiting for the page`, waits for GO_FILE
  to exist, then prints `tick N <unix time>` lines: the page is opened while it runs; once its
  console shows the first line (the log stream is live) and is watched, GO_FILE is written, and
  the time each tick line reached the DOM is recorded (the browser's share of the live-log
  latency).
- SEED_RUN is the finished seed pipeline: its DAG, parameters, outputs, each step's console and
  code are collected, and a screenshot of the page with step_three open is saved.

The test in tests/e2e/browser.rs makes the assertions; this script only looks.
"""
import json
import sys

from cdp import Browser

DAG = """Array.from(document.querySelectorAll('#dag .node')).map(n => [n.dataset.step, n.dataset.status])"""
EDGES = """Array.from(document.querySelectorAll('#dag .edge')).map(e => [e.dataset.from, e.dataset.to])"""
TERMINAL = "['succeeded','failed','cached','skipped','aborted']"
CONSOLE_DONE = """(() => { const s = document.getElementById('console-status');
  return s && s.textContent.startsWith('step ') && document.getElementById('console').textContent; })()"""
WATCH_TICKS = """(() => {
  window.__ticks = {};
  const record = () => {
    const now = Date.now();
    for (const m of document.getElementById('console').textContent.matchAll(/tick (\\d+) (\\d+\\.\\d+)/g)) {
      if (!(m[1] in window.__ticks)) window.__ticks[m[1]] = [Number(m[2]), now];
    }
  };
  record();
  window.__watchedFrom = Date.now();
  new MutationObserver(record).observe(document.getElementById('console'),
    {childList: true, characterData: true, subtree: true});
  return true;
})()"""


def click_step(browser, step):
    browser.wait_for(f"!!document.querySelector('#dag .node[data-step=\"{step}\"]')", f"node {step}")
    browser.eval(f"""document.querySelector('#dag .node[data-step="{step}"]')
        .dispatchEvent(new MouseEvent('click', {{bubbles: true}}))""")
    browser.wait_for(f"""document.querySelector('#step-panel h2') &&
        document.querySelector('#step-panel h2').textContent.startsWith('{step}')""", f"panel of {step}")


def live_console(browser, base, run, go_file):
    browser.navigate(f"{base}/runs/{run}#step=tick")
    browser.wait_for("""!!document.getElementById('console') &&
        document.getElementById('console').textContent.includes('waiting for the page')""",
                     "the console of tick to show its first line")
    browser.eval(WATCH_TICKS)
    with open(go_file, "w"):
        pass  # the step starts printing ticks once this file exists
    text = browser.wait_for(CONSOLE_DONE, "tick's console to end", timeout=60)
    ticks = browser.eval("window.__ticks")
    watched_from = browser.eval("window.__watchedFrom")
    # Lines printed before the observer was installed say nothing about latency.
    latencies = [round(seen - printed * 1000, 1) for printed, seen in ticks.values()
                 if printed * 1000 >= watched_from]
    return {"console": text, "latencies_ms": sorted(latencies), "lines_seen": len(ticks)}


def seed_page(browser, base, run, screenshot):
    browser.navigate(f"{base}/runs/{run}")
    browser.wait_for(f"""(() => {{ const n = {DAG}; return n.length > 0 &&
        n.every(([_, s]) => {TERMINAL}.includes(s)); }})()""", "every step to show a final status")
    page = {
        "title": browser.eval("document.getElementById('run-title').textContent"),
        "dag": browser.eval(DAG),
        "edges": browser.eval(EDGES),
        "params": browser.eval("document.getElementById('params').textContent"),
        "outputs": browser.eval("Array.from(document.querySelectorAll('#outputs a')).map(a => a.textContent)"),
        "output_links": browser.eval("Array.from(document.querySelectorAll('#outputs a')).map(a => a.getAttribute('href'))"),
        "controller_log": browser.wait_for("document.getElementById('controller-log').textContent", "the controller log"),
        "steps": {},
    }
    for step, _ in page["dag"]:
        click_step(browser, step)
        console = browser.wait_for(CONSOLE_DONE, f"{step}'s console to end", timeout=30)
        browser.eval("document.querySelector('.tabs button[data-tab=code]').click()")
        code = browser.wait_for("!document.getElementById('code').hidden && document.getElementById('code').textContent",
                                f"{step}'s code")
        browser.eval("document.querySelector('.tabs button[data-tab=console]').click()")
        page["steps"][step] = {
            "console": console,
            "code": code,
            "panel": browser.eval("document.getElementById('step-panel').textContent"),
        }
    # The picture for the README: the whole run page with the last step open.
    browser.wait_for("document.getElementById('console').textContent", "the console again")
    browser.screenshot(screenshot)
    return page


def main():
    base, token, seed_run, live_run, screenshot, go_file = sys.argv[1:7]
    with Browser() as browser:
        # Once with the token: the controller answers with a cookie and a redirect without it.
        browser.navigate(f"{base}/?token={token}")
        browser.wait_for("location.search === '' && !!document.querySelector('#runs tbody tr')", "the runs list")
        runs = browser.eval("Array.from(document.querySelectorAll('#runs tbody tr')).map(r => r.dataset.run)")
        result = {
            "runs_listed": runs,
            "live": live_console(browser, base, live_run, go_file),
            "seed": seed_page(browser, base, seed_run, screenshot),
        }
        # Every page above, its modules included, loaded and ran without an uncaught error.
        result["page_errors"] = browser.errors
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
