"""The storage protocol, written once and run on every implementation (fsspec-style)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobsub.folder import CorruptResultError, JobFolder, lookup_id, register_id
from jobsub.storage import LocalStorage, MemoryStorage, Storage, open_storage


@pytest.fixture(params=["local", "memory"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    return LocalStorage(tmp_path) if request.param == "local" else MemoryStorage()


def test_round_trip_and_missing(storage: Storage) -> None:
    storage.write_bytes("a/b/c.bin", b"xyz")
    assert storage.read_bytes("a/b/c.bin") == b"xyz"
    assert storage.exists("a/b/c.bin") and storage.exists("a/b")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("a/b/nope")
    assert not storage.exists("a/nope")


def test_overwrite_is_whole(storage: Storage) -> None:
    storage.write_bytes("k", b"1" * 1000)
    storage.write_bytes("k", b"2")
    assert storage.read_bytes("k") == b"2"


def test_list_and_delete(storage: Storage) -> None:
    for name in ("d/x", "d/y", "d/sub/z"):
        storage.write_bytes(name, b"")
    assert storage.list("d") == ["d/sub", "d/x", "d/y"]
    storage.delete("d")
    assert storage.list("d") == [] and not storage.exists("d/x")


def test_result_framing_detects_damage(storage: Storage) -> None:
    folder = JobFolder(storage, "key1")
    assert folder.read_result(0, 0) is None
    folder.write_result(0, 0, b"payload" * 100)
    assert folder.read_result(0, 0) == b"payload" * 100
    raw = storage.read_bytes(folder.result_key(0, 0))
    storage.write_bytes(folder.result_key(0, 0), raw[:-10])
    with pytest.raises(CorruptResultError):
        folder.read_result(0, 0)
    storage.write_bytes(folder.result_key(0, 0), raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(CorruptResultError):
        folder.read_result(0, 0)


def test_id_index(storage: Storage) -> None:
    register_id(storage, "1234", "key9")
    assert lookup_id(storage, "1234") == "key9"
    assert lookup_id(storage, "1234_17") == "key9"
    assert lookup_id(storage, "999") is None


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_bytes("x/y", b"data")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["y"]


def test_open_storage_registry(tmp_path: Path) -> None:
    assert isinstance(open_storage(tmp_path), LocalStorage)
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    with pytest.raises(ValueError, match="unknown storage scheme 'ftp'"):
        open_storage("ftp://host/x")
    with pytest.raises(ImportError, match="jobsub\\[aws\\]"):
        open_storage("s3://bucket/prefix")
