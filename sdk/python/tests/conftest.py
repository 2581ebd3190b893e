"""Shared fixtures: the seed module on sys.path, a fresh broker namespace, a tiny HTTP server."""
import http.server
import os
import socket
import sys
import threading
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"


@pytest.fixture
def namespace(monkeypatch):
    """A namespace of our own on the shared broker; its queues are deleted afterwards."""
    import pika

    ns = f"sdktest-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("DROVER_NAMESPACE", ns)
    monkeypatch.setenv("DROVER_AMQP_URL", AMQP_URL)
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError:
        pytest.fail("RabbitMQ is not listening on 127.0.0.1:5672; run scripts/ensure-rabbitmq.sh")
    yield ns
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    for queue in (f"{ns}.services", f"{ns}.dead"):
        channel.queue_delete(queue)
    channel.exchange_delete(f"{ns}.submit")
    connection.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # the name http.server calls
        self.server.requests.append(self.path)
        self.server.authorizations.append(self.headers.get("authorization"))
        status, body, headers = self.server.answer(self.path)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # the name http.server calls; the body is read and left out
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """Starts a server on 127.0.0.1 whose answers come from `server.answer(path)`; yields
    (server, base_url)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests = []
    server.authorizations = []

    def default(path):
        return 404, b"not found", {}

    server.answer = default
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_controller(monkeypatch):
    """No controller unless a test names one: local runs are not recorded anywhere (and warn
    once per test that they are not)."""
    from drover import record

    monkeypatch.setenv("DROVER_URL", "http://127.0.0.1:1")
    monkeypatch.setattr(record, "_warned", False)
