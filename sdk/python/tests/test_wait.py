"""wait() against a stand-in controller: progress lines, success, failures and timeouts."""
import json
import time

import pytest

from drover import PipelineController, api


def view(status, steps, error=None):
    return {"run_id": "r1", "status": status, "error": error, "url": "http://x/runs/r1",
            "steps": [{"name": n, "status": s, "cache_hit": False, "message": None, "exit_code": 1}
                      for n, s in steps]}


def serve(server, views, not_found_first=1):
    """Answers 404 `not_found_first` times, then each view in turn (the last one forever)."""
    answers = [(404, b"{}")] * not_found_first + [(200, json.dumps(v).encode()) for v in views]

    def answer(path):
        assert path == "/api/v1/runs/r1"
        status, body = answers.pop(0) if len(answers) > 1 else answers[0]
        return status, body, {"content-type": "application/json"}

    server.answer = answer


def started(monkeypatch, base):
    monkeypatch.setenv("DROVER_URL", base)
    pipe = PipelineController(name="p", project="x", version="1")
    pipe._run_id = "r1"
    return pipe


def test_wait_reports_step_changes_until_the_run_succeeds(http_server, monkeypatch, capsys):
    server, base = http_server
    serve(server, [view("running", [("a", "queued"), ("b", "pending")]),
                   view("running", [("a", "running"), ("b", "pending")]),
                   view("running", [("a", "running"), ("b", "pending")]),
                   view("succeeded", [("a", "succeeded"), ("b", "succeeded")])])
    pipe = started(monkeypatch, base)
    assert pipe.wait(timeout=0.5) is True
    assert pipe.is_successful()
    out = capsys.readouterr().out
    assert out.splitlines()[:4] == ["  a: queued", "  b: pending", "  a: running", "  a: succeeded"]
    assert out.count("  a: running") == 1
    assert "drover: run r1 succeeded" in out


def test_wait_returns_true_when_the_run_failed_and_says_why(http_server, monkeypatch, capsys):
    server, base = http_server
    serve(server, [view("failed", [("a", "failed"), ("b", "skipped")], error="failed step(s): a")])
    pipe = started(monkeypatch, base)
    assert pipe.wait(timeout=0.5) is True
    out = capsys.readouterr().out
    assert "drover: run r1 failed" in out
    assert "step a failed" in out and "failed step(s): a" in out
    assert not pipe.is_successful()
    assert not pipe.is_successful(fail_condition="aborted")  # step b was skipped
    assert pipe.is_successful(fail_on_step_fail=False, fail_condition="aborted")


def test_wait_counts_minutes_and_returns_false_on_timeout(http_server, monkeypatch, capsys):
    server, base = http_server
    serve(server, [view("running", [("a", "running")])])
    pipe = started(monkeypatch, base)
    began = time.monotonic()
    assert pipe.wait(timeout=0.01) is False  # 0.6 seconds
    assert 0.5 <= time.monotonic() - began < 5
    assert "still running after 0.01 minute(s)" in capsys.readouterr().out
    assert not pipe.is_successful()


@pytest.mark.parametrize(("status", "steps", "on_steps", "condition", "expected"), [
    ("succeeded", [("a", "succeeded"), ("b", "cached")], True, "all", True),
    ("succeeded", [("a", "failed"), ("b", "succeeded")], True, "all", False),
    ("succeeded", [("a", "failed"), ("b", "succeeded")], False, "all", True),
    ("aborted", [("a", "aborted")], True, "all", False),
    ("aborted", [("a", "aborted")], True, "failed", True),
    ("aborted", [("a", "aborted")], True, "aborted", False),
    ("failed", [("a", "failed")], True, "failed", False),
    ("failed", [("a", "failed")], True, "aborted", True),
    ("failed", [("a", "failed"), ("b", "skipped")], True, "aborted", False),
])
def test_is_successful_follows_clearmls_conditions(http_server, monkeypatch, status, steps, on_steps,
                                                   condition, expected):
    server, base = http_server
    serve(server, [view(status, steps)], not_found_first=0)
    pipe = started(monkeypatch, base)
    assert pipe.is_successful(fail_on_step_fail=on_steps, fail_condition=condition) is expected


def test_is_successful_refuses_an_unknown_condition():
    with pytest.raises(ValueError, match="'all', 'failed' or 'aborted'"):
        PipelineController(name="p", project="x").is_successful(fail_condition="any")


def test_a_run_the_controller_never_takes_is_an_error(http_server):
    _, base = http_server
    with pytest.raises(RuntimeError, match="has not picked up run r1"):
        api.wait_for_run(base, "r1", report=lambda line: None, unknown_grace=0.5)


def test_an_unreachable_controller_is_an_error():
    with pytest.raises(ConnectionError, match="drover up"):
        api.wait_for_run("http://127.0.0.1:1", "r1", report=lambda line: None, unreachable_grace=0.5)


def test_wait_before_start_is_an_error():
    with pytest.raises(RuntimeError, match="not started"):
        PipelineController(name="p", project="x", version="1").wait()
