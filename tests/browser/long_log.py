"""Opens the console of a finished step whose log is long and reports what it shows, as JSON.

usage: long_log.py URL TOKEN RUN STEP

What the console shows once the step's log stream ended (it opens at the log's tail), whether
it offers to load earlier bytes, and what it shows after that button is clicked once.

The test in tests/e2e/browser.rs makes the assertions; this script only looks.
"""
import json
import sys

from cdp import Browser
from run_page import CONSOLE_DONE, click_step

CONSOLE = "document.getElementById('console').textContent"


def main():
    base, token, run, step = sys.argv[1:5]
    with Browser() as browser:
        browser.navigate(f"{base}/?token={token}")
        browser.wait_for("location.search === '' && !!document.querySelector('#runs tbody tr')", "the runs list")
        browser.navigate(f"{base}/runs/{run}")
        click_step(browser, step)
        first = browser.wait_for(CONSOLE_DONE, f"{step}'s console to end", timeout=30)
        result = {
            "first": first,
            "status": browser.eval("document.getElementById('console-status').textContent"),
            "button": browser.eval("!!document.getElementById('console-earlier')"),
        }
        browser.eval("document.getElementById('console-earlier').click()")
        result["after"] = browser.wait_for(
            f"(() => {{ const t = {CONSOLE}; return t.length > {len(first)} && t; }})()",
            "earlier bytes to show")
        result["page_errors"] = browser.errors
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
