"""Starts a new run from a finished run's "New run" form with one parameter changed, as a user
would, and reports what the browser saw, as JSON.

usage: new_run.py URL RUN PARAM VALUE

The controller has no token, so the form's POST must carry the CSRF token the page fetched. The
form is opened, the parameter's input set to VALUE, the form submitted; the page then moves to
the new run's page, whose parameters are read.

The test in tests/e2e/browser.rs makes the assertions; this script only looks.
"""
import json
import sys

from cdp import Browser


def main():
    base, run, param, value = sys.argv[1:5]
    with Browser() as browser:
        browser.navigate(f"{base}/runs/{run}")
        browser.wait_for(f"!!document.getElementById('param-{param}')", f"the New run form's {param} input")
        before = browser.eval(f"document.getElementById('param-{param}').value")
        browser.eval("document.getElementById('new-run-card').open = true")
        browser.eval(f"""(() => {{ const input = document.getElementById('param-{param}');
            input.value = {json.dumps(value)}; input.dispatchEvent(new Event('input', {{bubbles: true}})); }})()""")
        browser.eval("document.getElementById('new-run-submit').click()")
        new_path = browser.wait_for(
            f"location.pathname !== '/runs/{run}' && location.pathname.startsWith('/runs/') && location.pathname",
            "the page to move to the new run", timeout=30)
        browser.wait_for("document.getElementById('params').textContent", "the new run's parameters")
        result = {
            "prefilled": before,
            "new_run": new_path.split("/")[-1],
            "params": browser.eval("document.getElementById('params').textContent"),
            "origin": browser.eval("document.getElementById('rerun-of').textContent"),
            "status": browser.eval("document.getElementById('new-run-status') && document.getElementById('new-run-status').textContent"),
            "page_errors": browser.errors,
        }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
