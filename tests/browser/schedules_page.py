"""Opens the schedules page, reads the row of a schedule and of a trigger, clicks the schedule's
Pause button and reports what the browser saw, as JSON.

usage: schedules_page.py URL SCHEDULE TRIGGER FIRED_RUN

FIRED_RUN is a run the schedule fired (run-now): its page says so.

The test in tests/e2e/browser.rs makes the assertions; this script only looks.
"""
import json
import sys

from cdp import Browser


def row(kind, name):
    return f"document.querySelector('tr[data-{kind}=\"{name}\"]')"


def main():
    base, schedule, trigger, fired_run = sys.argv[1:5]
    with Browser() as browser:
        browser.navigate(f"{base}/schedules")
        browser.wait_for(f"!!{row('schedule', schedule)} && !!{row('trigger', trigger)}", "both rows")
        result = {
            "nav": browser.eval("Array.from(document.querySelectorAll('header nav a')).map(a => a.textContent)"),
            "schedule": browser.eval(f"{row('schedule', schedule)}.textContent"),
            "trigger": browser.eval(f"{row('trigger', trigger)}.textContent"),
        }
        browser.eval(f"Array.from({row('schedule', schedule)}.querySelectorAll('button'))"
                     ".find(b => b.textContent === 'Pause').click()")
        result["after_pause"] = browser.wait_for(
            f"(() => {{ const r = {row('schedule', schedule)}; return r && r.textContent.includes('paused') && r.textContent; }})()",
            "the schedule to show paused")
        browser.navigate(f"{base}/runs/{fired_run}")
        result["fired_by"] = browser.wait_for(
            "(() => { const p = document.getElementById('fired-by'); return p && !p.hidden && p.textContent; })()",
            "the run page to say what fired the run")
        result["page_errors"] = browser.errors
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
