"""wait() against a stand-in controller: progress lines, success, failures and timeouts."""
import json

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
    assert pipe.wait(timeout=30) >= 0
    assert pipe.is_successful()
    out = capsys.readouterr().out
    assert out.splitlines()[:4] == ["  a: queued", "  b: pending", "  a: running", "  a: succeeded"]
    assert out.count("  a: running") == 1
    assert "drover: run r1 succeeded" in out


def test_wait_raises_naming_failed_steps_and_the_error(http_server, monkeypatch):
    server, base = http_server
    serve(server, [view("failed", [("a", "failed"), ("b", "skipped")], error="failed step(s): a")])
    pipe = started(monkeypatch, base)
    with pytest.raises(RuntimeError) as e:
        pipe.wait(timeout=30)
    assert "step a failed" in str(e.value) and "failed step(s): a" in str(e.value)
    assert not pipe.is_successful()


def test_wait_times_out(http_server, monkeypatch):
    server, base = http_server
    serve(server, [view("running", [("a", "running")])])
    with pytest.raises(TimeoutError, match="r1"):
        started(monkeypatch, base).wait(timeout=0.5)


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
