"""A task's artifacts: objects pickled, files kept as they are, folders zipped.

An offline `Task` keeps `upload_artifact` in a local directory: each artifact in `<dir>/<name>/`,
where `<dir>` is the task's offline directory (see `drover.task`). `Artifact` reads one back the
way ClearML's does: `.get()` the object (or a local path for files and folders),
`.get_local_copy()` a local path, `.url` a `file://` URL.

A drover step's artifacts (its return values and what it uploaded) are `StoredArtifact`s: the
same methods, fetched when first used, through the step's channel inside a step and over the
HTTP API with the configured token outside. Their kind follows the stored file's name: a
pickled object is `<name>.pkl`, a folder a `.zip` archive, anything else a file.
"""
from __future__ import annotations

import os
import pathlib
import pickle
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from . import names


class Artifact:
    """One stored artifact: `name`, `type` ("pickle", "file" or "folder"), `url`, `size`, `metadata`."""

    def __init__(self, name: str, kind: str, path: str, metadata: Mapping[str, Any] | None) -> None:
        self.name = name
        self.type = kind
        self._path = path
        self.metadata = dict(metadata or {})

    @property
    def url(self) -> str:
        """Where the artifact is, as a `file://` URL (StorageManager.get_local_copy accepts it)."""
        return pathlib.Path(self._path).resolve().as_uri()

    @property
    def size(self) -> int:
        return os.path.getsize(self._path)

    def get_local_copy(self, extract_archive: bool | None = None, raise_on_error: bool = False,
                       force_download: bool = False) -> str:
        """A local path to the artifact's file; a folder artifact is extracted from its zip
        (beside it, once) unless `extract_archive` is False."""
        if self.type == "folder" and extract_archive is not False:
            target = self._path[: -len(".zip")]
            if force_download or not os.path.isdir(target):
                if os.path.isdir(target):
                    shutil.rmtree(target)
                shutil.unpack_archive(self._path, target, "zip")
            return target
        return self._path

    def get(self, force_download: bool = False, deserialization_function: Any = None) -> Any:
        """The object for a pickled artifact; a local path for a file or a folder, as ClearML
        gives for artifacts it cannot load."""
        if self.type != "pickle":
            return self.get_local_copy(force_download=force_download)
        with open(self._path, "rb") as f:
            if deserialization_function is not None:
                return deserialization_function(f.read())
            return pickle.load(f)

    def __repr__(self) -> str:
        return f"<Artifact {self.name!r} ({self.type}) at {self.url}>"


def store(directory: str, name: str, artifact_object: Any, metadata: Mapping[str, Any] | None,
          delete_after_upload: bool, auto_pickle: bool | None) -> Artifact:
    """Stores `artifact_object` as artifact `name` under `directory` and returns it: an existing
    file is copied, an existing folder zipped, anything else pickled. A string naming no file
    is pickled too, unless `auto_pickle` is False (then it is an error)."""
    names.check_output_name(name)
    folder = os.path.join(directory, name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)  # uploading a name again replaces it, as in ClearML
    os.makedirs(folder)
    source = os.fspath(artifact_object) if isinstance(artifact_object, (str, os.PathLike)) else None
    if source is not None and os.path.isfile(source):
        path = os.path.join(folder, os.path.basename(source))
        shutil.copyfile(source, path)
        kind = "file"
    elif source is not None and os.path.isdir(source):
        path = shutil.make_archive(os.path.join(folder, os.path.basename(os.path.abspath(source))), "zip", source)
        kind = "folder"
    elif source is not None and auto_pickle is False:
        raise ValueError(f"upload_artifact({name!r}): no such file or folder: {source} "
                         "(leave auto_pickle unset to store the string itself)")
    else:
        path = os.path.join(folder, f"{name}.pkl")
        with open(path, "wb") as f:
            pickle.dump(artifact_object, f, protocol=pickle.HIGHEST_PROTOCOL)
        kind = "pickle"
    if delete_after_upload and kind == "file" and source is not None:
        os.unlink(source)
    return Artifact(name, kind, path, metadata)


# Fetches a stored artifact (`{"digest", "size", "file_name"}`) into a local path.
Fetch = Callable[[Mapping[str, Any], str], None]


def stored_kind(name: str, file_name: str) -> str:
    """"pickle", "folder" or "file": what a stored artifact holds, from its file's name."""
    if file_name == f"{name}.pkl":
        return "pickle"
    if file_name.lower().endswith(".zip"):
        return "folder"
    return "file"


class StoredArtifact:
    """An artifact stored with a drover step: `name`, `type`, `url`, `size`, `metadata`; the
    file is fetched into `cache_dir/<digest>/` when first needed."""

    def __init__(self, name: str, ref: Mapping[str, Any], url: str, fetch: Fetch, cache_dir: str) -> None:
        self.name = name
        self.ref = dict(ref)
        self.url = url
        self.type = stored_kind(name, str(ref["file_name"]))
        self.metadata: dict[str, Any] = {}
        self._fetch = fetch
        self._path = os.path.join(cache_dir, str(ref["digest"]).replace(":", "_"), str(ref["file_name"]))

    @property
    def size(self) -> int:
        return int(self.ref["size"])

    def get_local_copy(self, extract_archive: bool | None = None, raise_on_error: bool = False,
                       force_download: bool = False) -> str:
        """A local path to the artifact's file; a folder's archive is extracted (beside it,
        once) unless `extract_archive` is False."""
        if force_download or not os.path.isfile(self._path):
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            self._fetch(self.ref, self._path)
        if self.type == "folder" and extract_archive is not False:
            target = self._path[: -len(".zip")]
            if force_download or not os.path.isdir(target):
                if os.path.isdir(target):
                    shutil.rmtree(target)
                shutil.unpack_archive(self._path, target, "zip")
            return target
        return self._path

    def get(self, force_download: bool = False, deserialization_function: Any = None) -> Any:
        """The object for a pickled artifact; a local path for a file or a folder."""
        path = self.get_local_copy(force_download=force_download)
        if self.type != "pickle":
            return path
        with open(path, "rb") as f:
            if deserialization_function is not None:
                return deserialization_function(f.read())
            return pickle.load(f)

    def __repr__(self) -> str:
        return f"<StoredArtifact {self.name!r} ({self.type}) at {self.url}>"
