"""Opens the tasks page, reads the row of a registered task, expands its script, and opens the
page of a run executed by its submitter; reports what the browser saw, as JSON.

usage: tasks_page.py URL TASK_ID EXTERNAL_RUN

The test in tests/e2e/browser.rs makes the assertions; this script only looks.
"""
import json
import sys

from cdp import Browser


def main():
    base, task_id, external_run = sys.argv[1:4]
    row = f"document.querySelector('tr[data-task=\"{task_id}\"]')"
    with Browser() as browser:
        browser.navigate(f"{base}/tasks")
        browser.wait_for(f"!!{row}", "the task's row")
        result = {
            "nav": browser.eval("Array.from(document.querySelectorAll('header nav a')).map(a => a.textContent)"),
            "headers": browser.eval("Array.from(document.querySelectorAll('#tasks th')).map(th => th.textContent)"),
            "cells": browser.eval(f"Array.from({row}.querySelectorAll(':scope > td')).map(td => td.textContent)"),
            "script_shown_before": browser.eval(f"{row}.querySelector('pre').checkVisibility()"),
        }
        browser.eval(f"{row}.querySelector('summary').click()")
        result["script"] = browser.wait_for(
            f"(() => {{ const p = {row}.querySelector('pre'); return p.checkVisibility() && p.textContent; }})()",
            "the task's script to show")
        browser.navigate(f"{base}/runs/{external_run}")
        result["external"] = browser.wait_for(
            "(() => { const p = document.getElementById('external'); return p && !p.hidden && p.textContent; })()",
            "the run page to say its submitter executed the run")
        result["page_errors"] = browser.errors
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
