"""Where a drover step's artifacts live, for `Task` and `StorageManager` (stdlib only).

A step's artifacts are its outputs: its return values and what it stored with
`Task.upload_artifact`. Inside a step everything goes through the attempt's channel (the step
holds no token): `artifact` stores a file as one of the step's artifacts, `wait` reads another
step of the same run, `get` fetches a blob into the workdir. Outside a step the controller's HTTP
API is read with the configured URL and token. An artifact's URL is the API's download address,
`<controller>/api/v1/runs/<run>/steps/<step>/artifacts/<name>`.
"""
from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from . import artifacts, controllers, settings, storage
from .channel import ChannelError, Client

_URL_PATH = re.compile(r"^/api/v1/runs/([^/]+)/steps/([^/]+)/artifacts/([^/]+)$")


class StepNotFound(LookupError):
    """The controller knows no such step (or run)."""


def artifact_url(base: str, run: str, step: str, name: str) -> str:
    quote = urllib.parse.quote
    return f"{base.rstrip('/')}/api/v1/runs/{quote(run)}/steps/{quote(step)}/artifacts/{quote(name)}"


def parse_artifact_url(url: str) -> tuple[str, str, str] | None:
    """(run, step, name) when `url` is a drover artifact's download address."""
    match = _URL_PATH.match(urllib.parse.urlsplit(url).path)
    if match is None:
        return None
    run, step, name = (urllib.parse.unquote(part) for part in match.groups())
    return run, step, name


class InStep:
    """The artifacts as a running step reaches them: through its channel."""

    def __init__(self, client: Client, run: str, workdir: str) -> None:
        self.client = client
        self.run = run
        self._workdir = workdir
        self._base: str | None = None

    @classmethod
    def from_env(cls) -> InStep:
        """The step's channel; a step without one (a command step) cannot reach artifacts."""
        client = Client.from_env()
        run = os.environ.get("DROVER_RUN_ID")
        if client is None or not run:
            raise RuntimeError("this step has no channel to its agent (DROVER_CHANNEL is not set): only Python "
                               "function steps can store and read artifacts through Task")
        return cls(client, run, os.environ.get("DROVER_WORKDIR") or os.getcwd())

    @property
    def base(self) -> str:
        """The controller's URL, as the agent knows it."""
        if self._base is None:
            self._base = str(self.client.info().get("controller_url", settings.controller_url()))
        return self._base

    @property
    def staging(self) -> str:
        """Where artifacts are written before they are stored, inside the workdir."""
        return os.path.join(self._workdir, "_artifacts", "_staged")

    def store(self, step: str, name: str, path: str) -> artifacts.StoredArtifact:
        """Stores the file at `path` as this step's artifact `name`."""
        try:
            answer = self.client.request({"op": "artifact", "name": name, "path": os.path.abspath(path)})
        except ChannelError as e:
            if e.code == "bad_request":
                raise ValueError(f"upload_artifact({name!r}): {e.message}") from None
            raise
        return self.artifact(step, name, answer["artifact"])

    def step_view(self, step: str) -> dict[str, Any]:
        """Another step of this run once it has ended (its artifacts are then final)."""
        return self.client.wait(step)

    def artifact(self, step: str, name: str, ref: Mapping[str, Any]) -> artifacts.StoredArtifact:
        def fetch(ref: Mapping[str, Any], dest: str) -> None:
            self.client.get(dict(ref), dest)

        cache = os.path.join(self._workdir, "_artifacts", "_fetched")
        return artifacts.StoredArtifact(name, ref, artifact_url(self.base, self.run, step, name), fetch, cache)


class Outside:
    """The artifacts as any other process reaches them: the HTTP API, with the configured token."""

    def __init__(self, base: str | None = None) -> None:
        self.base = (base or settings.controller_url()).rstrip("/")

    def step_view(self, run: str, step: str) -> dict[str, Any]:
        quote = urllib.parse.quote
        url = f"{self.base}/api/v1/runs/{quote(run)}/steps/{quote(step)}"
        request = urllib.request.Request(url, headers={"accept": "application/json", **settings.auth_headers(url)})
        try:
            with controllers.urlopen(request, timeout=30) as response:
                view: dict[str, Any] = json.load(response)
                return view
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise StepNotFound(f"the controller at {self.base} has no step {step!r} in run {run!r}") from e
            raise

    def artifact(self, run: str, step: str, name: str, ref: Mapping[str, Any]) -> artifacts.StoredArtifact:
        url = artifact_url(self.base, run, step, name)

        def fetch(_: Mapping[str, Any], dest: str) -> None:
            storage.download(url, dest)

        cache = os.path.join(storage.cache_root(), "artifacts")
        return artifacts.StoredArtifact(name, ref, url, fetch, cache)


def in_step() -> bool:
    """Whether this process runs a drover step (the agent sets these)."""
    return bool(os.environ.get("DROVER_RUN_ID") and os.environ.get("DROVER_STEP"))


def step_artifacts(run: str, step: str, base: str | None = None) -> dict[str, artifacts.StoredArtifact]:
    """The artifacts of `step` of `run`: through the channel inside a step of that run (once the
    step has ended), else through the HTTP API of `base` (default: the configured controller)."""
    if in_step() and os.environ.get("DROVER_RUN_ID") == run:
        here = InStep.from_env()
        view = here.step_view(step)
        return {name: here.artifact(step, name, ref) for name, ref in (view.get("outputs") or {}).items()}
    if in_step():
        raise PermissionError(f"a step reads only the steps of its own run, not run {run!r}")
    outside = Outside(base)
    view = outside.step_view(run, step)
    return {name: outside.artifact(run, step, name, ref) for name, ref in (view.get("outputs") or {}).items()}


def local_copy(url: str, force_download: bool = False) -> str | None:
    """The local path of the drover artifact at `url`, or None when `url` is not one."""
    parsed = parse_artifact_url(url)
    if parsed is None:
        return None
    run, step, name = parsed
    parts = urllib.parse.urlsplit(url)
    found = step_artifacts(run, step, f"{parts.scheme}://{parts.netloc}").get(name)
    if found is None:
        raise FileNotFoundError(f"step {step!r} of run {run!r} has no artifact {name!r} ({url})")
    return found.get_local_copy(extract_archive=False, force_download=force_download)
