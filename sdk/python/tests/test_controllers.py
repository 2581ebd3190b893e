"""Several controller URLs (`DROVER_URL`, or a list where the SDK takes one): the first that
answers as the active controller is used, a standby (503 with x-drover-inactive) or an
unreachable one is skipped, and the token is sent, and redirects followed, to listed URLs only."""
import contextlib
import http.server
import json
import socket
import threading
import urllib.error

import pytest

from conftest import _Handler
from drover import api, controllers, settings

STANDBY = (503, b'{"code": "unavailable", "message": "standing by: a standby behind the active controller"}',
           {"x-drover-inactive": "standby"})


def run_view(path):
    return 200, json.dumps({"run_id": "r1", "status": "running"}).encode(), {}


@contextlib.contextmanager
def serve(answer):
    """A server on 127.0.0.1 whose answers come from `answer(path)`; yields (server, base_url)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests, server.authorizations, server.answer = [], [], answer
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_urls_come_whitespace_separated_or_as_a_list(monkeypatch):
    monkeypatch.setenv("DROVER_URL", " http://a:1/ \n\thttp://b:2 ")
    assert controllers.parse() == ["http://a:1", "http://b:2"]
    assert controllers.parse(["http://a:1 http://b:2", "http://c:3/"]) == ["http://a:1", "http://b:2", "http://c:3"]
    assert controllers.parse("http://one:1") == ["http://one:1"]
    monkeypatch.delenv("DROVER_URL")
    assert controllers.parse() == ["http://127.0.0.1:8470"]


def test_the_standby_and_an_unreachable_url_are_skipped_for_the_active_one(monkeypatch):
    down = closed_port_url()
    with serve(lambda path: STANDBY) as (standby, s_url), serve(run_view) as (active, a_url):
        monkeypatch.setenv("DROVER_URL", f"{down} {s_url} {a_url}")
        monkeypatch.setenv("DROVER_TOKEN", "s3cret")
        assert settings.controller_url() == a_url
        assert api.get_run(f"{s_url} {a_url}", "r1")["status"] == "running"
        assert api.get_run([down, s_url, a_url], "r1")["status"] == "running"
        assert "/api/v1/runs/r1" in active.requests
        assert set(active.authorizations) == {"Bearer s3cret"}
        assert standby.requests and set(standby.requests) == {"/healthz"}


def test_none_answering_is_an_error_naming_each_url_and_its_answer(monkeypatch):
    down = closed_port_url()
    with serve(lambda path: STANDBY) as (_, s_url):
        with pytest.raises(controllers.NoActiveController) as e:
            controllers.Controllers(f"{down} {s_url}").active()
    text = str(e.value)
    assert f"{down}: cannot connect" in text, text
    assert f"{s_url}: 503 (standby): standing by: a standby behind the active controller" in text, text
    # An OSError, which the waits tolerate for a while as a controller they cannot reach.
    assert isinstance(e.value, OSError)


def test_a_request_moves_to_the_next_active_controller_when_the_one_in_use_stands_by(monkeypatch):
    state = {"first": "active"}

    def first(path):
        return run_view(path) if state["first"] == "active" else STANDBY

    with serve(first) as (_, one), serve(run_view) as (two_server, two):
        monkeypatch.setenv("DROVER_URL", f"{one} {two}")
        assert settings.controller_url() == one
        state["first"] = "standby"  # a takeover: the one in use now answers as a standby
        with controllers.urlopen(f"{one}/api/v1/runs/r1", timeout=5) as response:
            assert json.load(response)["run_id"] == "r1"
        assert settings.controller_url() == two
        assert "/api/v1/runs/r1" in two_server.requests


def test_a_standbys_redirect_to_an_unlisted_url_moves_the_request_on_as_its_503_would(monkeypatch):
    state = {"first": "active"}
    with serve(run_view) as (elsewhere, e_url):
        def first(path):
            if state["first"] == "active":
                return run_view(path)
            if path == "/healthz":
                return STANDBY
            return 307, b"", {"location": f"{e_url}{path}", "x-drover-inactive": "standby"}

        with serve(first) as (_, one), serve(run_view) as (two_server, two):
            monkeypatch.setenv("DROVER_URL", f"{one} {two}")
            monkeypatch.setenv("DROVER_TOKEN", "s3cret")
            assert settings.controller_url() == one
            state["first"] = "standby"  # a takeover: the one in use now redirects reads elsewhere
            with controllers.urlopen(f"{one}/api/v1/runs/r1", timeout=5) as response:
                assert json.load(response)["run_id"] == "r1"
            assert settings.controller_url() == two
            assert "/api/v1/runs/r1" in two_server.requests
            # Listed, the URL it points at is found active and asked directly.
            monkeypatch.setenv("DROVER_URL", f"{one} {e_url}")
            assert api.get_run(f"{one} {e_url}", "r1")["status"] == "running"
    assert elsewhere.requests == ["/healthz", "/api/v1/runs/r1"]


def test_the_token_is_never_sent_to_an_unlisted_redirect_target(monkeypatch):
    with serve(run_view) as (elsewhere, e_url):
        def redirect(path):
            return 307, b"", {"location": f"{e_url}{path}"}

        with serve(redirect) as (_, c_url):
            monkeypatch.setenv("DROVER_URL", c_url)
            monkeypatch.setenv("DROVER_TOKEN", "s3cret")
            with pytest.raises(controllers.RedirectRefused) as e:
                api.get_run(c_url, "r1")
            assert f"{e_url}/api/v1/runs/r1" in str(e.value)
            assert settings.auth_headers(f"{e_url}/x") == {}
            assert isinstance(e.value, urllib.error.URLError)
    assert elsewhere.requests == []


def test_a_redirect_to_a_listed_url_is_followed_with_the_token(monkeypatch):
    with serve(run_view) as (target, t_url):
        def redirect(path):
            return 307, b"", {"location": f"{t_url}{path}"}

        with serve(redirect) as (_, c_url):
            monkeypatch.setenv("DROVER_TOKEN", "s3cret")
            assert api.get_run(f"{c_url} {t_url}", "r1")["status"] == "running"
    assert "/api/v1/runs/r1" in target.requests
    assert set(target.authorizations) == {"Bearer s3cret"}
