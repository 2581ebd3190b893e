"""StorageManager.get_local_copy for local paths, file:// URLs and HTTP downloads (cached)."""
import io
import os
import zipfile

import pytest

from drover import StorageManager


def test_local_path_is_returned(tmp_path):
    f = tmp_path / "data.pkl"
    f.write_bytes(b"x")
    assert StorageManager.get_local_copy(str(f)) == str(f)
    with pytest.raises(FileNotFoundError, match="missing"):
        StorageManager.get_local_copy(str(tmp_path / "missing"))


def test_file_url_gives_the_path(tmp_path):
    f = tmp_path / "with space.pkl"
    f.write_bytes(b"x")
    assert StorageManager.get_local_copy(f"file://{str(f).replace(' ', '%20')}") == str(f)


def test_http_download_is_cached(http_server, tmp_path, monkeypatch):
    server, base = http_server
    monkeypatch.setenv("DROVER_CACHE_DIR", str(tmp_path / "cache"))
    server.answer = lambda path: (200, b"iris bytes", {})
    url = f"{base}/files/iris.pkl?dl=1"
    first = StorageManager.get_local_copy(remote_url=url)
    assert first.startswith(str(tmp_path / "cache")) and os.path.basename(first) == "iris.pkl"
    with open(first, "rb") as f:
        assert f.read() == b"iris bytes"
    assert StorageManager.get_local_copy(remote_url=url) == first
    assert len(server.requests) == 1
    server.answer = lambda path: (200, b"new bytes", {})
    assert StorageManager.get_local_copy(remote_url=url, force_download=True) == first
    with open(first, "rb") as f:
        assert f.read() == b"new bytes"
    assert len(server.requests) == 2
    assert [p for p in os.listdir(os.path.dirname(first)) if p.startswith(".partial")] == []


def test_http_error_leaves_nothing_behind(http_server, tmp_path, monkeypatch):
    _, base = http_server
    monkeypatch.setenv("DROVER_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(OSError):
        StorageManager.get_local_copy(f"{base}/missing.pkl")
    leftovers = [f for _, _, files in os.walk(tmp_path / "cache") for f in files]
    assert leftovers == []


def test_downloaded_archives_are_extracted(http_server, tmp_path, monkeypatch):
    server, base = http_server
    monkeypatch.setenv("DROVER_CACHE_DIR", str(tmp_path / "cache"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("inner/a.txt", "hello")
    server.answer = lambda path: (200, buf.getvalue(), {})
    folder = StorageManager.get_local_copy(f"{base}/data.zip")
    with open(os.path.join(folder, "inner", "a.txt")) as f:
        assert f.read() == "hello"
    archive = StorageManager.get_local_copy(f"{base}/data.zip", extract_archive=False)
    assert zipfile.is_zipfile(archive)


def test_other_schemes_are_not_supported():
    with pytest.raises(NotImplementedError, match="'s3'"):
        StorageManager.get_local_copy("s3://bucket/key")
