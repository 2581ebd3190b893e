"""Scalars inside a step: batched over the channel to a test double of the agent (a real
Unix-socket server speaking the channel's framing), sent at exit, and a failure only warned."""
import json
import os
import socketserver
import subprocess
import sys
import threading
import warnings

import pytest

from drover import scalars
from drover.channel import Client

SDK = os.path.join(os.path.dirname(__file__), "..")


class FakeAgent:
    """Answers `scalars` requests (or refuses them) and keeps the batches it took."""

    def __init__(self, path):
        self.batches = []
        self.refuse = None
        self.changed = threading.Condition()
        agent = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                for line in self.rfile:
                    self.wfile.write(json.dumps(agent.answer(json.loads(line))).encode() + b"\n")

        self.server = socketserver.ThreadingUnixStreamServer(path, Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, request):
        if request["op"] != "scalars":
            return {"ok": False, "error": {"code": "bad_request", "message": "unknown op"}}
        if self.refuse:
            return {"ok": False, "error": {"code": "bad_request", "message": self.refuse}}
        with self.changed:
            self.batches.append(request["points"])
            self.changed.notify_all()
        return {"ok": True, "stored": len(request["points"])}

    def points(self):
        return [(p["title"], p["series"], p["iteration"], p["value"]) for b in self.batches for p in b]

    def wait_for(self, n, deadline=30.0):
        """Waits until `n` points arrived (or the deadline passed); the points."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.points()) >= n, deadline)
        return self.points()


@pytest.fixture
def agent(tmp_path):
    path = os.path.join(tmp_path, "ch.sock")
    fake = FakeAgent(path)
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_points_go_in_batches_in_order_and_flush_waits_for_them(agent, tmp_path):
    sender = scalars.Sender(Client(os.path.join(tmp_path, "ch.sock")))
    n = scalars.BATCH_POINTS * 2 + 500
    for i in range(n):
        sender.add("loss", "train", i, i / 2)
    assert sender.flush(wait=True) is True
    assert agent.points() == [("loss", "train", i, i / 2) for i in range(n)]
    assert len(agent.batches) >= 3
    assert all(len(b) <= scalars.BATCH_POINTS for b in agent.batches)


def test_a_few_points_are_sent_without_a_flush(agent, tmp_path):
    sender = scalars.Sender(Client(os.path.join(tmp_path, "ch.sock")))
    sender.add("acc", "test", 1, 0.5)
    sender.add("acc", "test", 2, 0.75)
    # The time bound sends them; nothing else would.
    assert agent.wait_for(2) == [("acc", "test", 1, 0.5), ("acc", "test", 2, 0.75)]


def test_a_refused_batch_warns_once_and_the_step_goes_on(agent, tmp_path):
    agent.refuse = "attempt 1 of step s cannot report scalars"
    sender = scalars.Sender(Client(os.path.join(tmp_path, "ch.sock")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for round_ in range(3):
            sender.add("loss", "train", round_, 1.0)
            assert sender.flush(wait=True) is True
        sender.add("loss", "train", 3, float("nan"))
        sender.add("loss", "train", 4, float("inf"))
    messages = [str(w.message) for w in caught]
    assert len([m for m in messages if "could not be stored" in m]) == 1, messages
    assert any("cannot report scalars" in m for m in messages), messages
    assert len([m for m in messages if "cannot be stored" in m]) == 1, messages
    assert agent.points() == []


def test_no_channel_means_no_sender(monkeypatch):
    monkeypatch.delenv("DROVER_CHANNEL", raising=False)
    monkeypatch.setattr(scalars, "_resolved", False)
    monkeypatch.setattr(scalars, "_sender", None)
    assert scalars.sender() is None


STEP = '''
from drover import Logger
from drover.automation.controller import PipelineDecorator
from drover.task import Task

logger = Task.current_task().get_logger()
assert Logger.current_logger() is logger and PipelineDecorator.get_logger() is logger
for i in range(3):
    logger.report_scalar("loss", "train", 1.0 / (i + 1), i)
logger.report_single_value("accuracy", 0.9)
logger.report_text("done")
'''


def test_a_step_reports_through_its_logger_and_the_rest_is_sent_at_exit(agent, tmp_path):
    env = {**os.environ, "PYTHONPATH": SDK, "DROVER_CHANNEL": os.path.join(tmp_path, "ch.sock"),
           "DROVER_RUN_ID": "r", "DROVER_STEP": "s", "DROVER_ATTEMPT": "1"}
    out = subprocess.run([sys.executable, "-c", STEP], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "drover: scalar loss / train @ 2: 0.333333" in out.stdout
    assert "done" in out.stdout
    assert agent.points() == [("loss", "train", 0, 1.0), ("loss", "train", 1, 0.5),
                              ("loss", "train", 2, 1.0 / 3), ("Summary", "accuracy", 0, 0.9)]


def test_a_local_run_takes_scalars_without_storing_them():
    from drover.localagent import LocalAgent

    agent = LocalAgent("local-run", report=lambda _: None)
    try:
        assert Client(agent.path).scalars([{"title": "t", "series": "s", "iteration": 0, "value": 1.0}]) == 1
    finally:
        agent.close()
