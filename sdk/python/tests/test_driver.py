"""The driver against a test double of its agent: a real Unix-socket server speaking the
channel's framing (one JSON request per line, one answer line each), in this test process."""
import hashlib
import json
import os
import pickle
import socketserver
import subprocess
import sys
import threading

import pytest

from drover.channel import ChannelError, Client

SDK = os.path.join(os.path.dirname(__file__), "..")

MODULE = '''
from drover.automation.controller import PipelineDecorator


@PipelineDecorator.component(return_values=["a", "b"])
def split(x):
    return x, x + 1


@PipelineDecorator.component(return_values=["out"])
def use(v, extra):
    return v


@PipelineDecorator.pipeline(name="p", project="t")
def pipe(n, label="x"):
    print("start", n, label)
    a, b = split(n)
    c = use(a, extra={"k": [1, 2]})
    d = use(b, extra={1, 2})
    import threading
    threading.Thread(target=lambda: use(c, extra=None)).start()  # same session, next seq
    print("got", c + d)
    PipelineDecorator.upload_artifact("report", {"c": int(c)})
    print("after")
    return int(c)


if __name__ == "__main__":
    print("MAIN RAN")
'''


class FakeAgent:
    """Test double of the agent's channel server: records requests, answers from its tables."""

    def __init__(self, path):
        self.requests = []
        self.names = []
        self.existing = {}  # seq -> name answered with existing: true
        self.status = {}  # step -> (status, message)
        self.values = {}  # step -> value of every output
        self.refuse_add = None
        agent = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                for line in self.rfile:
                    request = json.loads(line)
                    agent.requests.append(request)
                    self.wfile.write(json.dumps(agent.answer(request)).encode() + b"\n")

        self.server = socketserver.ThreadingUnixStreamServer(path, Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, r):
        if r["op"] == "add_step":
            if self.refuse_add:
                return {"ok": False, "error": {"code": "bad_request", "message": self.refuse_add}}
            seq = r["call"]["seq"]
            base = r["step"]["name"]
            name = self.existing.get(seq) or next(
                n for n in [base] + [f"{base}_{i}" for i in range(1, 99)] if n not in self.names)
            self.names.append(name)
            return {"ok": True, "step": name, "existing": seq in self.existing}
        if r["op"] == "wait":
            status, message = self.status.get(r["step"], ("succeeded", None))
            outputs = {o: {"digest": hashlib.sha256(f"{r['step']}.{o}".encode()).hexdigest(), "size": 1,
                           "file_name": f"{r['step']}.{o}"} for o in ("a", "b", "out")}
            return {"ok": True, "view": {"name": r["step"], "status": status, "message": message,
                                         "outputs": outputs}}
        if r["op"] == "put":
            with open(r["path"], "rb") as f:
                data = f.read()
            return {"ok": True, "artifact": {"digest": hashlib.sha256(data).hexdigest(), "size": len(data),
                                             "file_name": os.path.basename(r["path"])}}
        if r["op"] == "get":
            step, output = r["artifact"]["file_name"].rsplit(".", 1)
            value = self.values[step]
            value = value[output] if isinstance(value, dict) else value
            with open(r["dest"], "wb") as f:
                pickle.dump(value, f)
            return {"ok": True}
        if r["op"] == "info":
            return {"ok": True, "run_id": "r", "step": "driver", "attempt": 1, "controller_url": "http://x"}
        return {"ok": False, "error": {"code": "bad_request", "message": "unknown op"}}

    def adds(self):
        return [r for r in self.requests if r["op"] == "add_step"]


@pytest.fixture
def agent(tmp_path):
    path = os.path.join(tmp_path, "ch.sock")
    fake = FakeAgent(path)
    fake.values = {"split": {"a": 3, "b": 4}, "use": 10, "use_1": 20}
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def run_driver(tmp_path, attempt=1, params=None):
    code = ("import json, sys\nfrom drover import driver\n"
            "print('returned', driver.main(sys.argv[1], 'pipe.py', 'pipe', json.loads(sys.argv[2])))")
    env = {**os.environ, "PYTHONPATH": SDK, "DROVER_CHANNEL": os.path.join(tmp_path, "ch.sock"),
           "DROVER_ATTEMPT": str(attempt)}
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-c", code, MODULE, json.dumps(params or {"n": "3"})], env=env,
                          cwd=work, capture_output=True, text=True, timeout=60)


