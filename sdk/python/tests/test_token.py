"""DROVER_TOKEN reaches the controller (run status, artifact downloads) and no other host."""
import json

import pytest

from drover import StorageManager, api, settings


def answer_run(path):
    return 200, json.dumps({"run_id": "r1", "status": "running"}).encode(), {}


def test_run_status_requests_carry_the_token(http_server, monkeypatch):
    server, base = http_server
    server.answer = answer_run
    monkeypatch.delenv("DROVER_TOKEN", raising=False)
    api.get_run(base, "r1")
    monkeypatch.setenv("DROVER_TOKEN", "s3cret")
    api.get_run(base, "r1")
    assert server.authorizations == [None, "Bearer s3cret"]


def test_downloads_carry_the_token_only_to_the_controller(http_server, monkeypatch, tmp_path):
    server, base = http_server
    # A drover artifact's URL: the step is read first (for the artifact's file name), then the file.
    view = b'{"name": "s", "outputs": {"a": {"digest": "d", "size": 5, "file_name": "a.bin"}}}'
    server.answer = lambda path: (200, view if path == "/api/v1/runs/r/steps/s" else b"bytes", {})
    monkeypatch.setenv("DROVER_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DROVER_TOKEN", "s3cret")
    monkeypatch.setenv("DROVER_URL", base)
    StorageManager.get_local_copy(f"{base}/api/v1/runs/r/steps/s/artifacts/a")
    # The same server under another name is another host: no token.
    monkeypatch.setenv("DROVER_URL", base.replace("127.0.0.1", "localhost"))
    StorageManager.get_local_copy(f"{base}/files/other.bin")
    assert server.authorizations == ["Bearer s3cret", "Bearer s3cret", None]


@pytest.mark.parametrize("url,sent", [
    ("http://c:8470/api/v1/x", True),
    ("http://c:8471/api/v1/x", False),
    ("https://c:8470/x", False),
])
def test_auth_headers_match_scheme_host_and_port(monkeypatch, url, sent):
    monkeypatch.setenv("DROVER_URL", "http://c:8470/")
    monkeypatch.setenv("DROVER_TOKEN", "t")
    assert bool(settings.auth_headers(url)) == sent
