"""Following a run through the controller's HTTP API (stdlib urllib only)."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from . import controllers

# A run as the controller's API describes it (`RunView`): status, steps, error, url, ...
RunView = dict[str, Any]

TERMINAL_RUN_STATUSES = ("succeeded", "failed", "aborted", "rejected")


class RunNotFound(LookupError):
    """The controller does not know the run (yet)."""


def run_page(base_url: str | Sequence[str], run_id: str) -> str:
    """The run's web page, at the controller in use of `base_url`."""
    return f"{controllers.of(base_url).current()}/runs/{run_id}"


def get_run(base_url: str | Sequence[str], run_id: str, timeout: float = 10.0) -> RunView:
    """The RunView of `run_id` from the active controller of `base_url` (one URL, or several as
    `DROVER_URL` takes them); raises RunNotFound on 404 and OSError when unreachable."""
    listed = controllers.of(base_url)
    url = f"{listed.active()}/api/v1/runs/{run_id}"
    headers = {"accept": "application/json", **listed.auth_headers(url)}
    request = urllib.request.Request(url, headers=headers)
    try:
        with listed.urlopen(request, timeout=timeout) as response:
            view: RunView = json.load(response)
            return view
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise RunNotFound(run_id) from e
        if e.code in (502, 503, 504):
            raise ConnectionError(f"GET {url} answered {e.code}") from e
        detail = error_message(e.read().decode("utf-8", "replace").strip())
        raise RuntimeError(f"GET {url} answered {e.code}: {detail}") from e


def error_message(body: str) -> str:
    """The message of an API error body (`{"code", "message"}`), or the body as it is."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    if isinstance(doc, dict):
        message = doc.get("message")
        if isinstance(message, str):
            return message
    return body


class _Deadline:
    """Tracks how long something has been going wrong."""

    def __init__(self) -> None:
        self.since: float | None = None

    def elapsed(self, now: float) -> float:
        if self.since is None:
            self.since = now
        return now - self.since

    def reset(self) -> None:
        self.since = None


def wait_for_run(base_url: str | Sequence[str], run_id: str, timeout: float | None = None,
                 report: Callable[[str], None] = print, poll: float = 0.2, ns: str = "drover",
                 unknown_grace: float = 60.0, unreachable_grace: float = 30.0) -> RunView:
    """Polls until the run ends and returns its last RunView, reporting step status changes.

    A new run is unknown (404) until the controller takes it from the queue, and the controller
    may be restarting, so both are tolerated for a while: a warning after 10 s, an error after
    `unknown_grace` / `unreachable_grace` seconds. Raises TimeoutError after `timeout` seconds.
    """
    start = time.monotonic()
    unknown, unreachable = _Deadline(), _Deadline()
    warned_unknown = False
    seen: dict[str, str] = {}
    while True:
        now = time.monotonic()
        if timeout is not None and now - start > timeout:
            raise TimeoutError(f"run {run_id} did not finish within {timeout}s: {run_page(base_url, run_id)}")
        try:
            view = get_run(base_url, run_id)
        except RunNotFound:
            waited = unknown.elapsed(now)
            if waited > unknown_grace:
                raise RuntimeError(
                    f"the controller at {base_url} has not picked up run {run_id} after "
                    f"{unknown_grace:.0f}s: is a controller consuming namespace {ns!r} "
                    f"(DROVER_NAMESPACE)? `drover queues` shows dead letters"
                ) from None
            if waited > 10 and not warned_unknown:
                report(f"drover: the controller at {base_url} has not picked up run {run_id} yet; still waiting")
                warned_unknown = True
        except OSError as e:
            if unreachable.elapsed(now) > unreachable_grace:
                raise ConnectionError(
                    f"cannot reach the controller at {base_url} ({e}) for {unreachable_grace:.0f}s: "
                    "is it running? start it with `drover up`, or set DROVER_URL"
                ) from e
        else:
            unknown.reset()
            unreachable.reset()
            report_changes(view, seen, report)
            if view.get("status") in TERMINAL_RUN_STATUSES:
                return view
        time.sleep(poll)


def report_changes(view: RunView, seen: dict[str, str], report: Callable[[str], None]) -> None:
    """Reports each step whose status differs from `seen` (and records it)."""
    for step in view.get("steps", []):
        name, status = step.get("name"), step.get("status")
        if seen.get(name) != status:
            extra = " (cache hit)" if step.get("cache_hit") else ""
            report(f"  {name}: {status}{extra}")
            seen[name] = status


def failure_message(view: RunView) -> str:
    """Why a run that ended did not succeed: its status, error and failed steps."""
    failed = [s for s in view.get("steps", []) if s.get("status") == "failed"]
    parts = [f"run {view.get('run_id')} {view.get('status')}"]
    if view.get("error"):
        parts.append(str(view["error"]))
    for s in failed:
        why = s.get("message") or (
            f"exit code {s['exit_code']}" if s.get("exit_code") is not None else "no exit code"
        )
        parts.append(f"step {s.get('name')} failed: {why}")
    if view.get("url"):
        parts.append(f"see {view['url']}")
    return "; ".join(parts)