def test_each_call_adds_a_step_references_become_edges_and_other_values_blobs(tmp_path, agent):
    out = run_driver(tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["start 3 x", "got 30"] and lines[3:] == ["after", "returned 10"]
    stored = [r for r in agent.requests if r["op"] == "put" and r["path"].endswith("report.pkl")]
    with open(stored[0]["path"], "rb") as f:
        assert pickle.load(f) == {"c": 10}
    assert lines[2].startswith("drover: artifact 'report' stored: http://x/api/v1/blobs/")
    assert "MAIN RAN" not in out.stdout  # the module runs under another name than __main__
    adds = agent.adds()
    assert [(a["call"]["seq"], a["call"]["component"]) for a in adds] == [
        (0, "split"), (1, "use"), (2, "use"), (3, "use")]
    assert [a["step"]["name"] for a in adds] == ["split", "use", "use", "use"]
    assert adds[3]["step"]["function"]["kwargs"] == {"v": '"${use.out}"', "extra": "null"}
    first = adds[1]["step"]["function"]
    assert first["kwargs"] == {"v": '"${split.a}"', "extra": '{"k":[1,2]}'}
    assert "blobs" not in first
    second = adds[2]["step"]["function"]
    assert second["kwargs"] == {"v": '"${split.b}"'}
    assert list(second["blobs"]) == ["extra"]
    put = next(r for r in agent.requests if r["op"] == "put")
    assert put["path"].startswith(str(tmp_path / "work"))
    with open(put["path"], "rb") as f:
        assert pickle.load(f) == {1, 2}
    assert adds[1]["step"]["function"]["entry"] == "_drover_entry_use"
    assert "_shipped" in first["source"] and "def split(x):" in first["source"]
    # the three calls are added before anything waits: split's value is used only at `c + d`
    ops = [r["op"] for r in agent.requests]
    assert ops.index("wait") > [i for i, op in enumerate(ops) if op == "add_step"][2]


def test_the_digest_differs_with_the_arguments(tmp_path, agent):
    assert run_driver(tmp_path).returncode == 0
    digests = [a["call"]["digest"] for a in agent.adds()]
    assert len(set(digests)) == 4 and all(len(d) == 64 for d in digests)


def test_parameters_arrive_as_their_json_values(tmp_path, agent):
    out = run_driver(tmp_path, params={"n": "5", "label": '"five"'})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "start 5 five"
    assert agent.adds()[0]["step"]["function"]["kwargs"] == {"x": "5"}


def test_a_replay_marks_its_output_until_the_first_new_step(tmp_path, agent):
    agent.existing = {0: "split", 1: "use"}
    out = run_driver(tmp_path, attempt=2)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["[replay] start 3 x", "got 30"] and lines[3:] == ["after", "returned 10"]


def test_output_of_a_replay_that_made_no_new_step_stays_marked(tmp_path, agent):
    agent.existing = {0: "split", 1: "use", 2: "use_1", 3: "use_2"}
    out = run_driver(tmp_path, attempt=2)
    lines = out.stdout.splitlines()
    assert len(lines) == 5 and all(line.startswith("[replay] ") for line in lines), lines


def test_a_failed_step_raises_where_its_value_is_used_naming_it(tmp_path, agent):
    agent.status["use_1"] = ("failed", "ValueError: bad input")
    out = run_driver(tmp_path)
    assert out.returncode != 0
    assert "component step 'use_1' failed: ValueError: bad input" in out.stderr
    assert out.stdout.splitlines() == ["start 3 x"]


def test_a_refused_step_raises_at_the_call(tmp_path, agent):
    agent.refuse_add = "replay diverged at call 0 of driver"
    out = run_driver(tmp_path)
    assert out.returncode != 0
    assert "add_step: replay diverged at call 0 of driver (bad_request)" in out.stderr


def test_the_client_keeps_one_connection_per_thread(tmp_path, agent):
    client = Client(os.path.join(tmp_path, "ch.sock"))
    assert client.info()["run_id"] == "r"
    with pytest.raises(ChannelError) as e:
        client.request({"op": "nope"})
    assert e.value.code == "bad_request"
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.wait("use")["status"])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["succeeded"] * 4
    client.close()


def test_a_missing_channel_is_a_connection_error(tmp_path):
    with pytest.raises(ConnectionError, match="cannot reach the step's channel"):
        Client(os.path.join(tmp_path, "none.sock")).info()
