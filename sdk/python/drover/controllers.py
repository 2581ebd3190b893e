"""The controller URLs (`DROVER_URL`: one, or several separated by whitespace, every controller
of a namespace), as the CLI's `--url` takes them: the first that answers as the active
controller is used, skipping one that cannot be reached or answers 503 as starting, standing
by or cut off from its broker, until it fails, when the list is tried again. The token is sent
to listed URLs only, and a request to a listed URL follows redirects to listed URLs only."""
from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from http.client import HTTPResponse
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8470"

# The header of a 503 from a controller that is not acting on its namespace: `starting`,
# `standby`, or `disconnected` (a write to one that has lost its broker connection). Every value
# is treated alike: the request goes to the next listed controller.
INACTIVE_HEADER = "x-drover-inactive"


def parse(spec: str | Sequence[str] | None = None) -> list[str]:
    """The URLs of `spec` (a string of whitespace-separated URLs, or a list of such strings),
    else of `DROVER_URL`, in order and without trailing slashes."""
    if spec is None:
        spec = os.environ.get("DROVER_URL") or DEFAULT_URL
    items = spec.split() if isinstance(spec, str) else [u for s in spec for u in s.split()]
    return [u.rstrip("/") for u in items] or [DEFAULT_URL]


def _origin(url: str) -> tuple[str, str, int | None, str]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or ""), parts.port or default, parts.path


class NoActiveController(ConnectionError):
    """No listed URL answered as the active controller; `skipped` holds each URL's answer."""

    def __init__(self, skipped: list[tuple[str, str]]) -> None:
        self.skipped = skipped
        lines = "".join(f"\n  {url}: {answer}" for url, answer in skipped)
        super().__init__(
            f"no controller answered as the active one:{lines}\nlist every controller of the "
            "namespace in DROVER_URL (separated by spaces); a standby takes over within seconds "
            "of the active one's end")


class RedirectRefused(urllib.error.URLError):
    """A listed controller redirected to an address that is not listed."""


class Controllers:
    """One list of controller URLs and the one of them in use."""

    def __init__(self, spec: str | Sequence[str] | None = None) -> None:
        self.urls = parse(spec)
        self._active: str | None = None
        self._opener = urllib.request.build_opener(_ListedRedirects(self))

    def lists(self, url: str) -> bool:
        """Whether `url` is at or below a listed URL (same scheme, host and port)."""
        scheme, host, port, path = _origin(url)
        for base in self.urls:
            b_scheme, b_host, b_port, b_path = _origin(base)
            prefix = b_path.rstrip("/")
            if (scheme, host, port) == (b_scheme, b_host, b_port) and (
                    path == prefix or path.startswith(prefix + "/") or (not prefix and not path)):
                return True
        return False

    def auth_headers(self, url: str) -> dict[str, str]:
        """`Authorization` when a token is set (`DROVER_TOKEN`) and `url` is listed."""
        secret = os.environ.get("DROVER_TOKEN") or None
        return {"authorization": f"Bearer {secret}"} if secret and self.lists(url) else {}

    def current(self) -> str:
        """The URL in use, else the first listed (without asking any)."""
        return self._active or self.urls[0]

    def active(self, refresh: bool = False) -> str:
        """The URL of the active controller: the first listed that answers `/healthz` as one
        (kept until `refresh`). With one URL, that one, unasked."""
        if len(self.urls) == 1:
            return self.urls[0]
        if self._active is not None and not refresh:
            return self._active
        skipped = []
        for url in self.urls:
            answer = self._probe(url)
            if answer is None:
                self._active = url
                return url
            skipped.append((url, answer))
        self._active = None
        raise NoActiveController(skipped)

    def _probe(self, url: str) -> str | None:
        """None when `url` answers as the active controller, else what it answered."""
        target = f"{url}/healthz"
        request = urllib.request.Request(target, headers=self.auth_headers(target))
        try:
            with self._opener.open(request, timeout=5):
                return None
        except urllib.error.HTTPError as e:
            if e.headers.get(INACTIVE_HEADER):
                return f"{e.code} ({e.headers.get(INACTIVE_HEADER)}): {_message(e)}"
            return None  # the active controller's own answer (its broker is down, a bad token)
        except RedirectRefused:
            raise
        except OSError as e:
            return f"cannot connect ({getattr(e, 'reason', e)})"

    def urlopen(self, request: urllib.request.Request | str, timeout: float) -> HTTPResponse:
        """Opens `request`, following redirects to listed URLs only; when it goes to the active
        controller and that one cannot be reached or answers as inactive, sends it again to the
        next active one."""
        req = request if isinstance(request, urllib.request.Request) else urllib.request.Request(request)
        try:
            response: HTTPResponse = self._opener.open(req, timeout=timeout)
            return response
        except RedirectRefused:
            raise
        except urllib.error.HTTPError as e:
            # A 503, or a redirect to an unlisted URL, from a controller that is not active.
            if not e.headers.get(INACTIVE_HEADER):
                raise
            moved = self._moved(req)
            if moved is None:
                raise
        except urllib.error.URLError:
            moved = self._moved(req)
            if moved is None:
                raise
        again: HTTPResponse = self._opener.open(moved, timeout=timeout)
        return again

    def _moved(self, req: urllib.request.Request) -> urllib.request.Request | None:
        """`req` sent to the controller now active instead, when it went to another one."""
        old = self._active
        if len(self.urls) == 1 or old is None or not req.full_url.startswith(old):
            return None
        new = self.active(refresh=True)
        if new == old:
            return None
        headers: dict[str, Any] = dict(req.header_items())
        return urllib.request.Request(new + req.full_url[len(old):], data=req.data, headers=headers,
                                      method=req.get_method())


class _ListedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect of a request to a listed URL only to another listed URL. A standby's
    redirect (to the active controller) elsewhere is not followed and comes back as an
    `HTTPError` with `x-drover-inactive`, which moves the request on as its 503 would."""

    def __init__(self, controllers: Controllers) -> None:
        self.controllers = controllers

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        if self.controllers.lists(req.full_url) and not self.controllers.lists(newurl):
            if headers.get(INACTIVE_HEADER):
                return None
            raise RedirectRefused(
                f"the controller at {req.full_url} redirected to {newurl}, which is not one of the "
                "controller URLs (DROVER_URL); not following it, so the token is not sent there")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _message(e: urllib.error.HTTPError) -> str:
    from .api import error_message
    try:
        return error_message(e.read().decode("utf-8", "replace").strip())
    except OSError:
        return str(e)


_DEFAULT: dict[tuple[str, ...], Controllers] = {}


def of(spec: str | Sequence[str] | None = None) -> Controllers:
    """The Controllers of `spec` (else `DROVER_URL`), one per list in this process."""
    urls = tuple(parse(spec))
    if urls not in _DEFAULT:
        _DEFAULT[urls] = Controllers(list(urls))
    return _DEFAULT[urls]


def urlopen(request: urllib.request.Request | str, timeout: float) -> HTTPResponse:
    """`Controllers.urlopen` with the controllers of `DROVER_URL`."""
    return of().urlopen(request, timeout)
