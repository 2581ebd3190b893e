"""StorageManager: a local path for a local file, `file://` URL or HTTP(S) download (stdlib only).

Step code imports this inside bare environments, so it must not need any third-party package.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
from typing import Any

from . import controllers, settings


def cache_root() -> str:
    """Where downloads are kept: `DROVER_CACHE_DIR`, else `~/.cache/drover/storage`."""
    root = os.environ.get("DROVER_CACHE_DIR")
    if root:
        return root
    return os.path.join(os.path.expanduser("~"), ".cache", "drover", "storage")


def _basename(url: str, name: str | None) -> str:
    """The file name to keep a download under: `name`, else the URL path's last part."""
    if name:
        return os.path.basename(name)
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    return os.path.basename(path.rstrip("/")) or "download"


def download(url: str, target: str) -> None:
    """Downloads into a temporary file beside `target`, then renames it into place, so a
    crash or a concurrent reader never sees a partial file."""
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=directory, prefix=".partial-")
    try:
        request = urllib.request.Request(url, headers=settings.auth_headers(url))
        with os.fdopen(fd, "wb") as out, controllers.urlopen(request, timeout=60) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        os.replace(partial, target)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise


_ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def _is_archive(path: str) -> bool:
    return path.lower().endswith(_ARCHIVES)


def _extract(archive: str, force: bool) -> str:
    """Extracts `archive` once into `<archive>_extracted`, through a temporary directory that
    is renamed into place, and returns that directory."""
    target = archive + "_extracted"
    if os.path.isdir(target) and not force:
        return target
    staging = tempfile.mkdtemp(dir=os.path.dirname(archive), prefix=".extracting-")
    try:
        if archive.lower().endswith(".zip"):
            shutil.unpack_archive(archive, staging, "zip")
        else:
            # The "data" filter refuses members that would land outside the directory.
            safe: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            shutil.unpack_archive(archive, staging, "tar", **safe)
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
    return target


def _drover_artifact(url: str, force_download: bool) -> str | None:
    """The local copy of a drover artifact's URL, under its own file name; None for any other URL."""
    from . import stepartifacts  # late: it imports this module

    return stepartifacts.local_copy(url, force_download)


class StorageManager:
    """Fetches files referenced by path or URL, as ClearML's StorageManager does for the
    schemes drover supports: local paths, `file://` and `http(s)://`."""

    @classmethod
    def get_local_copy(cls, remote_url: str | os.PathLike[str], cache_context: object = None,
                       extract_archive: bool = True, name: str | None = None,
                       force_download: bool = False) -> str:
        """A local path holding the contents of `remote_url`.

        Local paths and `file://` URLs are returned as they are (they must exist). HTTP(S)
        URLs are downloaded once into the cache (`DROVER_CACHE_DIR` or
        `~/.cache/drover/storage/<sha256 of url>/<file name>`) and reused until
        `force_download`; a downloaded zip or tar archive is extracted beside it and the
        directory returned unless `extract_archive` is False. `cache_context` separates caches.
        A drover artifact's URL (`${step.artifacts.NAME.url}`, `task.artifacts[NAME].url`) is
        fetched under the artifact's own file name: inside a step of its run through the step's
        channel, which needs no token; elsewhere with the configured token.
        """
        if not remote_url:
            raise ValueError("get_local_copy needs a path or URL, got an empty value")
        url = os.fspath(remote_url)
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme in ("", "file"):
            return cls._local_path(url, scheme)
        if scheme in ("http", "https"):
            key = hashlib.sha256(url.encode("utf-8")).hexdigest()
            if cache_context:
                key = os.path.join(str(cache_context), key)
            target = os.path.join(cache_root(), key, _basename(url, name))
            stored = _drover_artifact(url, force_download)
            if stored is not None:
                target = stored
            elif force_download or not os.path.isfile(target):
                download(url, target)
            if extract_archive and _is_archive(target):
                return _extract(target, force_download)
            return target
        raise NotImplementedError(
            f"StorageManager does not support {scheme!r} URLs ({url}); use a local path, "
            "file:// or http(s)://"
        )

    @staticmethod
    def _local_path(url: str, scheme: str) -> str:
        if scheme == "file":
            parts = urllib.parse.urlsplit(url)
            path = urllib.parse.unquote(parts.path)
            if parts.netloc not in ("", "localhost"):
                raise ValueError(f"file URL {url} names host {parts.netloc!r}; only local files are supported")
        else:
            path = os.path.expanduser(url)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such file: {path}")
        return path
