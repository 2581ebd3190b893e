"""Watches a run page's scalar charts while its step reports, and prints what it saw as JSON.

usage: scalars_page.py URL TOKEN RUN GO_FILE SCREENSHOT

RUN's step `report` (tests/e2e/py/scalars.py) reports its scalars, then waits for GO_FILE. The
page is opened on that step while it runs; once both the step panel and the run's scalars card
show a chart per title, the points each chart draws (its `data-points`), its series' labels in
uPlot's legend and whether it has a canvas are read, GO_FILE is written and the page is watched
until the run ends; then the page is opened again and read the same way. Whether uPlot's
stylesheet loaded is read too (a stylesheet the Content-Security-Policy blocked has no
rules), and a screenshot of the page with its charts is written to SCREENSHOT.

The test in tests/e2e/browser.rs makes the assertions; this script only looks.
"""
import json
import sys

from cdp import Browser

CHARTS = """(selector => Array.from(document.querySelectorAll(selector + ' .scalar-chart')).map(c => ({
  step: c.dataset.step, title: c.dataset.title,
  points: c.dataset.points ? JSON.parse(c.dataset.points) : null,
  legend: Array.from(c.querySelectorAll('.u-legend .u-series .u-label')).map(l => l.textContent),
  canvas: c.querySelector('canvas') !== null,
})))"""
COMPLETE = f"""(() => {{
  const count = (charts) => charts.reduce((n, c) => n + Object.values(c.points || {{}})
    .reduce((m, points) => m + points.length, 0), 0);
  const panel = {CHARTS}('#step-scalars'), run = {CHARTS}('#run-scalars');
  return count(panel) === 20 && count(run) === 20 && {{panel, run}};
}})()"""
STYLED = """Array.from(document.styleSheets).some(s => (s.href || '').endsWith('/assets/uplot.css')
  && s.cssRules.length > 0)"""
ENDED = """(() => { const t = document.getElementById('run-title').textContent;
  return ['succeeded', 'failed', 'aborted'].some(s => t.includes(s)) && t; })()"""


def main():
    base, token, run, go_file, shot = sys.argv[1:6]
    with Browser() as browser:
        browser.navigate(f"{base}/?token={token}")
        browser.wait_for("location.search === ''", "the token to be exchanged for a cookie")
        browser.navigate(f"{base}/runs/{run}#step=report")
        running = browser.wait_for(COMPLETE, "every reported point in both chart views", timeout=90)
        status = browser.eval("""(() => { const n = document.querySelector('#dag .node[data-step="report"]');
          return n && n.dataset.status; })()""")
        result = {
            "while_running": running,
            "step_status": status,
            "panel_hidden": browser.eval("document.getElementById('step-scalars').hidden"),
            "card_hidden": browser.eval("document.getElementById('run-scalars').hidden"),
            "styled": browser.eval(STYLED),
        }
        browser.screenshot(shot)
        with open(go_file, "w"):
            pass  # the step returns once this file exists
        result["title"] = browser.wait_for(ENDED, "the run to end", timeout=90)
        # A page opened on the ended run draws the same charts from the stored points.
        browser.navigate(f"{base}/runs/{run}#step=report")
        result["after_end"] = browser.wait_for(COMPLETE, "every point on the ended run's page", timeout=30)
        result["page_errors"] = browser.errors
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
