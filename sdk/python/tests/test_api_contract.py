"""The SDK reads the controller's HTTP API through the JSON the Rust side pins in
api/tests/golden: the documents it parses and the status names it branches on come from there,
not from a copy kept by hand."""
import json
import os
import urllib.request

from drover import api, controllers

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "..", "..", "api", "tests", "golden")


def golden(name):
    with open(os.path.join(GOLDEN, f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def test_terminal_run_statuses_are_the_contracts():
    statuses = golden("statuses")
    assert tuple(statuses["run_terminal"]) == tuple(api.TERMINAL_RUN_STATUSES)
    assert set(api.TERMINAL_RUN_STATUSES) <= set(statuses["run"])


def test_failure_message_names_the_failed_step():
    view = golden("run_view")
    message = api.failure_message(view)
    assert message.startswith(f"run {view['run_id']} failed"), message
    assert "step train failed: ValueError: bad input" in message, message
    assert view["url"] in message


def test_status_changes_are_reported_once():
    view = golden("run_view")
    lines, seen = [], {}
    api.report_changes(view, seen, lines.append)
    api.report_changes(view, seen, lines.append)
    assert lines == ["  prepare: succeeded", "  train: failed"]


def test_api_errors_carry_a_code_and_a_message():
    error = golden("api_error")
    assert error["code"] in golden("statuses")["error_code"]
    assert api.error_message(json.dumps(error)) == error["message"]
    assert api.error_message("plain text") == "plain text"


def test_the_inactive_header_is_the_contracts():
    assert controllers.INACTIVE_HEADER == golden("inactive_header")["header"]


def test_every_inactive_value_sends_a_request_to_the_next_controller(monkeypatch):
    """A write refused by a controller that is not acting, whatever the header's value, goes to
    the next listed controller."""
    from test_controllers import run_view, serve

    for value in golden("inactive_header")["values"]:
        state = {"first": "active"}

        def first(path, value=value, state=state):
            if state["first"] == "active":
                return run_view(path)
            return 503, b'{"code": "unavailable", "message": "not acting"}', {controllers.INACTIVE_HEADER: value}

        with serve(first) as (_, one), serve(run_view) as (two_server, two):
            monkeypatch.setenv("DROVER_URL", f"{one} {two}")
            urls = controllers.Controllers()
            assert urls.active() == one
            state["first"] = value
            request = urllib.request.Request(f"{one}/api/v1/runs/r1/rerun", data=b"{}", method="POST")
            with urls.urlopen(request, timeout=5) as response:
                assert json.load(response)["run_id"] == "r1"
            assert urls.current() == two, value
            assert "/api/v1/runs/r1/rerun" in two_server.requests
